//! The content store: every published artifact is also kept under its
//! sha256, as a hard link `DIR/.state/objects/HEX`, so a URL that names
//! content (`/sha256/HEX/NAME`) keeps giving the same bytes after a
//! republish renames a new file over the artifact's name.
//!
//! An object is only ever created from a file whose sha256 is known to be
//! HEX (the builder's staged file it just hashed, or a descriptor the server
//! hashed), and objects are never written to, only linked and unlinked, so
//! the bytes behind a name always hash to it. Objects whose sha256 is no
//! longer in `manifest.json` are superseded; [`prune`] drops them once they
//! have been superseded for a grace period. The store sits in the output
//! dir's hidden state area, which the server never serves as plain files.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// The store, relative to the output dir.
pub const OBJECTS: &str = ".state/objects";

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("`{0}` is not a sha256 (64 lowercase hex digits)")]
    NotSha256(String),
    #[error("cannot create the content store {path}: {source} (is the output dir writable?)")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot link {what} into the content store as {path}: {source}")]
    Link {
        what: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot read the content store {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Sweep(#[from] super::grace::SweepError),
}

pub use crate::hex::is_sha256;

/// The store directory of an output dir.
pub fn store(dir: &Path) -> PathBuf {
    dir.join(OBJECTS)
}

/// Where the object for `sha` lives (it may not exist).
pub fn path(dir: &Path, sha: &str) -> Result<PathBuf, ObjectError> {
    if !is_sha256(sha) {
        return Err(ObjectError::NotSha256(sha.to_string()));
    }
    Ok(store(dir).join(sha))
}

/// Open the object for `sha`; `Ok(None)` when the store does not have it.
pub fn open(dir: &Path, sha: &str) -> Result<Option<File>, ObjectError> {
    let path = path(dir, sha)?;
    match File::open(&path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ObjectError::Read { path, source }),
    }
}

/// Add the file at `file` (whose content hashes to `sha`, and which nobody
/// else renames or writes, e.g. a builder's staged file) to the store.
pub fn add(dir: &Path, file: &Path, sha: &str) -> Result<(), ObjectError> {
    link_into(dir, file, sha, &file.display().to_string())
}

/// Add the inode an open descriptor refers to (whose content the caller
/// hashed to `sha`) to the store. Linking the descriptor, not a path, means a
/// file renamed over the path meanwhile cannot end up under the wrong hash.
pub fn add_open(dir: &Path, file: &File, sha: &str) -> Result<(), ObjectError> {
    let proc_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    link_into(dir, &proc_path, sha, "an open artifact")
}

/// Link `source` into the store as the object for `sha`: the object then is
/// the newest inode with that content, so its superseded time (see
/// [`Pruner`]) follows the newest publish.
fn link_into(dir: &Path, source: &Path, sha: &str, what: &str) -> Result<(), ObjectError> {
    let target = path(dir, sha)?;
    let store = store(dir);
    fs::create_dir_all(&store).map_err(|source| ObjectError::Create {
        path: store.clone(),
        source,
    })?;
    link_atomic(source, &target, false).map_err(|source| ObjectError::Link {
        what: what.to_string(),
        path: target,
        source,
    })
}

/// Put `source`'s inode at `target` (a `/proc/self/fd/N` path links the
/// open file itself) by a link to a temp name in `target`'s dir and a
/// rename, so a reader sees the whole file or none. With `copy_across`, a
/// synced copy where the kernel refuses the link (another filesystem, or
/// `protected_hardlinks`).
pub fn link_atomic(source: &Path, target: &Path, copy_across: bool) -> io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let tmp = target.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_file(&tmp);
    // AT_SYMLINK_FOLLOW makes a /proc/self/fd/N path link the inode itself.
    let linked = nix::unistd::linkat(
        None,
        source,
        None,
        &tmp,
        nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from);
    let placed = match linked {
        Err(e)
            if copy_across
                && (e.raw_os_error() == Some(nix::libc::EXDEV)
                    || e.kind() == io::ErrorKind::PermissionDenied) =>
        {
            copy_synced(source, &tmp)
        }
        other => other,
    }
    .and_then(|()| fs::rename(&tmp, target));
    // Renaming a link over another link to the same inode does nothing and
    // leaves the temp name behind; it goes in every case.
    let _ = fs::remove_file(&tmp);
    placed
}

