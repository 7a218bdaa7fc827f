//! Locks on shared directories, and telling what a killed build left from
//! what a running one is still using: every scratch dir and staged file is
//! held under an exclusive `flock` while in use, so a later run removes
//! exactly those whose lock is free (the kernel drops a lock when its
//! holder dies, even by SIGKILL).

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};

/// Block until this process holds `dir/NAME` exclusively (the file is created).
pub fn exclusive(dir: &Path, name: &str) -> anyhow::Result<Flock<File>> {
    lock(dir, name, FlockArg::LockExclusive)
}

/// Block until this process holds `dir/NAME` shared (readers of a cached
/// tree; pruning takes it exclusively and skips what is in use).
pub fn shared(dir: &Path, name: &str) -> anyhow::Result<Flock<File>> {
    lock(dir, name, FlockArg::LockShared)
}

/// Block until `dir/NAME` (created if need be) is locked as `how` says.
fn lock(dir: &Path, name: &str, how: FlockArg) -> anyhow::Result<Flock<File>> {
    let path = dir.join(name);
    let file = File::create(&path)
        .with_context(|| format!("cannot create the lock {}", path.display()))?;
    Flock::lock(file, how)
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

/// The shared apt lists' lock, if the dir exists: the dir itself, flocked
/// (apt deletes any file in its lists dir that is not a list, so the lock
/// cannot be a file in it). Builds share the lists, and apt's own lock
/// there makes a second `apt-get update` fail at once; this makes it wait,
/// calling `waiting` first when another build holds the lists.
pub fn apt_lists(dir: &Path, waiting: impl FnOnce()) -> anyhow::Result<Option<Flock<File>>> {
    let Ok(file) = File::open(dir) else {
        return Ok(None);
    };
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(held) => return Ok(Some(held)),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => file,
        Err((_, e)) => return Err(e).with_context(|| format!("cannot lock {}", dir.display())),
    };
    waiting();
    Flock::lock(file, FlockArg::LockExclusive)
        .map(Some)
        .map_err(|(_, e)| e)
        .with_context(|| format!("cannot lock {}", dir.display()))
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

/// A staged file held by this process (`hold_file`) until this is dropped.
pub type Held = Flock<File>;

/// Hold a staged file (e.g. an artifact being written) while it is in use.
///
/// The hold is released by the guard (`LOCK_UN`), not by closing: a flock
/// belongs to the open file description, which a child forked by any other
/// thread shares until it execs (or for good, if it never does), so a hold
/// that ended only when the last descriptor closed would outlive its owner
/// for as long as such a child kept its copy.
pub fn hold_file(file: &File) -> std::io::Result<Held> {
    let dup = file.try_clone()?;
    Flock::lock(dup, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e.into())
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
        let held = hold_file(&file).unwrap();
        let ours = |n: &str| n.starts_with(".new.") || n.ends_with(".tmp");
        assert!(stale(dir.path(), ours).is_empty(), "held by this process");
        let (path, _) = (claimed.path.clone(), drop(claimed));
        drop((held, file));
        // A staged file nobody holds is being created (not stale) until it is old.
        assert_eq!(stale(dir.path(), ours), std::slice::from_ref(&path));
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

    /// The flake of the test above (`left: [.new.…]`, `right: [.new.…,
    /// .x.img.abc.tmp]`): another test thread's child, between fork and
    /// exec, had a copy of the staged file's descriptor, and the hold lasted
    /// until that copy closed. Here the child is parked there on purpose.
    #[test]
    fn a_hold_ends_with_its_guard_while_a_forked_child_has_the_descriptor() {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join(".x.img.abc.tmp");
        let file = File::create(&staged).unwrap();
        let held = hold_file(&file).unwrap();
        let (forked_r, forked_w) = nix::unistd::pipe().unwrap();
        let (go_r, go_w) = nix::unistd::pipe().unwrap();
        let (forked, go) = (forked_w.as_raw_fd(), go_r.as_raw_fd());
        let child = std::thread::spawn(move || {
            let mut cmd = std::process::Command::new("true");
            // SAFETY: only write and read, async-signal-safe, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let mut byte = 0u8;
                    libc::write(forked, b"x".as_ptr().cast(), 1);
                    libc::read(go, (&mut byte as *mut u8).cast(), 1);
                    Ok(())
                });
            }
            cmd.status()
        });
        let mut byte = [0u8; 1];
        nix::unistd::read(forked_r.as_raw_fd(), &mut byte).unwrap();
        // The child now has copies of `file` and of the hold's descriptor.
        drop((held, file));
        let old = std::time::SystemTime::now() - CLAIMING * 2;
        File::options()
            .write(true)
            .open(&staged)
            .unwrap()
            .set_times(fs::FileTimes::new().set_modified(old))
            .unwrap();
        let seen = abandoned(&staged);
        nix::unistd::write(&go_w, b"x").unwrap();
        assert!(child.join().unwrap().unwrap().success());
        drop((forked_w, go_r));
        assert!(
            seen,
            "dropped by its owner, yet held through the child's copy"
        );
    }

    #[test]
    fn a_second_apt_lists_user_waits_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut said = false;
        let first = apt_lists(dir.path(), || said = true).unwrap().unwrap();
        assert!(!said, "a free dir is taken at once");
        let (tx, rx) = std::sync::mpsc::channel();
        let path = dir.path().to_path_buf();
        let second = std::thread::spawn(move || {
            let held = apt_lists(&path, || tx.send("waiting").unwrap()).unwrap();
            tx.send("held").unwrap();
            held.is_some()
        });
        assert_eq!(rx.recv().unwrap(), "waiting");
        assert!(
            rx.try_recv().is_err(),
            "the second took the dir while the first held it"
        );
        drop(first);
        assert_eq!(rx.recv().unwrap(), "held");
        assert!(second.join().unwrap());
        assert!(
            apt_lists(&dir.path().join("none"), || ())
                .unwrap()
                .is_none(),
            "no dir, nothing to hold"
        );
    }
}
