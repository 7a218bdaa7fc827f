//! Published artifacts: the `manifest.json` index that the server and later
//! builds read (this file), atomic publishing with `NAME.sha256` (`atomic`),
//! the content store (`objects`) and the grace rule for superseded content
//! (`grace`), finding a build's inputs by name (`lookup`) and the hash of
//! what went into a build (`inputs`).
//!
//! An artifact is written to a temp file in the output dir and renamed into
//! place, so a reader (the boot server, a client mid-download) only ever sees
//! a complete old file or a complete new one.

pub mod atomic;
pub mod grace;
pub mod inputs;
pub mod lookup;
pub mod objects;

pub use atomic::{
    now, now_ms, publish, sha256_bytes, sha256_file, sha256_reader, source_date_epoch,
    staging_file, utc, write_atomic, Staged,
};

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The index file in the output dir.
pub const MANIFEST: &str = "manifest.json";

/// One published artifact, as recorded in `manifest.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// basefs, overlay, kernel or initrd.
    pub kind: String,
    /// The build's name (from its vars file).
    pub name: String,
    /// File name in the output dir.
    pub file: String,
    pub size: u64,
    pub sha256: String,
    /// Hash over everything that went into the build (config, roles, packages).
    #[serde(default)]
    pub inputs_hash: String,
    /// The parts of that hash by name (see `inputs`), to say what changed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,
    /// Installed packages (name → version) for basefs, added ones for overlays.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub packages: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    /// For a basefs: a hash of its kernel, modules and firmware — all an
    /// initrd built from it depends on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_hash: Option<String>,
    /// For overlays: the basefs file and sha256 it was built on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Ref>,
    /// For overlays: parent overlays, in the order they are applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<Ref>,
    /// For a basefs: the dm-verity hash tree appended to the squashfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verity: Option<crate::archive::verity::Verity>,
    /// For initrds: the kernel modules included, in load order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<String>,
    /// Seconds since the epoch when the build finished.
    pub build_time: u64,
    pub tool_version: String,
}

/// A reference from one artifact to another, by file and content.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Ref {
    pub file: String,
    pub sha256: String,
}

/// `manifest.json`: every artifact in the output dir, by file name.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub artifacts: BTreeMap<String, Entry>,
}

impl Manifest {
    /// Read the manifest of `dir` (empty if there is none yet).
    pub fn load(dir: &Path) -> anyhow::Result<Manifest> {
        let path = dir.join(MANIFEST);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{}: not a valid mkimage manifest (remove it and rebuild)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The newest entry of a kind and name, if any.
    pub fn find(&self, kind: &str, name: &str) -> Option<&Entry> {
        self.artifacts
            .values()
            .find(|e| e.kind == kind && e.name == name)
    }
}

/// Add or replace entries in `dir/manifest.json`, under a lock so concurrent
/// builds into one dir do not lose each other's entries.
pub fn record(dir: &Path, entries: &[Entry]) -> anyhow::Result<()> {
    let lock = File::create(dir.join(".manifest.lock")).context("cannot create manifest lock")?;
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .context("cannot lock manifest")?;
    let mut manifest = Manifest::load(dir)?;
    for entry in entries {
        manifest.artifacts.insert(entry.file.clone(), entry.clone());
    }
    let json = serde_json::to_vec_pretty(&manifest)?;
    write_atomic(dir, MANIFEST, |f| f.write_all(&json))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_writes_file_sha_and_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let staged = staging_file(dir.path(), "x.img").unwrap();
        fs::write(staged.path(), b"abc").unwrap();
        let (_file, path) = staged.keep().unwrap();
        let (size, sha) = publish(dir.path(), "x.img", &path).unwrap();
        assert_eq!(size, 3);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("x.img.sha256")).unwrap(),
            format!("{sha}  x.img\n")
        );
        assert!(
            objects::open(dir.path(), &sha).unwrap().is_some(),
            "kept in the content store"
        );
        let entry = Entry {
            kind: "basefs".into(),
            name: "x".into(),
            file: "x.img".into(),
            size,
            sha256: sha,
            ..Default::default()
        };
        record(dir.path(), std::slice::from_ref(&entry)).unwrap();
        assert_eq!(
            Manifest::load(dir.path()).unwrap().find("basefs", "x"),
            Some(&entry)
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn failed_atomic_write_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"old").unwrap();
        let err = write_atomic(dir.path(), "f", |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        });
        assert!(err.is_err());
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn another_builds_sweep_leaves_a_file_being_written() {
        // Two builds into one output dir: one starting sweeps the staged
        // files nobody holds while the other writes its `.sha256`.
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "f.sha256", |f| {
            let swept = crate::flock::stale(dir.path(), |n| n.ends_with(".tmp"));
            assert!(swept.is_empty(), "would be removed mid-write: {swept:?}");
            f.write_all(b"x")
        })
        .unwrap();
        assert_eq!(fs::read(dir.path().join("f.sha256")).unwrap(), b"x");
    }
}
