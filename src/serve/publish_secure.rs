//! The Secure Boot part of `mkimage publish` (`--secure-boot`, `--keys
//! DIR`): the files `mkimage serve` answers on that path, written into the
//! static tree. All of it is plain files; HTTP (nginx) serves the UKIs and
//! whatever the init fetches, and any TFTP server rooted at the tree serves
//! what shim and GRUB fetch (GRUB's network image has no HTTP).
//!
//! With `--secure-boot` (the factory-keys path):
//! - `shimx64.efi` (shim-signed) and `grubx64.efi` (Debian's signed network
//!   GRUB) at the root, where shim looks for its second stage;
//! - `grub/grub.cfg`: the machine's own config, else the default one;
//! - `grub/grub.cfg-MAC` (MAC as GRUB spells `$net_default_mac`,
//!   `aa:bb:cc:dd:ee:ff`) for every MAC the boot config names, and
//!   `grub/grub.cfg-default`: the same configs `serve` renders, without the
//!   node registry's words (`mkimage.api=`, `mkimage.token=`).
//!
//! With `--keys DIR`, for every profile, its UKI signed with the site key
//! (no machine in it), built into the build dir's content store and placed
//! in the tree by content (`sha256/HEX/PROFILE.efi`), then linked by name:
//! - `uki/PROFILE.efi`: for UEFI HTTP boot (a stable URL for DHCP);
//! - `uki/PROFILE/shimx64.efi` and `uki/PROFILE/grubx64.efi` (the UKI): for
//!   machines that trust the site key in MOK only: the firmware loads shim
//!   (Microsoft's CA), shim loads `grubx64.efi` from beside itself and
//!   verifies it against MokList.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Context;

use super::cmdline::{Cmdline, Source};
use super::grub;
use super::profiles::{BootConfig, Resolved};
use crate::artifact::{write_atomic, Manifest};
use crate::secureboot::keys::Keys;
use crate::secureboot::{self, uki, GRUB_NAME, GRUB_NET, SHIM, SHIM_NAME};

/// What every machine's GRUB reads first in a static tree: its own config,
/// else (no such file: GRUB goes on to the next line) the default.
pub const STUB: &str =
    "# Written by `mkimage publish`: this machine's own config, else the default.\n\
configfile $prefix/grub.cfg-$net_default_mac\n\
configfile $prefix/grub.cfg-default\n";

/// Where the tree is and what its configs name.
pub struct Tree<'a> {
    /// The build dir (its content store gets the UKIs).
    pub dir: &'a Path,
    pub out: &'a Path,
    pub base: &'a str,
    pub servers: &'a [String],
    pub console: &'a str,
}

/// One profile's signed UKI, in the build dir's content store.
#[derive(Debug, Clone)]
pub struct Uki {
    pub profile: String,
    pub sha256: String,
    /// `PROFILE.efi`.
    pub name: String,
}

/// Check the packages the factory path copies from are installed.
pub fn preflight(secure_boot: bool, keys: Option<&Path>) -> anyhow::Result<Option<Keys>> {
    if secure_boot {
        secureboot::factory_chain()?;
    }
    match keys {
        Some(dir) => {
            let keys = Keys::load(dir)?;
            secureboot::need(&[
                (uki::STUB, "systemd-boot-efi"),
                ("/usr/bin/sbsign", "sbsigntool"),
                (SHIM, "shim-signed"),
            ])?;
            Ok(Some(keys))
        }
        None => Ok(None),
    }
}

/// What a UKI's command line names, and where it is built.
pub struct Signing<'a> {
    /// The build dir (its content store gets the UKIs).
    pub dir: &'a Path,
    /// The URL machines fetch from (the first of `servers` when there are any).
    pub base: &'a str,
    pub servers: &'a [String],
    pub console: &'a str,
    /// The init reports to `base` (`mkimage.api=`): for `mkimage serve`,
    /// never for a static tree, which has no node registry.
    pub reports: bool,
}

impl Tree<'_> {
    /// A static tree's signing: no registry to report to.
    pub fn signing(&self) -> Signing<'_> {
        Signing {
            dir: self.dir,
            base: self.base,
            servers: self.servers,
            console: self.console,
            reports: false,
        }
    }
}

/// Build each profile's UKI (once per profile name) into the content store.
pub fn build_ukis(s: &Signing, keys: &Keys, profiles: &[&Resolved]) -> anyhow::Result<Vec<Uki>> {
    let first = s.servers.first().map_or(s.base, String::as_str);
    let mut seen = BTreeSet::new();
    let mut ukis = Vec::new();
    for resolved in profiles {
        if !seen.insert(resolved.profile.clone()) {
            continue;
        }
        // One UKI per profile: never a machine's token or BOOTIF=.
        let cmdline = Cmdline {
            resolved,
            source: Source::Server(first.to_string()),
            servers: s.servers,
            bootif: None,
            reports: s.reports,
            token: None,
            // For `mkimage serve` (which reports and has boot tokens), the
            // node overlay its boot script names, if its signature by the
            // node-signing key verifies; a static tree has none.
            node_overlay: if s.reports {
                super::cmdline::NodeOverlay::Signed
            } else {
                super::cmdline::NodeOverlay::Absent
            },
            console: s.console,
        }
        .render();
        let (sha256, name) = uki::for_profile(s.dir, &uki_profile(resolved), &cmdline, keys)
            .with_context(|| format!("the UKI of profile {}", resolved.profile))?;
        ukis.push(Uki {
            profile: resolved.profile.clone(),
            sha256,
            name,
        });
    }
    Ok(ukis)
}

