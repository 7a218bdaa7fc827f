//! The layer store: what each task changed (the overlayfs upper dir it ran
//! on), kept under its cache key in `CACHE/layers/KEY/tree`, so a later
//! build mounts it as a read-only lower instead of running the task again.
//!
//! A layer is staged in a claimed `.new.*` dir and renamed into place
//! whole, so a killed build never leaves a half-written layer that a later
//! build trusts; the next build removes abandoned staging dirs. Builds hold
//! a shared lock (`KEY.lock`) on every layer they mount, and `mkimage cache`
//! prunes only layers it can lock exclusively; `KEY/used` says when a build
//! last used it.

use std::fs::{self, File};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::Flock;
use sha2::{Digest, Sha256};

/// The store's directory under the cache dir.
pub const LAYERS: &str = "layers";
/// Inside a layer: the upper dir, the stamp of its last use, what made it.
pub const TREE: &str = "tree";
pub const USED: &str = "used";
pub const INFO: &str = "info.txt";

/// A layer in the store, held (shared) while this value lives.
pub struct Layer {
    pub key: String,
    pub tree: PathBuf,
    _held: Flock<File>,
}

/// The layers of one cache dir.
#[derive(Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Open (and create) the store, removing what killed builds left.
    pub fn open(cache_dir: &Path) -> anyhow::Result<Store> {
        let dir = cache_dir.join(LAYERS);
        fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the layer store {}", dir.display()))?;
        for stale in crate::flock::stale(&dir, |n| n.starts_with(".new.")) {
            tracing::info!(
                "removing a layer left half-written by an interrupted build: {}",
                stale.display()
            );
            let _ = fs::remove_dir_all(&stale);
        }
        Ok(Store { dir })
    }

    /// The layer for `key`, if the store has it (held until dropped).
    pub fn get(&self, key: &str) -> anyhow::Result<Option<Layer>> {
        let entry = self.dir.join(key);
        if !entry.join(TREE).is_dir() {
            return Ok(None);
        }
        let held = crate::flock::shared(&self.dir, &format!("{key}.lock"))?;
        // Pruned while we waited for the lock?
        if !entry.join(TREE).is_dir() {
            return Ok(None);
        }
        let _ = fs::write(entry.join(USED), b"");
        Ok(Some(Layer {
            key: key.to_string(),
            tree: entry.join(TREE),
            _held: held,
        }))
    }

    /// Move `upper` (a finished task's upper dir) into the store as `key`;
    /// `info` says what made it. When another build stored the same key
    /// first, that layer is used and `upper` is dropped.
    pub fn put(&self, key: &str, upper: &Path, info: &str) -> anyhow::Result<Layer> {
        self.stage(key, info, |tree| {
            if fs::rename(upper, tree).is_err() {
                // Another filesystem: copy, keeping owners, modes, times, xattrs.
                crate::sys::copy_tree(upper, tree)?;
            }
            Ok(())
        })?;
        self.get(key)?
            .ok_or_else(|| anyhow::anyhow!("the layer {key} was removed as it was stored"))
    }

    /// Copy `upper` into the store as `key`, leaving it where it is (a
    /// build in RAM goes on using it while this runs behind it).
    pub fn copy_in(&self, key: &str, upper: &Path, info: &str) -> anyhow::Result<()> {
        self.stage(key, info, |tree| crate::sys::copy_tree(upper, tree))
    }

    /// Fill a claimed staging dir's tree with `fill`, then rename it into
    /// place as `key` (unless another build got there first).
    fn stage(
        &self,
        key: &str,
        info: &str,
        fill: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let staging = crate::flock::claim_dir(&self.dir, ".new.")?;
        fill(&staging.path.join(TREE))?;
        fs::write(staging.path.join(INFO), info)
            .with_context(|| format!("cannot write {}", staging.path.join(INFO).display()))?;
        fs::write(staging.path.join(USED), b"")?;
        let entry = self.dir.join(key);
        if fs::rename(&staging.path, &entry).is_err() && !entry.join(TREE).is_dir() {
            return Err(anyhow::anyhow!(
                "cannot store the layer {}",
                entry.display()
            ));
        }
        let _ = fs::remove_dir_all(&staging.path);
        Ok(())
    }
}

/// True when the dir holds nothing (the task changed nothing).
pub fn is_empty(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|mut rd| rd.next().is_none())
        .unwrap_or(true)
}

/// A hash of what a layer holds — paths, types, owners, modes, mtimes
/// (clamped to `source_date_epoch`, as the archives store them), contents,
/// link targets, device numbers, xattrs other than overlayfs's bookkeeping —
/// to key the layers above a task that is never cached: when it made the
/// same changes as last time, they still come from the cache.
pub fn content_hash(dir: &Path, source_date_epoch: u64) -> anyhow::Result<String> {
    let mut h = Sha256::new();
    for item in crate::archive::walk(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .iter()
        .skip(1)
    {
        let m = &item.meta;
        let mtime = (m.mtime().max(0) as u64).min(source_date_epoch);
        h.update(
            format!(
                "\n{} {:o} {}:{} {mtime} {}",
                item.rel.display(),
                m.mode(),
                m.uid(),
                m.gid(),
                m.rdev()
            )
            .as_bytes(),
        );
        if m.file_type().is_symlink() {
            h.update(fs::read_link(&item.abs)?.as_os_str().as_encoded_bytes());
        } else if m.is_file() {
            let mut file = File::open(&item.abs)
                .with_context(|| format!("cannot read {}", item.abs.display()))?;
            std::io::copy(&mut file, &mut h)?;
        }
        if !m.file_type().is_symlink() && !m.file_type().is_socket() {
            for name in crate::archive::xattr::list(&item.abs)? {
                if !["trusted.overlay.origin", "trusted.overlay.impure"].contains(&name.as_str()) {
                    h.update(name.as_bytes());
                    h.update(crate::archive::xattr::get(&item.abs, &name)?.unwrap_or_default());
                }
            }
        }
    }
    Ok(crate::hex::hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_stored_whole_and_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.get("k1").unwrap().is_none());
        let upper = dir.path().join("upper");
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::write(upper.join("etc/x"), b"x").unwrap();
        let before = content_hash(&upper, 1_700_000_000).unwrap();
        let layer = store.put("k1", &upper, "role r, task t").unwrap();
        assert!(!upper.exists(), "moved, not copied");
        assert_eq!(fs::read(layer.tree.join("etc/x")).unwrap(), b"x");
        assert_eq!(content_hash(&layer.tree, 1_700_000_000).unwrap(), before);
        drop(layer);
        assert!(store.get("k1").unwrap().is_some());
        // A staging dir of a killed build is removed; a held one is not.
        let held = crate::flock::claim_dir(&dir.path().join(LAYERS), ".new.").unwrap();
        let dead = crate::flock::claim_dir(&dir.path().join(LAYERS), ".new.").unwrap();
        let dead_path = dead.path.clone();
        drop(dead);
        Store::open(dir.path()).unwrap();
        assert!(!dead_path.exists() && held.path.exists());
        assert!(is_empty(&dir.path().join("nonexistent")));
    }
}
