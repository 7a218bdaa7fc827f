//! `mkimage iso`: a hybrid ISO 9660 image for machines that boot from
//! virtual media (a BMC) or a USB stick instead of PXE. It holds the kernel,
//! the initrd and a GRUB menu with the profile's kernel command line
//! (resolved exactly as `mkimage serve` resolves it for an iPXE script);
//! with `--offline` also the basefs and overlays, which the init finds by
//! the volume label and verifies before mounting. It boots under BIOS (El
//! Torito, and from a disk through GRUB's hybrid MBR) and UEFI with Secure
//! Boot on or off (an EFI system image holding Debian's signed shim and
//! GRUB, also appended as a GPT/MBR partition: `grub`), built with Debian's
//! xorriso, GRUB and mtools, and is reproducible: the same inputs give the
//! same bytes.

pub mod cmdline;
mod error;
pub mod grub;
mod node;
pub mod remaster;
mod request;

use std::fs;
use std::path::Path;

use anyhow::Context;

use crate::artifact::Manifest;
use crate::exec::Cmd;
use crate::serve::profiles::{Art, BootConfig, Resolved};
use crate::UsageError;
pub use cmdline::Source;
pub use error::IsoError;
use grub::set_mtime;
use request::resolve;
pub use request::Request;

/// Build the ISO and write it to `req.output` (atomically).
pub fn run(req: &Request) -> anyhow::Result<()> {
    check_tools()?;
    if !req.dir.join(crate::artifact::MANIFEST).is_file() {
        let d = req.dir.display();
        return Err(UsageError(format!("{d} has no manifest.json: build first (mkimage play playbooks/all.yml --out {d}) or give --dir")).into());
    }
    let manifest = Manifest::load(&req.dir)?;
    let disc = Disc::plan(req, &manifest)?;
    let epoch = crate::artifact::source_date_epoch(newest_build(&manifest, &disc.resolved));
    let parent = req
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let work = tempfile::Builder::new()
        .prefix(".mkimage-iso.")
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a work dir in {}", parent.display()))?;
    let root = work.path().join("root");
    disc.fill(req, &root)?;
    grub::images(&root, work.path(), &disc.label, epoch)?;
    write_iso(&root, &disc.label, epoch, &req.output, work.path())?;
    let size = fs::metadata(&req.output).map(|m| m.len()).unwrap_or(0);
    println!(
        "{}: profile {}, volume {}, {} MB{}",
        req.output.display(),
        disc.resolved.profile,
        disc.label,
        size / 1_000_000,
        if req.source == Source::Media {
            ", offline"
        } else {
            ""
        }
    );
    Ok(())
}

/// What goes on the disc: the resolved profile (with a node's identity),
/// the kernel command line and the volume label it names.
struct Disc {
    resolved: Resolved,
    /// A `--node`'s overlay, made here (not in the build dir).
    node_overlay: Option<node::OnMedium>,
    line: String,
    label: String,
}

impl Disc {
    fn plan(req: &Request, manifest: &Manifest) -> anyhow::Result<Disc> {
        let config = req
            .boot_config
            .as_deref()
            .map(BootConfig::load)
            .transpose()?;
        let (resolved, node_overlay) = match &req.node {
            Some(name) => node::personalize(req, config.as_ref(), manifest, name)?,
            None => (
                resolve(config.as_ref(), req.profile.as_deref(), manifest)?,
                None,
            ),
        };
        let console = config
            .as_ref()
            .and_then(|c| c.console.clone())
            .unwrap_or_else(|| crate::serve::ipxe::DEFAULT_CONSOLE.to_string());
        let mut line = cmdline::render(&resolved, &req.source, &console);
        let label = cmdline::label(&line);
        if req.source == Source::Media {
            if let Some(remote) = resolved.overlays.iter().find(|a| a.remote.is_some()) {
                return Err(UsageError(format!(
                    "profile `{}`: overlay {} is on another server and cannot go on an offline medium; drop it from the profile or build without --offline",
                    resolved.profile,
                    remote.remote.as_deref().unwrap_or("?")
                ))
                .into());
            }
            line = format!("mkimage.media={label} {line}");
        }
        Ok(Disc {
            resolved,
            node_overlay,
            line,
            label,
        })
    }

