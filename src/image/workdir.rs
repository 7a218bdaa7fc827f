//! Build directories: a fresh `OUT/.work/NAME.XXXX` per build, held (flocked)
//! while the build runs. One left behind by a killed build (its lock free)
//! is removed by the next build; one of a failed build is removed at once
//! unless `--keep-build-dir`. Never removed through a live mount.

use std::path::{Path, PathBuf};

use crate::flock::{self, Claimed};
use crate::sys::{self, Sys};

pub struct WorkDir<'a> {
    sys: &'a dyn Sys,
    pub path: PathBuf,
    keep_on_failure: bool,
    success: bool,
    _claim: Claimed,
}

impl<'a> WorkDir<'a> {
    pub fn create(
        sys: &'a dyn Sys,
        out: &Path,
        name: &str,
        keep_on_failure: bool,
    ) -> anyhow::Result<WorkDir<'a>> {
        let base = out.join(".work");
        collect_stale(sys, &base);
        let claim = flock::claim_dir(&base, &format!("{name}."))?;
        Ok(WorkDir {
            sys,
            path: claim.path.clone(),
            keep_on_failure,
            success: false,
            _claim: claim,
        })
    }

    pub fn succeeded(&mut self) {
        self.success = true;
    }
}

impl Drop for WorkDir<'_> {
    fn drop(&mut self) {
        if let Err(e) = sys::unmount_all(self.sys, &self.path) {
            tracing::warn!("{e:#}");
            return;
        }
        if !self.success && self.keep_on_failure {
            tracing::info!("build dir kept for debugging: {}", self.path.display());
            return;
        }
        if let Err(e) = sys::remove_tree(self.sys, &self.path) {
            tracing::warn!("{e:#}");
        }
    }
}

/// Remove build dirs whose build is gone (their lock is free), and staged
/// artifacts (`.NAME.XXXX.tmp` in the output dir) nobody is writing.
pub fn collect_stale(sys: &dyn Sys, base: &Path) {
    for dir in flock::stale(base, |_| true) {
        tracing::info!(
            "removing build dir left by an interrupted build: {}",
            dir.display()
        );
        let _ = sys::unmount_all(sys, &dir);
        if let Err(e) = sys::remove_tree(sys, &dir) {
            tracing::warn!("{e:#}");
        }
    }
    if let Some(out) = base.parent() {
        for file in flock::stale(out, |n| n.starts_with('.') && n.ends_with(".tmp")) {
            tracing::info!(
                "removing a staged file left by an interrupted build: {}",
                file.display()
            );
            let _ = std::fs::remove_file(&file);
        }
    }
}
