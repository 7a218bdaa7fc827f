//! The one grace rule for superseded content, for the server's content
//! store (`objects::Pruner`) and a published tree's `sha256/HEX/` dirs
//! (`serve::publish`) alike: an entry of a store, named by its sha256, that
//! nothing live names any more is removed once it has been superseded for
//! the grace period, so a machine that fetched its boot script just before
//! can still finish its boot. How a store knows since when an entry has
//! been superseded is its own ([`Superseded`]): the server's memory and the
//! inode's change time, or a marker file's mtime in a published tree.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::hex::is_sha256;

/// A store a sweep could not read, or an entry it could not remove.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
}

/// How one store marks and removes its superseded entries.
pub trait Superseded {
    /// Whether `entry` is one of the store's entries (else it is left alone).
    fn holds(&self, _entry: &Path) -> bool {
        true
    }
    /// `entry` is live (again): clear whatever marks it superseded.
    fn live(&mut self, _entry: &Path) {}
    /// Since when `entry`, named `name`, has been superseded (the first
    /// time it is asked, `now` or earlier); `None`: marked superseded just
    /// now, so it stays until a later sweep whatever the grace.
    fn since(
        &mut self,
        name: &str,
        entry: &Path,
        now: SystemTime,
    ) -> io::Result<Option<SystemTime>>;
    /// Remove `entry`; `Ok(false)` when it stays for now.
    fn remove(&mut self, entry: &Path) -> io::Result<bool>;
}

/// What a sweep found superseded: still within the grace period, or dropped.
#[derive(Debug, Default, PartialEq)]
pub struct Swept {
    pub kept: Vec<String>,
    pub dropped: Vec<String>,
}

/// Sweep `store` (absent: nothing to do): every sha256-named entry that
/// `live` does not name and that has been superseded for at least `grace`
/// is removed.
pub fn sweep(
    store: &Path,
    live: &dyn Fn(&str) -> bool,
    grace: Duration,
    how: &mut dyn Superseded,
) -> Result<Swept, SweepError> {
    let read = |path: PathBuf| move |source| SweepError::Read { path, source };
    let entries = match fs::read_dir(store) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Swept::default()),
        Err(source) => return Err(read(store.to_path_buf())(source)),
    };
    let now = SystemTime::now();
    let mut swept = Swept::default();
    for entry in entries.flatten() {
        let (name, path) = (
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        );
        if !is_sha256(&name) || !how.holds(&path) {
            continue;
        }
        if live(&name) {
            how.live(&path);
            continue;
        }
        let since = how.since(&name, &path, now).map_err(read(path.clone()))?;
        let over = since.is_some_and(|t| now.duration_since(t).unwrap_or_default() >= grace);
        if over
            && how
                .remove(&path)
                .map_err(|source| SweepError::Remove { path, source })?
        {
            swept.dropped.push(name);
        } else {
            swept.kept.push(name);
        }
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Marks an entry the first time it is seen superseded, as a published
    /// tree does.
    #[derive(Default)]
    struct Marks(BTreeSet<String>);

    impl Superseded for Marks {
        fn since(&mut self, name: &str, _: &Path, _: SystemTime) -> io::Result<Option<SystemTime>> {
            Ok((!self.0.insert(name.to_string())).then_some(SystemTime::UNIX_EPOCH))
        }

        fn remove(&mut self, entry: &Path) -> io::Result<bool> {
            fs::remove_file(entry).map(|()| true)
        }
    }

    #[test]
    fn a_superseded_entry_goes_after_the_grace_and_a_live_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (old, live) = ("a".repeat(64), "b".repeat(64));
        for name in [old.as_str(), live.as_str(), "not-a-sha"] {
            fs::write(dir.path().join(name), b"x").unwrap();
        }
        let is_live = |n: &str| n == live;
        let mut marks = Marks::default();
        let first = sweep(dir.path(), &is_live, Duration::ZERO, &mut marks).unwrap();
        assert_eq!(first.kept, vec![old.clone()], "marked now: kept this sweep");
        let second = sweep(dir.path(), &is_live, Duration::ZERO, &mut marks).unwrap();
        assert_eq!(second.dropped, vec![old.clone()]);
        assert!(!dir.path().join(&old).exists());
        assert!(dir.path().join(&live).exists() && dir.path().join("not-a-sha").exists());
        let gone = sweep(
            &dir.path().join("none"),
            &is_live,
            Duration::ZERO,
            &mut marks,
        );
        assert_eq!(gone.unwrap(), Swept::default());
    }
}
