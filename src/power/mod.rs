//! Power and boot device through each node's baseboard management
//! controller, and the two commands built on them: `mkimage power` and
//! `mkimage reprovision` (Warewulf's `wwctl power`, Tinkerbell's rufio,
//! Ironic's power and management interfaces, for a netboot lab).
//!
//! A node's BMC (`inventory::Bmc`) speaks IPMI (`ipmi`: `ipmitool -I
//! lanplus` through the one command runner, the password in its
//! environment) or Redfish (`redfish`: HTTP(S) and JSON). Both give the same
//! small [`Bmc`] interface and the same [`BmcError`]s, which say what went
//! wrong (unreachable, credentials refused, no answer in time, a refused
//! command, an answer that is not the protocol) without ever carrying a
//! password. `targets` turns `NODE…` words into nodes, `registry` is where
//! next-boot profiles, power states and boot stages are kept (the served
//! dir, or the server's admin API), `reprovision` runs the steps per node,
//! `view` shows them.

pub mod bmc;
pub mod credentials;
pub mod ipmi;
pub mod redfish;
pub mod registry;
pub mod reprovision;
pub mod targets;
pub mod view;

use std::time::Duration;

use crate::inventory::{Node, Protocol};
pub use bmc::{Action, Bmc, BmcError, PowerState, BMC_TIMEOUT};
pub use credentials::{Credentials, Secret};

/// The BMC of `node` (named `name`), with its credentials; an error (for
/// this node alone) when it has no `bmc:` or its credentials are missing.
pub fn connect(
    name: &str,
    node: &Node,
    credentials: Option<&Credentials>,
    timeout: Duration,
) -> Result<Box<dyn Bmc>, String> {
    let bmc = node
        .bmc
        .as_ref()
        .ok_or_else(|| format!("node `{name}` has no `bmc:` in the inventory"))?;
    let credentials = credentials.ok_or_else(|| {
        "the boot config has no `credentials_file:` for the BMC passwords".to_string()
    })?;
    let credential = credentials.get(&bmc.credentials)?.clone();
    Ok(match bmc.protocol {
        Protocol::Ipmi => Box::new(ipmi::Ipmi::new(bmc, &bmc.credentials, credential, timeout)),
        Protocol::Redfish => Box::new(redfish::Redfish::new(
            bmc,
            &bmc.credentials,
            credential,
            timeout,
        )?),
    })
}
