//! `mkimage boot-test`: the flags as a `boottest::Request`.

use std::path::{Path, PathBuf};

use super::paths::absolute;

/// `mkimage boot-test`.
#[derive(Debug, Clone, clap::Args)]
pub struct BootTestArgs {
    /// Build this playbook first (into --dir), then boot its output.
    pub playbook: Option<PathBuf>,
    /// The directory holding the artifacts (what `mkimage serve` serves).
    #[arg(long, default_value = "builds")]
    pub dir: PathBuf,
    /// Boot config with profiles and `boot_test:` assertions.
    #[arg(long, default_value = mkimage::serve::DEFAULT_BOOT_CONFIG)]
    pub boot_config: PathBuf,
    /// Profile to boot (default: boot_test.profile, else the default profile).
    #[arg(long)]
    pub profile: Option<String>,
    /// The guest NIC's MAC (profiles may select by it).
    #[arg(long, default_value = "52:54:00:12:34:56")]
    pub mac: String,
    /// The guest NIC: virtio or e1000.
    #[arg(long, default_value = "virtio", value_parser = ["virtio", "e1000"])]
    pub nic: String,
    /// Guest memory in MiB (default: boot_test.memory, else 1536).
    #[arg(long)]
    pub memory: Option<u32>,
    /// Seconds to wait for the boot and the checks (default: boot_test.timeout, else 600).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Boot with UEFI firmware (OVMF) instead of the BIOS.
    #[arg(long)]
    pub uefi: bool,
    /// Boot on a real layer-2 network: a bridge, a site DHCP server (dnsmasq,
    /// addresses only) and `mkimage serve --proxy-dhcp`; BIOS through the
    /// NIC's iPXE ROM, UEFI through the firmware's own PXE client.
    #[arg(long)]
    pub proxy_dhcp: bool,
    /// Extra kernel arguments for this boot (e.g. `mkimage.bench=transfer`).
    #[arg(long, default_value = "")]
    pub append: String,
    /// Keep the serial console log here.
    #[arg(long)]
    pub serial_log: Option<PathBuf>,
    /// Boot through nginx run from this cache-tier config
    /// (nginx/mkimage-cache.conf), then boot again and check the basefs came
    /// from nginx's cache.
    #[arg(long)]
    pub via_nginx: Option<PathBuf>,
    /// Boot from a `mkimage publish`ed tree of the build served by nginx
    /// alone: no `mkimage serve` runs.
    #[arg(long, conflicts_with_all = ["proxy_dhcp", "via_nginx"])]
    pub published: bool,
    /// Boot this ISO (mkimage iso) as a CD-ROM instead of netbooting: an
    /// offline one with no network; a network one (--server) from the
    /// test's mkimage serve, its server URL rewritten to it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["playbook", "proxy_dhcp", "via_nginx", "published"])]
    pub iso: Option<PathBuf>,
    /// UEFI with Secure Boot enforced and Microsoft's keys (OVMF's Secure
    /// Boot build): shim → Debian's signed GRUB → the signed kernel; asserts
    /// Secure Boot and the kernel's lockdown in the booted system.
    /// With --proxy-dhcp: through `mkimage serve --uefi-boot shim` on the
    /// lab's network (the proxyDHCP hands the firmware shim, the server's
    /// TFTP the rest).
    /// With --iso: the ISO's shim → signed GRUB → signed kernel.
    #[arg(long, conflicts_with_all = ["via_nginx", "published", "uefi"])]
    pub secure_boot: bool,
    /// With --secure-boot: boot the profile's UKI signed with the site key in
    /// DIR (`mkimage keys init --dir DIR`), its certificate enrolled in db.
    /// With --proxy-dhcp, --http-boot too.
    #[arg(
        long,
        value_name = "DIR",
        requires = "secure_boot",
        conflicts_with = "iso"
    )]
    pub keys: Option<PathBuf>,
    /// With --keys: enroll the site certificate in shim's MokList (as
    /// `mokutil --import` does), not in db, and boot the UKI through shim
    /// (served as grubx64.efi beside it): firmware → shim (Microsoft's CA)
    /// → UKI (the site key, in MOK).
    #[arg(long, requires = "keys")]
    pub mok: bool,
    /// With --keys and --proxy-dhcp: the firmware's PXE off, so it boots by
    /// UEFI HTTP boot; `mkimage keys sign-ukis` signs every profile's UKI
    /// and the proxyDHCP (`serve --uefi-boot shim`) offers the machine its
    /// profile's UKI by content URL.
    #[arg(long, requires_all = ["keys", "proxy_dhcp"], conflicts_with = "mok")]
    pub http_boot: bool,
    /// Overrides for the playbook's builds.
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars_override: Vec<String>,
}

pub fn boot_test(a: BootTestArgs) -> anyhow::Result<()> {
    let nic = mkimage::boottest::Nic::parse(&a.nic)
        .ok_or_else(|| mkimage::UsageError(format!("--nic {}: use virtio or e1000", a.nic)))?;
    let req = mkimage::boottest::Request {
        playbook: a.playbook.as_deref().map(absolute).transpose()?,
        overrides: a.vars_override,
        dir: absolute(&a.dir)?,
        boot_config_is_default: a.boot_config == Path::new(mkimage::serve::DEFAULT_BOOT_CONFIG),
        boot_config: absolute(&a.boot_config)?,
        profile: a.profile,
        mac: a.mac,
        nic,
        memory: a.memory,
        timeout: a.timeout,
        uefi: a.uefi,
        proxy_dhcp: a.proxy_dhcp,
        append: a.append,
        serial_log: a.serial_log.as_deref().map(absolute).transpose()?,
        via_nginx: a.via_nginx.as_deref().map(absolute).transpose()?,
        published: a.published,
        iso: a.iso.as_deref().map(absolute).transpose()?,
        secure_boot: a.secure_boot,
        keys: a.keys.as_deref().map(absolute).transpose()?,
        mok: a.mok,
        http_boot: a.http_boot,
    };
    mkimage::boottest::run(&req)
}
