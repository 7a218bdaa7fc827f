//! Build directories: a fresh `OUT/.work/NAME.XXXX` per build, held (flocked)
//! while the build runs. One left behind by a killed build (its lock free)
//! is removed by the next build; one of a failed build is removed at once
//! unless `--keep-build-dir`. Never removed through a live mount.
//!
//! With `build_dir: ram` (or `auto` on a machine with room) the build works
//! in a tmpfs mounted in that dir (`ram/`, inside the build's private mount
//! namespace, so it goes with the process whatever happens): dpkg's many
//! small files never touch the disk, and what the caches keep is copied
//! there behind the build ([`WriteBehind`]). A kept build dir is on disk,
//! since a tmpfs does not outlive the build.

use std::path::{Path, PathBuf};

use crate::config::{BuildDir, RAM_BUILD_MIN};
use crate::flock::{self, Claimed};
use crate::sys::write_behind::WriteBehind;
use crate::sys::{self, Sys};

pub struct WorkDir<'a> {
    sys: &'a dyn Sys,
    /// Where the build works: the claimed dir, or the tmpfs in it.
    pub path: PathBuf,
    claimed: PathBuf,
    /// Copies into the disk caches, when `path` is in RAM.
    behind: Option<WriteBehind>,
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
        build_dir: BuildDir,
    ) -> anyhow::Result<WorkDir<'a>> {
        let base = out.join(".work");
        collect_stale(sys, &base);
        let claim = flock::claim_dir(&base, &format!("{name}."))?;
        let mut work = WorkDir {
            sys,
            path: claim.path.clone(),
            claimed: claim.path.clone(),
            behind: None,
            keep_on_failure,
            success: false,
            _claim: claim,
        };
        if let Some(size) = ram_size(build_dir, keep_on_failure, sys::mem_available()) {
            let ram = work.claimed.join("ram");
            sys::mount_fs(
                sys,
                "tmpfs",
                "tmpfs",
                &ram,
                nix::mount::MsFlags::empty(),
                Some(&format!("mode=0755,size={size}")),
            )?;
            tracing::info!(
                "build dir in RAM (a tmpfs of up to {} MiB; build_dir: disk to work on disk)",
                size >> 20
            );
            work.path = ram;
            work.behind = Some(WriteBehind::start()?);
        }
        Ok(work)
    }

    /// The build dir of `job`'s build (in its plan's output dir).
    pub fn for_job(job: &super::job::Job<'a>) -> anyhow::Result<WorkDir<'a>> {
        let plan = job.plan;
        WorkDir::create(
            job.sys,
            &plan.out,
            &plan.name,
            job.keep_build_dir,
            plan.build_dir,
        )
    }

    /// The copier into the disk caches, when the build works in RAM (what
    /// it makes is then on another filesystem than the caches).
    pub fn behind(&self) -> Option<&WriteBehind> {
        self.behind.as_ref()
    }

    /// The build is done: wait for its copies into the caches (a copy
    /// that failed is a warning: it costs a later build time, nothing else).
    pub fn succeeded(&mut self) {
        if let Some(behind) = &mut self.behind {
            if behind.submitted() > 0 {
                crate::timings::mark("wait for the copies into the cache");
            }
            for failed in behind.settle() {
                tracing::warn!("not kept in the cache: {failed}");
            }
        }
        self.success = true;
    }
}

/// The size of the build's tmpfs, or `None` to work on disk: `ram` always
/// (half of what is available), `auto` when [`RAM_BUILD_MIN`] is available,
/// `disk` and a build dir kept for debugging never.
fn ram_size(choice: BuildDir, keep: bool, available: u64) -> Option<u64> {
    match choice {
        _ if keep => None,
        BuildDir::Disk => None,
        BuildDir::Auto if available < RAM_BUILD_MIN => None,
        BuildDir::Auto | BuildDir::Ram => Some((available / 2).max(256 << 20)),
    }
}

impl Drop for WorkDir<'_> {
    fn drop(&mut self) {
        // The copies read from the build dir: done (or skipped) first.
        if let Some(mut behind) = self.behind.take() {
            behind.cancel();
        }
        if let Err(e) = sys::unmount_all(self.sys, &self.claimed) {
            tracing::warn!("{e:#}");
            return;
        }
        if !self.success && self.keep_on_failure {
            tracing::info!("build dir kept for debugging: {}", self.path.display());
            return;
        }
        if let Err(e) = sys::remove_tree(self.sys, &self.claimed) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_when_asked_or_when_there_is_room_and_never_for_a_kept_dir() {
        const GIB: u64 = 1 << 30;
        assert_eq!(ram_size(BuildDir::Auto, false, 16 * GIB), Some(8 * GIB));
        assert_eq!(ram_size(BuildDir::Auto, false, RAM_BUILD_MIN - 1), None);
        assert_eq!(ram_size(BuildDir::Ram, false, GIB), Some(GIB / 2));
        assert_eq!(ram_size(BuildDir::Ram, false, 0), Some(256 << 20));
        assert_eq!(ram_size(BuildDir::Disk, false, 16 * GIB), None);
        for choice in [BuildDir::Auto, BuildDir::Ram] {
            assert_eq!(ram_size(choice, true, 16 * GIB), None, "{choice:?}");
        }
    }
}
