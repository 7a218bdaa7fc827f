//! Published artifacts: atomic writes into the output dir, `NAME.sha256`
//! files and the `manifest.json` index that the server and later builds read.
//!
//! An artifact is written to a temp file in the output dir and renamed into
//! place, so a reader (the boot server, a client mid-download) only ever sees
//! a complete old file or a complete new one.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod objects;

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
    /// Installed packages (name → version) for basefs, added ones for overlays.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub packages: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    /// For overlays: the basefs file and sha256 it was built on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Ref>,
    /// For overlays: parent overlays, in the order they are applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<Ref>,
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
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: not a valid mkimage manifest (remove it and rebuild)", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The newest entry of a kind and name, if any.
    pub fn find(&self, kind: &str, name: &str) -> Option<&Entry> {
        self.artifacts.values().find(|e| e.kind == kind && e.name == name)
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

/// Write `dir/name` atomically: `write` fills a temp file in `dir`, which is
/// synced and renamed over `name`. On error the temp file is removed and any
/// existing `name` is untouched.
pub fn write_atomic(dir: &Path, name: &str, write: impl FnOnce(&mut File) -> io::Result<()>) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create output dir {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temp file in {}", dir.display()))?;
    write(tmp.as_file_mut()).with_context(|| format!("cannot write {}", dir.join(name).display()))?;
    tmp.as_file().sync_all()?;
    let dest = dir.join(name);
    tmp.persist(&dest).map_err(|e| e.error).with_context(|| format!("cannot rename into {}", dest.display()))?;
    set_mode(&dest, 0o644)?;
    Ok(dest)
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Publish a finished file (already written somewhere in `dir`'s filesystem,
/// e.g. a temp file in `dir`) as `dir/name`, with `dir/name.sha256`, and
/// keep it in the content store (`objects`) under its sha256.
/// Returns (size, sha256).
pub fn publish(dir: &Path, name: &str, staged: &Path) -> anyhow::Result<(u64, String)> {
    let (size, sha) = sha256_file(staged)?;
    File::open(staged)?.sync_all()?;
    objects::add(dir, staged, &sha)?;
    let dest = dir.join(name);
    set_mode(staged, 0o644)?;
    fs::rename(staged, &dest).with_context(|| format!("cannot rename {} to {}", staged.display(), dest.display()))?;
    write_atomic(dir, &format!("{name}.sha256"), |f| writeln!(f, "{sha}  {name}"))?;
    Ok((size, sha))
}

/// A temp path in `dir` for staging an artifact before `publish`; removed on
/// drop unless published.
pub fn staging_file(dir: &Path, name: &str) -> anyhow::Result<tempfile::NamedTempFile> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create output dir {}", dir.display()))?;
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temp file in {}", dir.display()))
}

/// Size and hex sha256 of a file.
pub fn sha256_file(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    sha256_reader(&mut file).with_context(|| format!("cannot read {}", path.display()))
}

/// Size and hex sha256 of everything a reader yields.
pub fn sha256_reader(reader: &mut impl Read) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}

/// Hex sha256 of bytes.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// SOURCE_DATE_EPOCH from the environment, else `fallback`.
pub fn source_date_epoch(fallback: u64) -> u64 {
    std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(fallback)
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
        assert_eq!(sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(fs::read_to_string(dir.path().join("x.img.sha256")).unwrap(), format!("{sha}  x.img\n"));
        assert!(objects::open(dir.path(), &sha).unwrap().is_some(), "kept in the content store");
        let entry = Entry { kind: "basefs".into(), name: "x".into(), file: "x.img".into(), size, sha256: sha, ..Default::default() };
        record(dir.path(), &[entry.clone()]).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap().find("basefs", "x"), Some(&entry));
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).filter(|n| n.to_string_lossy().ends_with(".tmp")).collect();
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
}