    /// The disc's tree under `root`: kernel, initrd, GRUB's menu, the
    /// command line and, offline, the images, each checked by its sha256.
    fn fill(&self, req: &Request, root: &Path) -> anyhow::Result<()> {
        let resolved = &self.resolved;
        for d in ["boot/grub", cmdline::MEDIA_DIR] {
            fs::create_dir_all(root.join(d)).map_err(|e| IsoError::io(&root.join(d), e))?;
        }
        copy_verified(&req.dir, &resolved.kernel, &root.join(grub::KERNEL))?;
        copy_verified(&req.dir, &resolved.initrd, &root.join(grub::INITRD))?;
        if req.source == Source::Media {
            let made = self.node_overlay.as_ref().map(|(a, _)| a);
            let from_dir = resolved.overlays.iter().filter(|a| Some(*a) != made);
            for art in std::iter::once(&resolved.basefs).chain(from_dir) {
                copy_verified(
                    &req.dir,
                    art,
                    &root.join(cmdline::MEDIA_DIR).join(&art.file),
                )?;
            }
        }
        if let Some((art, bytes)) = &self.node_overlay {
            let path = root.join(cmdline::MEDIA_DIR).join(&art.file);
            fs::write(&path, bytes).map_err(|e| IsoError::io(&path, e))?;
        }
        let words = cmdline::grub_words(&self.line)
            .map_err(|e| UsageError(format!("profile `{}`: {e}", resolved.profile)))?;
        write(
            &root.join(grub::CONFIG),
            grub::config(&resolved.profile, &self.label, &words),
        )?;
        write(
            &root.join(cmdline::MEDIA_DIR).join("cmdline"),
            format!("{}\n", self.line),
        )?;
        Ok(())
    }
}

/// The newest build time among the artifacts the ISO holds: its dates.
fn newest_build(manifest: &Manifest, r: &Resolved) -> u64 {
    let arts = [&r.kernel, &r.initrd, &r.basefs]
        .into_iter()
        .chain(&r.overlays);
    arts.filter_map(|a| manifest.artifacts.get(&a.file))
        .map(|e| e.build_time)
        .max()
        .unwrap_or(0)
}

/// Fail early, naming the package, when a tool is missing.
pub fn check_tools() -> anyhow::Result<()> {
    for (tool, package) in grub::TOOLS {
        let there = if tool.starts_with('/') {
            Path::new(tool).exists()
        } else {
            crate::exec::have(tool)
        };
        if !there {
            return Err(UsageError(format!(
                "mkimage iso needs {tool}: apt-get install -y {package}"
            ))
            .into());
        }
    }
    Ok(())
}

/// Copy an artifact into the ISO tree, checking it is the one the manifest names.
fn copy_verified(dir: &Path, art: &Art, dest: &Path) -> anyhow::Result<()> {
    let src = dir.join(&art.file);
    fs::copy(&src, dest).map_err(|e| IsoError::io(&src, e))?;
    let (_, sha) = crate::artifact::sha256_file(dest)?;
    if sha != art.sha256 {
        anyhow::bail!("{}: sha256 is {sha}, but manifest.json says {}; it changed after the build — rebuild it", src.display(), art.sha256);
    }
    Ok(())
}

fn write(path: &Path, text: String) -> Result<(), IsoError> {
    fs::write(path, text).map_err(|e| IsoError::io(path, e))
}

/// Every file and dir under `root` dated `epoch`.
fn date_tree(root: &Path, epoch: u64) -> Result<(), IsoError> {
    for entry in fs::read_dir(root).map_err(|e| IsoError::io(root, e))? {
        let path = entry.map_err(|e| IsoError::io(root, e))?.path();
        if path.is_dir() {
            date_tree(&path, epoch)?;
        }
        set_mtime(&path, epoch)?;
    }
    set_mtime(root, epoch)
}

/// The hybrid image from the tree `root` (which holds the GRUB images):
/// El Torito BIOS + EFI boot, GRUB's hybrid MBR for disks, the EFI image
/// as an appended partition; all dates `epoch`. Written in `work`, then
/// renamed to `output`.
pub fn write_iso(
    root: &Path,
    label: &str,
    epoch: u64,
    output: &Path,
    work: &Path,
) -> anyhow::Result<()> {
    date_tree(root, epoch)?;
    let staged = work.join("out.iso");
    let date = crate::artifact::utc(epoch).replace(['-', ' ', ':'], "") + "00";
    Cmd::new("xorriso")
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args([
            "-as",
            "mkisofs",
            "-quiet",
            "-r",
            "-V",
            label,
            &format!("--modification-date={date}"),
        ])
        .args([
            "-b",
            grub::BIOS_IMAGE,
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "--grub2-boot-info",
        ])
        .args(["--grub2-mbr", grub::HYBRID_MBR])
        .args([
            "--efi-boot",
            grub::EFI_IMAGE,
            "-efi-boot-part",
            "--efi-boot-image",
            "--protective-msdos-label",
        ])
        .arg("-o")
        .arg(&staged)
        .arg(root)
        .run()?;
    fs::rename(&staged, output)
        .with_context(|| format!("cannot rename {} to {}", staged.display(), output.display()))?;
    Ok(())
}