fn copy_synced(source: &Path, to: &Path) -> io::Result<()> {
    let mut from = File::open(source)?;
    let mut to = File::create(to)?;
    io::copy(&mut from, &mut to)?;
    to.sync_all()
}

/// Superseded objects and since when the pruner has seen them so.
#[derive(Debug, Default)]
pub struct Pruner {
    first_seen: HashMap<String, SystemTime>,
}

impl Pruner {
    /// Drop the objects whose sha256 is not in `live` and that have been
    /// superseded for at least `grace` (`grace::sweep`); returns the
    /// dropped ones. An object counts as superseded since the later of its
    /// inode's change time (a republish renaming over the artifact changes
    /// it) and the first sweep that found it missing from `live`, so a
    /// restarted server never drops one early.
    pub fn prune(
        &mut self,
        dir: &Path,
        live: &HashSet<String>,
        grace: Duration,
    ) -> Result<Vec<String>, ObjectError> {
        let swept = super::grace::sweep(&store(dir), &|n| live.contains(n), grace, self)?;
        self.first_seen.retain(|k, _| swept.kept.contains(k));
        Ok(swept.dropped)
    }
}

impl super::grace::Superseded for Pruner {
    fn since(
        &mut self,
        name: &str,
        entry: &Path,
        now: SystemTime,
    ) -> io::Result<Option<SystemTime>> {
        let first = *self.first_seen.entry(name.to_string()).or_insert(now);
        let changed = fs::symlink_metadata(entry)
            .map(|m| SystemTime::UNIX_EPOCH + Duration::new(m.ctime().max(0) as u64, 0))
            .unwrap_or(now);
        Ok(Some(first.max(changed)))
    }

    fn remove(&mut self, entry: &Path) -> io::Result<bool> {
        Ok(fs::remove_file(entry).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn objects_keep_their_bytes_and_superseded_ones_go_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("x"), b"abc").unwrap();
        add(d, &d.join("x"), A).unwrap();
        // A republish renames other bytes over the name: the object stays.
        fs::write(d.join(".new"), b"xyz").unwrap();
        fs::rename(d.join(".new"), d.join("x")).unwrap();
        let mut got = String::new();
        io::Read::read_to_string(&mut open(d, A).unwrap().unwrap(), &mut got).unwrap();
        assert_eq!(got, "abc");
        assert!(open(d, &"0".repeat(64)).unwrap().is_none());
        assert!(matches!(open(d, "../x"), Err(ObjectError::NotSha256(_))));
        // Adding by descriptor, twice, leaves one object and no temp files.
        let f = File::open(d.join("x")).unwrap();
        let b = "3608bca1e44ea6c4d268eb6db02260269892c0b42b86bbf1e77a6fa16c3c9282";
        add_open(d, &f, b).unwrap();
        add_open(d, &f, b).unwrap();
        let names: Vec<_> = fs::read_dir(store(d))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        let mut pruner = Pruner::default();
        let live: HashSet<String> = [b.to_string()].into();
        assert!(pruner
            .prune(d, &live, Duration::from_secs(3600))
            .unwrap()
            .is_empty());
        assert!(
            open(d, A).unwrap().is_some(),
            "kept within the grace period"
        );
        assert_eq!(
            pruner.prune(d, &live, Duration::ZERO).unwrap(),
            vec![A.to_string()]
        );
        assert!(open(d, A).unwrap().is_none());
        assert!(open(d, b).unwrap().is_some(), "live objects stay");
    }
}
