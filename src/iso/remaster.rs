//! For `mkimage boot-test --iso` only: a copy of an ISO that also carries
//! the checker overlay (and the test's kernel arguments). The given ISO's
//! files — kernel, initrd, GRUB images and signed loaders, basefs,
//! overlays — go into the copy unchanged, under the same volume label; only
//! the menu and `/mkimage/cmdline` change, so a production ISO never holds
//! a test hook.
//!
//! - An offline ISO gets the overlay on the medium (`with_overlay`).
//! - A network ISO (`mkimage iso --server URL`) gets the overlay's URL on
//!   the test's server, and its server URL replaced by the test's
//!   (`against_server`): the ISO names a server the test cannot be.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::error::IsoError;
use super::{cmdline, grub};
use crate::exec::Cmd;
use crate::UsageError;

/// The checker's file on the test copy.
const CHECKER: &str = "boot-test-checker.cpio.gz";

/// Where an ISO's volume id is: the primary volume descriptor (sector 16),
/// bytes 40..72.
const VOLUME_ID: std::ops::Range<u64> = 16 * 2048 + 40..16 * 2048 + 72;

/// The kernel command line an ISO made by `mkimage iso` boots with.
pub fn cmdline_of(iso: &Path) -> anyhow::Result<String> {
    let work = tempfile::Builder::new()
        .prefix("mkimage-iso-cmdline.")
        .tempdir()?;
    let dest = work.path().join("cmdline");
    let from = format!("/{}/cmdline", cmdline::MEDIA_DIR);
    let got = Cmd::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", &from])
        .arg(&dest)
        .run();
    match (got, fs::read_to_string(&dest)) {
        (Ok(_), Ok(line)) => Ok(line.trim().to_string()),
        _ => Err(not_ours(iso).into()),
    }
}

/// The server a network ISO's init reports to (`mkimage.api=`); None offline.
pub fn server_of(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("mkimage.api="))
        .map(str::to_string)
}

fn not_ours(iso: &Path) -> UsageError {
    UsageError(format!(
        "{}: not an ISO made by mkimage iso (it has no /{}/cmdline)",
        iso.display(),
        cmdline::MEDIA_DIR
    ))
}

/// Write `output`: the offline `iso` plus the overlay `overlay` (applied
/// last, from the medium) and `args`.
pub fn with_overlay(iso: &Path, overlay: &[u8], args: &str, output: &Path) -> anyhow::Result<()> {
    let copy = Copy::open(iso, output)?;
    if cmdline::media_label(&copy.line).is_none() {
        return Err(UsageError(format!("{}: a network-mode ISO (no mkimage.media= on its command line): boot it with the test's server (boot-test --iso FILE, not with_overlay)", iso.display())).into());
    }
    let sha256 = crate::artifact::sha256_bytes(overlay);
    let path = format!("/{}/{CHECKER}", cmdline::MEDIA_DIR);
    let line = cmdline::add_overlay(&copy.line, &path, &sha256);
    let dest = copy.root.join(cmdline::MEDIA_DIR).join(CHECKER);
    fs::write(&dest, overlay).map_err(|e| IsoError::io(&dest, e))?;
    copy.finish(&format!("{line} {args}"), output)
}

/// Write `output`: the network `iso` booting from the test's server
/// `server` (every URL of the ISO's own server rewritten to it), plus the
/// overlay at `overlay_url` (applied last) and `args`.
pub fn against_server(
    iso: &Path,
    server: &str,
    (overlay_url, sha256): (&str, &str),
    args: &str,
    output: &Path,
) -> anyhow::Result<()> {
    let copy = Copy::open(iso, output)?;
    let Some(own) = server_of(&copy.line) else {
        return Err(UsageError(format!(
            "{}: an offline ISO (no mkimage.api= on its command line)",
            iso.display()
        ))
        .into());
    };
    let line = copy.line.replace(&own, server.trim_end_matches('/'));
    let line = cmdline::add_overlay(&line, overlay_url, sha256);
    copy.finish(&format!("{line} {args}"), output)
}

/// An ISO's files, extracted into a work dir beside the output.
struct Copy {
    work: tempfile::TempDir,
    root: PathBuf,
    line: String,
    label: String,
}

impl Copy {
    fn open(iso: &Path, output: &Path) -> anyhow::Result<Copy> {
        super::check_tools()?;
        let label = volume_id(iso)?;
        let parent = output.parent().unwrap_or(Path::new("."));
        let work = tempfile::Builder::new()
            .prefix(".mkimage-iso.")
            .tempdir_in(parent)
            .with_context(|| format!("cannot create a work dir in {}", parent.display()))?;
        let root = work.path().join("root");
        Cmd::new("xorriso")
            .args(["-osirrox", "on", "-indev"])
            .arg(iso)
            .args(["-extract", "/"])
            .arg(&root)
            .run()?;
        let line_file = root.join(cmdline::MEDIA_DIR).join("cmdline");
        let line = fs::read_to_string(&line_file).map_err(|_| not_ours(iso))?;
        Ok(Copy {
            work,
            root,
            line: line.trim().to_string(),
            label,
        })
    }

    /// The menu and `/mkimage/cmdline` with `line`; the ISO written.
    fn finish(self, line: &str, output: &Path) -> anyhow::Result<()> {
        let line = line.trim();
        let line_file = self.root.join(cmdline::MEDIA_DIR).join("cmdline");
        fs::write(&line_file, format!("{line}\n")).map_err(|e| IsoError::io(&line_file, e))?;
        let words = cmdline::grub_words(line).map_err(UsageError)?;
        let cfg = self.root.join(grub::CONFIG);
        fs::write(&cfg, grub::config("boot-test", &self.label, &words))
            .map_err(|e| IsoError::io(&cfg, e))?;
        super::write_iso(&self.root, &self.label, 0, output, self.work.path())
    }
}

/// The ISO's volume id (its label: the BIOS core and the menu find the
/// medium by it, so the copy keeps it).
fn volume_id(iso: &Path) -> anyhow::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::File::open(iso).map_err(|e| IsoError::io(iso, e))?;
    let mut id = [0u8; (VOLUME_ID.end - VOLUME_ID.start) as usize];
    f.seek(SeekFrom::Start(VOLUME_ID.start))
        .and_then(|_| f.read_exact(&mut id))
        .map_err(|e| IsoError::io(iso, e))?;
    let id = String::from_utf8_lossy(&id).trim_end().to_string();
    match id.is_empty() {
        true => Err(not_ours(iso).into()),
        false => Ok(id),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_network_iso_names_its_server() {
        let line = "mkimage.api=http://10.0.0.1:8080 mkimage.node-overlay=script basefs=http://10.0.0.1:8080/sha256/aa/b.squashfs";
        assert_eq!(
            super::server_of(line).as_deref(),
            Some("http://10.0.0.1:8080")
        );
        assert_eq!(
            super::server_of("mkimage.media=MKIMAGE_1 basefs=/mkimage/b"),
            None
        );
    }
}
