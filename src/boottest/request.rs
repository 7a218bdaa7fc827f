//! What `mkimage boot-test` is asked for.

use std::path::PathBuf;

use super::vm::Nic;

/// `mkimage boot-test`, resolved by the CLI (paths absolute).
#[derive(Debug, Clone)]
pub struct Request {
    /// Build this playbook first (into `dir`), then boot its output.
    pub playbook: Option<PathBuf>,
    pub overrides: Vec<String>,
    /// The directory holding the artifacts (what `mkimage serve` serves).
    pub dir: PathBuf,
    /// Boot config with profiles and `boot_test:` assertions.
    pub boot_config: PathBuf,
    /// True when `boot_config` is the default path (it may be missing).
    pub boot_config_is_default: bool,
    pub profile: Option<String>,
    pub mac: String,
    pub nic: Nic,
    pub memory: Option<u32>,
    pub timeout: Option<u64>,
    pub uefi: bool,
    /// Boot on a layer-2 network through `mkimage serve --proxy-dhcp` (see `lab`).
    pub proxy_dhcp: bool,
    /// Extra kernel arguments for this boot.
    pub append: String,
    pub serial_log: Option<PathBuf>,
    /// Boot through nginx run from this cache-tier config, then boot again
    /// and check the basefs came from nginx's cache (see `front`).
    pub via_nginx: Option<PathBuf>,
    /// Boot from a `mkimage publish`ed tree served by nginx alone, with no
    /// `mkimage serve` running (see `published`).
    pub published: bool,
    /// Boot this ISO as a CD-ROM: offline with no network, a network one
    /// from the test's server (see `iso`).
    pub iso: Option<PathBuf>,
    /// UEFI with Secure Boot enforced (see `secure`).
    pub secure_boot: bool,
    /// With `secure_boot`: sign a UKI with the site key in this dir and
    /// enroll its certificate in the firmware's `db`.
    pub keys: Option<PathBuf>,
    /// With `keys`: enroll the certificate in shim's MokList instead of
    /// `db`, and boot the UKI through shim.
    pub mok: bool,
    /// With `keys` and `proxy_dhcp`: the firmware's PXE off, so it boots by
    /// UEFI HTTP boot, and the proxyDHCP offers it the profile's UKI
    /// (`mkimage keys sign-ukis`, `serve --uefi-boot shim`).
    pub http_boot: bool,
}

impl Request {
    /// The site key and where the test firmware trusts it.
    pub(super) fn site_key(&self) -> super::secure::SiteKey<'_> {
        let trust = if self.mok {
            crate::secureboot::firmware::Trust::Mok
        } else {
            crate::secureboot::firmware::Trust::Db
        };
        self.keys.as_deref().map(|dir| (dir, trust))
    }
}
