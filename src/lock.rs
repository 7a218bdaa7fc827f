//! Locks on shared directories, and telling what a killed build left from
//! what a running one is still using: every scratch dir and staged file is
//! held under an exclusive `flock` while in use, so a later run removes
//! exactly those whose lock is free (the kernel drops a lock when its
//! holder dies, even by SIGKILL).

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};

/// Block until this process holds `dir/NAME` exclusively (the file is created).
pub fn exclusive(dir: &Path, name: &str) -> anyhow::Result<Flock<File>> {
    let path = dir.join(name);
    let file = File::create(&path)
        .with_context(|| format!("cannot create the lock {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("cannot lock {}", path.display()))
}

/// Block until this process holds `dir/NAME` shared (readers of a cached
/// tree; pruning takes it exclusively and skips what is in use).
pub fn shared(dir: &Path, name: &str) -> anyhow::Result<Flock<File>> {
    let path = dir.join(name);
    let file = File::create(&path)
        .with_context(|| format!("cannot create the lock {}", path.display()))?;
    Flock::lock(file, FlockArg::LockShared)
        .map_err(|(_, e)| e)
        .with_context(|| format!("cannot lock {}", path.display()))
}

/// The `.deb` cache's lock, if the cache exists yet: builds share the cache,
/// and apt and the bootstrappers must not download into it at once.
pub fn package_cache(dir: &Path) -> anyhow::Result<Option<Flock<File>>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    exclusive(dir, ".mkimage-lock").map(Some)
}

/// The name of the lock file inside a claimed directory.
pub const DIR_LOCK: &str = ".lock";

/// A fresh directory `PARENT/PREFIXxxxx`, held (its `.lock` flocked) until dropped.
pub struct Claimed {
    pub path: PathBuf,
    _lock: Flock<File>,
}

/// Create and hold a fresh directory under `parent`. Its `.lock` appears
/// already held (taken under a temp name, then renamed), so another run
/// never finds it unheld.
pub fn claim_dir(parent: &Path, prefix: &str) -> anyhow::Result<Claimed> {
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let path = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a directory in {}", parent.display()))?
        .keep();
    let taking = path.join(".lock.new");
    let file =
        File::create(&taking).with_context(|| format!("cannot create {}", taking.display()))?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .context("cannot lock a fresh directory")?;
    fs::rename(&taking, path.join(DIR_LOCK))
        .with_context(|| format!("cannot create {}", path.join(DIR_LOCK).display()))?;
    Ok(Claimed { path, _lock: lock })
}

/// How long a claimed directory may be without its lock file, or a staged
/// file without its lock, before it counts as left by a run killed while
/// creating it.
const CLAIMING: std::time::Duration = std::time::Duration::from_secs(60);

/// Hold a staged file (e.g. an artifact being written) while it is in use.
pub fn hold_file(file: &File) -> std::io::Result<()> {
    // SAFETY: flock on a descriptor this process owns for the call's duration.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Is nobody holding this claimed directory or staged file?
pub fn abandoned(path: &Path) -> bool {
    let target = if path.is_dir() {
        path.join(DIR_LOCK)
    } else {
        path.to_path_buf()
    };
    match File::open(&target) {
        // A dir being claimed right now has no lock file for a moment; one
        // whose lock file never got written is abandoned once it is old.
        Err(_) => path.is_dir() && old(path),
        // A file just created is not locked yet for a moment, too.
        Ok(f) if !path.is_dir() => {
            old(path) && Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok()
        }
        Ok(f) => Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok(),
    }
}

fn old(path: &Path) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().unwrap_or_default() > CLAIMING)
}

/// Entries of `parent` whose names match `is_ours` and that nobody holds.
pub fn stale(parent: &Path, is_ours: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| is_ours(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .filter(|p| abandoned(p))
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_things_are_not_stale_and_dropped_ones_are() {
        let dir = tempfile::tempdir().unwrap();
        let claimed = claim_dir(dir.path(), ".new.").unwrap();
        let staged = dir.path().join(".x.img.abc.tmp");
        let file = File::create(&staged).unwrap();
        hold_file(&file).unwrap();
        let ours = |n: &str| n.starts_with(".new.") || n.ends_with(".tmp");
        assert!(stale(dir.path(), ours).is_empty(), "held by this process");
        let (path, _) = (claimed.path.clone(), drop(claimed));
        drop(file);
        // A staged file nobody holds is being created (not stale) until it is old.
        assert_eq!(stale(dir.path(), ours), [path.clone()]);
        let old = std::time::SystemTime::now() - CLAIMING * 2;
        File::options()
            .write(true)
            .open(&staged)
            .unwrap()
            .set_times(fs::FileTimes::new().set_modified(old))
            .unwrap();
        assert_eq!(
            stale(dir.path(), ours),
            [path, staged]
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
        // A dir without a lock file is being claimed (not stale) until it is old.
        let claiming = dir.path().join(".new.claiming");
        fs::create_dir(&claiming).unwrap();
        assert!(!abandoned(&claiming));
        let old = std::time::SystemTime::now() - CLAIMING * 2;
        File::open(&claiming)
            .unwrap()
            .set_times(fs::FileTimes::new().set_modified(old))
            .unwrap();
        assert!(abandoned(&claiming));
    }
}