/// Every profile of the boot config, resolved (the default alone without one).
pub fn every_profile(
    config: Option<&BootConfig>,
    default: &Resolved,
    manifest: &Manifest,
) -> anyhow::Result<Vec<Resolved>> {
    let Some(config) = config else {
        return Ok(vec![default.clone()]);
    };
    config
        .profiles
        .iter()
        .map(|p| {
            super::profiles::resolve(p, manifest).with_context(|| format!("profile {}", p.name))
        })
        .collect()
}

/// Link each UKI (already at `sha256/HEX/NAME` in the tree) by its profile's
/// name, and remove the names of profiles gone from the boot config.
pub fn link_ukis(out: &Path, ukis: &[Uki]) -> anyhow::Result<()> {
    let dir = out.join("uki");
    for u in ukis {
        let placed = out.join("sha256").join(&u.sha256).join(&u.name);
        link(&placed, &dir, &u.name)?;
        let own = dir.join(&u.profile);
        copy(Path::new(SHIM), &own, SHIM_NAME)?;
        link(&placed, &own, GRUB_NAME)?;
    }
    let keep: BTreeSet<&str> = ukis
        .iter()
        .flat_map(|u| [u.name.as_str(), u.profile.as_str()])
        .collect();
    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || keep.contains(name.as_str()) {
            continue;
        }
        let path = entry.path();
        let gone = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        gone.with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(())
}

/// `dir/name` becomes `from`'s bytes (a file in the tree): a hard link
/// where it can be, else a copy; replaced by rename, so a reader sees the
/// old file or the new.
fn link(from: &Path, dir: &Path, name: &str) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let staged = dir.join(format!(".{name}.link"));
    let _ = fs::remove_file(&staged);
    if fs::hard_link(from, &staged).is_ok() {
        let dest = dir.join(name);
        return fs::rename(&staged, &dest)
            .with_context(|| format!("cannot rename into {}", dest.display()));
    }
    copy(from, dir, name)
}

/// `dir/name` becomes a copy of `from` (a package's file: never linked).
fn copy(from: &Path, dir: &Path, name: &str) -> anyhow::Result<()> {
    let mut source =
        fs::File::open(from).with_context(|| format!("cannot read {}", from.display()))?;
    write_atomic(dir, name, |f| std::io::copy(&mut source, f).map(drop))?;
    Ok(())
}

/// shim, GRUB, the stub, and the GRUB config of every machine and the default.
pub fn write_grub(
    t: &Tree,
    default: &Resolved,
    machines: &[(String, Resolved)],
) -> anyhow::Result<usize> {
    copy(Path::new(SHIM), t.out, SHIM_NAME)?;
    copy(Path::new(GRUB_NET), t.out, GRUB_NAME)?;
    let dir = t.out.join("grub");
    let render = |r: &Resolved, mac: Option<&str>| {
        grub::render_static(r, t.base, t.servers, mac, t.console)
            .with_context(|| format!("publish: the GRUB config of profile {}", r.profile))
    };
    let mut keep = BTreeSet::from(["grub.cfg".to_string(), "grub.cfg-default".to_string()]);
    for (mac, resolved) in machines {
        let name = format!("grub.cfg-{mac}");
        let cfg = render(resolved, Some(mac))?;
        write_atomic(&dir, &name, |f| f.write_all(cfg.as_bytes()))?;
        keep.insert(name);
    }
    let cfg = render(default, None)?;
    write_atomic(&dir, "grub.cfg-default", |f| f.write_all(cfg.as_bytes()))?;
    write_atomic(&dir, "grub.cfg", |f| f.write_all(STUB.as_bytes()))?;
    // Configs of MACs the boot config no longer names: the default's now.
    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("grub.cfg-") && !keep.contains(&name) {
            fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    Ok(machines.len())
}

/// The UKI build's view of a resolved profile.
pub fn uki_profile(resolved: &Resolved) -> uki::Profile<'_> {
    uki::Profile {
        name: &resolved.profile,
        kernel: &resolved.kernel.file,
        initrd: &resolved.initrd.file,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stub_falls_back_to_the_default() {
        let lines: Vec<&str> = super::STUB.lines().collect();
        assert_eq!(lines[1], "configfile $prefix/grub.cfg-$net_default_mac");
        assert_eq!(lines[2], "configfile $prefix/grub.cfg-default");
    }
}
