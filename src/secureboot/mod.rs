//! UEFI Secure Boot: the pieces mkimage adds so a machine with Secure Boot
//! enforced netboots its images. With the factory (Microsoft) keys the
//! chain is Debian's — shim-signed's shim, grub-efi-amd64-signed's network
//! GRUB (its config rendered per machine by `serve::grub`), the Debian-signed
//! kernel — and mkimage adds nothing that needs signing. With a site key
//! (`keys`: `mkimage keys init`) mkimage builds one unified kernel image per
//! profile (`uki`: kernel + initrd + the command line that carries the
//! basefs's verity root hash and each overlay's sha256) and signs it, so the
//! firmware verifies every byte the init later checks against. `firmware`
//! is OVMF's Secure Boot build for boot-test, with the site's certificate
//! enrolled in its `db` when asked.

pub mod firmware;
pub mod keys;
pub mod sign;
pub mod uki;

use std::path::Path;

use crate::UsageError;

/// shim-signed's shim, signed by Microsoft's UEFI CA.
pub const SHIM: &str = "/usr/lib/shim/shimx64.efi.signed";
/// grub-efi-amd64-signed's network image (signed by Debian; shim trusts it).
pub const GRUB_NET: &str = "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed";
/// The name shim loads its second stage by (from beside itself).
pub const GRUB_NAME: &str = "grubx64.efi";
/// The name the factory path's NBP is served by.
pub const SHIM_NAME: &str = "shimx64.efi";

/// Fail with the package to install when a file mkimage needs is missing.
pub fn need(files: &[(&str, &str)]) -> Result<(), UsageError> {
    for (file, package) in files {
        if !Path::new(file).is_file() {
            return Err(UsageError(format!(
                "{file} is missing: apt-get install -y {package}"
            )));
        }
    }
    Ok(())
}

/// What the factory-keys path serves over TFTP: shim and the GRUB beside it.
pub fn factory_chain() -> Result<(), UsageError> {
    need(&[(SHIM, "shim-signed"), (GRUB_NET, "grub-efi-amd64-signed")])
}
