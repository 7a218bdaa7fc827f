//! `mkimage publish OUT`: the flags as a `serve::publish::Request`, and what
//! it wrote, said.

use std::path::PathBuf;
use std::time::Duration;

use super::paths::{absolute, boot_config_or_default};

/// `mkimage publish OUT` (turned into `mkimage::serve::publish::Request`).
#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    /// Where the static tree goes (created; republishing over it is safe).
    pub out: PathBuf,
    /// The build output dir whose artifacts are published.
    #[arg(long, default_value = "builds")]
    pub dir: PathBuf,
    /// Boot profiles (default: vars/boot.yml if it exists).
    #[arg(long)]
    pub boot_config: Option<PathBuf>,
    /// The URL the tree will be served at, written into the boot scripts.
    #[arg(long)]
    pub public_url: String,
    /// iPXE script template (default: the built-in ipxe/boot.ipxe.j2).
    #[arg(long)]
    pub ipxe_template: Option<PathBuf>,
    /// Seconds an artifact that no script of the tree names any more stays
    /// in it (removed by the first publish after that).
    #[arg(long, default_value_t = mkimage::serve::GRACE.as_secs())]
    pub grace: u64,
    /// Also write the Secure Boot path with factory keys: shimx64.efi,
    /// Debian's signed GRUB as grubx64.efi, grub/grub.cfg and a GRUB config
    /// per machine (grub/grub.cfg-MAC), for a TFTP server rooted at OUT.
    #[arg(long)]
    pub secure_boot: bool,
    /// Sign each profile's UKI with the site key in DIR (`mkimage keys
    /// init`): sha256/HEX/PROFILE.efi, linked as uki/PROFILE.efi (HTTP boot)
    /// and uki/PROFILE/grubx64.efi beside shim (site key in MOK).
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,
}

/// `mkimage publish`: the flags as a publish request, paths absolute.
pub fn publish(a: &PublishArgs) -> anyhow::Result<()> {
    let req = mkimage::serve::publish::Request {
        dir: absolute(&a.dir)?,
        out: absolute(&a.out)?,
        boot_config: boot_config_or_default(a.boot_config.as_deref())?,
        public_url: a.public_url.clone(),
        ipxe_template: a.ipxe_template.as_deref().map(absolute).transpose()?,
        grace: Duration::from_secs(a.grace),
        secure_boot: a.secure_boot,
        keys: a.keys.as_deref().map(absolute).transpose()?,
    };
    let done = mkimage::serve::publish::run(&req)?;
    println!(
        "published {} artifacts, {} machine scripts and the default to {}",
        done.artifacts,
        done.machines,
        req.out.display()
    );
    if req.secure_boot {
        println!("Secure Boot (factory keys): shimx64.efi, grubx64.efi and {} GRUB configs plus the default under grub/ (serve them over TFTP from the tree)", done.machines);
    }
    for u in &done.ukis {
        println!(
            "UKI of profile {}: sha256/{}/{} (uki/{}, uki/{}/shimx64.efi)",
            u.profile, u.sha256, u.name, u.name, u.profile
        );
    }
    if done.scripts_removed + done.superseded + done.dropped > 0 {
        println!(
            "removed {} scripts of machines the boot config no longer names; {} artifacts no script names kept for --grace {}s, {} older ones removed",
            done.scripts_removed, done.superseded, a.grace, done.dropped
        );
    }
    Ok(())
}
