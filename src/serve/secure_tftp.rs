//! The TFTP side of the Secure Boot path with factory keys (`serve
//! --uefi-boot shim`): the proxyDHCP hands UEFI PXE clients `shimx64.efi`;
//! shim loads `grubx64.efi` beside it (Debian's signed network GRUB); that
//! GRUB reads `grub/grub.cfg` (its prefix is `/grub` on its TFTP server),
//! which sends each machine to its own config, `grub/grub.cfg-MAC` —
//! rendered here per request, like `/boot.ipxe?mac=` — and then loads the
//! kernel and initrd it names by content, `sha256/HEX/NAME`, from the
//! content store.

use std::fs::File;
use std::io::{Seek, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use super::profiles::normalize_mac;
use super::script::{self, Format};
use super::state::State;
use super::tftp::Dynamic;
use crate::artifact::objects;
use crate::secureboot;

/// What every machine reads first: go to the config made for its MAC.
pub const STUB: &str = "# mkimage serve: each machine reads the config made for its MAC\n\
configfile $prefix/grub.cfg-$net_default_mac\n";

/// The files made per request, for `tftp::Sources::dynamic`; `base_url` is
/// what the configs' HTTP URLs (basefs, overlays, reports) start with.
pub fn files(state: Arc<State>, base_url: String) -> Arc<Dynamic> {
    Arc::new(move |name: &str, peer: SocketAddr| match name {
        secureboot::SHIM_NAME => Some(open(secureboot::SHIM)),
        secureboot::GRUB_NAME => Some(open(secureboot::GRUB_NET)),
        "grub/grub.cfg" => Some(bytes(STUB.as_bytes())),
        _ => {
            if let Some(mac) = name.strip_prefix("grub/grub.cfg-") {
                let Some(mac) = normalize_mac(mac) else {
                    return Some(Err(format!("{mac}: not a MAC address")));
                };
                let (cfg, record) =
                    script::answer(&state, Some(&mac), &base_url, peer, Format::Grub, true);
                let file = bytes(cfg.unwrap_or_else(|e| e).as_bytes());
                // TFTP has no "reply sent" moment here: the new boot is
                // written before the transfer starts.
                if let Some(record) = record {
                    record();
                }
                return Some(file);
            }
            let (hex, _name) = name.strip_prefix("sha256/")?.split_once('/')?;
            Some(
                match objects::open(state.root.dir(), &hex.to_ascii_lowercase()) {
                    Ok(Some(f)) => Ok(f),
                    Ok(None) => Err(format!("no object {hex} in the content store")),
                    Err(e) => Err(e.to_string()),
                },
            )
        }
    })
}

fn open(path: &str) -> Result<File, String> {
    File::open(path).map_err(|e| format!("{path}: {e} (is its package installed?)"))
}

/// `content` as a file of its own (unlinked; gone when the transfer ends).
fn bytes(content: &[u8]) -> Result<File, String> {
    let mut f = tempfile::tempfile().map_err(|e| e.to_string())?;
    f.write_all(content).map_err(|e| e.to_string())?;
    f.rewind().map_err(|e| e.to_string())?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stub_sends_each_machine_to_its_own_config() {
        assert!(super::STUB.contains("configfile $prefix/grub.cfg-$net_default_mac"));
    }
}
