//! Build directories: a fresh `OUT/.work/NAME.XXXX` per build, locked while
//! the build runs. One left behind by a killed build (its lock free) is
//! removed by the next build; one of a failed build is removed at once
//! unless `--keep-build-dir`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};

use crate::sys::{self, Sys};

pub struct WorkDir<'a> {
    sys: &'a dyn Sys,
    pub path: PathBuf,
    keep_on_failure: bool,
    success: bool,
    _lock: Flock<File>,
}

impl<'a> WorkDir<'a> {
    pub fn create(sys: &'a dyn Sys, out: &Path, name: &str, keep_on_failure: bool) -> anyhow::Result<WorkDir<'a>> {
        let base = out.join(".work");
        fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
        collect_stale(sys, &base);
        let path = tempfile::Builder::new().prefix(&format!("{name}.")).tempdir_in(&base)?.keep();
        let lock = File::create(path.join(".lock"))?;
        let lock = Flock::lock(lock, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e).context("cannot lock build dir")?;
        Ok(WorkDir { sys, path, keep_on_failure, success: false, _lock: lock })
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

/// Remove build dirs whose build is gone (their lock is free).
fn collect_stale(sys: &dyn Sys, base: &Path) {
    let Ok(entries) = fs::read_dir(base) else { return };
    for entry in entries.filter_map(|e| e.ok()) {
        let dir = entry.path();
        let Ok(lock) = File::open(dir.join(".lock")) else { continue };
        if let Ok(held) = Flock::lock(lock, FlockArg::LockExclusiveNonblock) {
            tracing::info!("removing build dir left by an interrupted build: {}", dir.display());
            let _ = sys::unmount_all(sys, &dir);
            if let Err(e) = sys::remove_tree(sys, &dir) {
                tracing::warn!("{e:#}");
            }
            drop(held);
        }
    }
}
