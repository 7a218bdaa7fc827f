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

pub mod credentials;
pub mod ipmi;
pub mod redfish;
pub mod registry;
pub mod reprovision;
pub mod targets;
pub mod view;

use std::time::Duration;

use crate::inventory::{Node, Protocol};
pub use credentials::{Credentials, Secret};

/// What `mkimage power` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    On,
    Off,
    Cycle,
    Status,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "on" => Some(Action::On),
            "off" => Some(Action::Off),
            "cycle" => Some(Action::Cycle),
            "status" => Some(Action::Status),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::On => "on",
            Action::Off => "off",
            Action::Cycle => "cycle",
            Action::Status => "status",
        }
    }
}

/// A machine's power, as its BMC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
}

impl PowerState {
    pub fn name(self) -> &'static str {
        match self {
            PowerState::On => "on",
            PowerState::Off => "off",
        }
    }
}

/// Why a BMC did not do what it was asked. Never carries a password.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BmcError {
    #[error("BMC {bmc} unreachable: {why}")]
    Unreachable { bmc: String, why: String },
    #[error("BMC {bmc} refused the credentials `{credentials}` (user {user}): {why}")]
    Auth {
        bmc: String,
        credentials: String,
        user: String,
        why: String,
    },
    #[error("BMC {bmc}: no answer within {}s", .after.as_secs())]
    Timeout { bmc: String, after: Duration },
    #[error("BMC {bmc} refused `{what}`: {why}")]
    Refused {
        bmc: String,
        what: String,
        why: String,
    },
    #[error("BMC {bmc} does not answer as {protocol} does: {why}")]
    Protocol {
        bmc: String,
        protocol: &'static str,
        why: String,
    },
}

/// One node's BMC.
pub trait Bmc: Send + Sync {
    /// `ipmi 10.0.0.7:623`, `redfish https://10.0.0.8` (for messages).
    fn describe(&self) -> String;
    fn status(&self) -> Result<PowerState, BmcError>;
    /// Power on, off, or cycle (a reset of a running machine).
    fn power(&self, action: Action) -> Result<(), BmcError>;
    /// Boot from the network next time, once (with the EFI flag where the
    /// inventory says the node boots UEFI).
    fn boot_from_network_once(&self) -> Result<(), BmcError>;
}

/// How long one BMC request may take, unless told otherwise.
pub const BMC_TIMEOUT: Duration = Duration::from_secs(10);

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
