//! For `mkimage boot-test --iso` only: a copy of an offline ISO that also
//! carries the checker overlay (and the test's kernel arguments). The
//! given ISO's files — kernel, initrd, GRUB images, basefs, overlays — go
//! into the copy unchanged; only the menu and `/mkimage/cmdline` gain the
//! overlay, so a production ISO never holds a test hook.

use std::fs;
use std::path::Path;

use anyhow::Context;

use super::error::IsoError;
use super::{cmdline, grub};
use crate::exec::Cmd;
use crate::UsageError;

/// The checker's file on the test copy.
const CHECKER: &str = "boot-test-checker.cpio.gz";

/// Write `output`: `iso` plus the overlay `overlay` (applied last) and `args`.
pub fn with_overlay(iso: &Path, overlay: &[u8], args: &str, output: &Path) -> anyhow::Result<()> {
    super::check_tools()?;
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
    let line = fs::read_to_string(&line_file).map_err(|_| {
        UsageError(format!(
            "{}: not an ISO made by mkimage iso (it has no /{}/cmdline)",
            iso.display(),
            cmdline::MEDIA_DIR
        ))
    })?;
    let label = cmdline::media_label(&line)
        .ok_or_else(|| UsageError(format!("{}: a network-mode ISO (no mkimage.media= on its command line); boot-test --iso boots offline ISOs (mkimage iso --offline)", iso.display())))?;
    let sha256 = crate::artifact::sha256_bytes(overlay);
    let path = format!("/{}/{CHECKER}", cmdline::MEDIA_DIR);
    let line = format!(
        "{} {args}",
        cmdline::add_overlay(line.trim(), &path, &sha256)
    )
    .trim()
    .to_string();
    let dest = root.join(cmdline::MEDIA_DIR).join(CHECKER);
    fs::write(&dest, overlay).map_err(|e| IsoError::io(&dest, e))?;
    fs::write(&line_file, format!("{line}\n")).map_err(|e| IsoError::io(&line_file, e))?;
    let words = cmdline::grub_words(&line).map_err(UsageError)?;
    let cfg = root.join(grub::CONFIG);
    fs::write(&cfg, grub::config("boot-test", &label, &words))
        .map_err(|e| IsoError::io(&cfg, e))?;
    super::write_iso(&root, &label, 0, output, work.path())
}
