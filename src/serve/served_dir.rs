//! The served directory, read-only: turns a request path into an opened file
//! that is provably inside the directory, and knows each file's sha256.
//!
//! Paths are percent-decoded first and then split, so `%2e%2e` and `..%2f`
//! are the same `..` as a literal one; any component starting with `.` is
//! refused (that covers `..`, temp files `.x.tmp` and `.work`/`.cache` dirs).
//! After opening, the real path of the *opened* descriptor is checked to lie
//! under the directory, so a symlink pointing out is refused without a race.
//! The descriptor is what gets served: a rebuild that renames a new file over
//! the name does not change the bytes of a download in progress.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::artifact::objects::is_sha256;
use crate::artifact::{self, Manifest};

/// Why a path cannot be served.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PathError {
    #[error("bad request path")]
    Malformed,
    #[error("path leaves the served directory or names a hidden file")]
    Forbidden,
    #[error("not found")]
    NotFound,
}

impl PathError {
    pub fn status(&self) -> u16 {
        match self {
            PathError::Malformed => 400,
            PathError::Forbidden => 403,
            PathError::NotFound => 404,
        }
    }
}

/// Decode `%XX` escapes. Invalid escapes, NUL bytes and non-UTF-8 results
/// are malformed.
pub fn percent_decode(s: &str) -> Result<String, PathError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::Malformed)?;
            let hex = std::str::from_utf8(hex).map_err(|_| PathError::Malformed)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| PathError::Malformed)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return Err(PathError::Malformed);
    }
    String::from_utf8(out).map_err(|_| PathError::Malformed)
}

/// The relative path a (percent-encoded) request path names, checked
/// component by component. Empty components (`//`) are skipped.
pub fn relative_path(raw: &str) -> Result<PathBuf, PathError> {
    checked_path(&percent_decode(raw)?)
}

/// The relative path a plain (not encoded) name names, e.g. a TFTP file name.
pub fn checked_path(decoded: &str) -> Result<PathBuf, PathError> {
    if decoded.contains('\\') || decoded.contains('\0') {
        return Err(PathError::Forbidden);
    }
    let mut rel = PathBuf::new();
    for part in decoded.split('/').filter(|p| !p.is_empty()) {
        if part.starts_with('.') {
            return Err(PathError::Forbidden);
        }
        rel.push(part);
    }
    if rel.as_os_str().is_empty() {
        return Err(PathError::NotFound);
    }
    Ok(rel)
}

/// An opened file ready to serve.
pub struct Opened {
    pub file: File,
    pub meta: Metadata,
    /// Path relative to the served root, for logs and the sha cache.
    pub rel: PathBuf,
}

/// A root directory that files are served from.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
    /// Its own symlinks may lead out of it (see [`Root::system`]).
    links_out: bool,
}

impl Root {
    pub fn new(dir: &Path) -> io::Result<Root> {
        Ok(Root {
            dir: fs::canonicalize(dir)?,
            links_out: false,
        })
    }

    /// A system directory whose own symlinks may lead out of it, as
    /// Debian's `/usr/lib/ipxe/ipxe.efi` → `/boot/ipxe.efi` does: the
    /// request path is checked as ever, but where the directory's links
    /// lead is its owner's choice.
    pub fn system(dir: &Path) -> io::Result<Root> {
        Ok(Root {
            links_out: true,
            ..Root::new(dir)?
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Open the regular file a request path names.
    pub fn open(&self, raw: &str) -> Result<Opened, PathError> {
        let rel = relative_path(raw)?;
        self.open_rel(rel)
    }

    /// Open the regular file a plain name names (no percent-decoding).
    pub fn open_name(&self, name: &str) -> Result<Opened, PathError> {
        self.open_rel(checked_path(name)?)
    }

    fn open_rel(&self, rel: PathBuf) -> Result<Opened, PathError> {
        let file = File::open(self.dir.join(&rel)).map_err(|e| match e.kind() {
            io::ErrorKind::PermissionDenied => PathError::Forbidden,
            _ => PathError::NotFound,
        })?;
        // Where the descriptor really points (symlinks resolved by the kernel).
        let real = fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&file)
        ))
        .map_err(|_| PathError::Forbidden)?;
        match real.strip_prefix(&self.dir) {
            Ok(inside)
                if inside
                    .components()
                    .any(|c| c.as_os_str().to_string_lossy().starts_with('.')) =>
            {
                return Err(PathError::Forbidden)
            }
            Ok(_) => {}
            Err(_) if self.links_out => {}
            Err(_) => return Err(PathError::Forbidden),
        }
        let meta = file.metadata().map_err(|_| PathError::NotFound)?;
        if !meta.is_file() {
            return Err(PathError::NotFound);
        }
        Ok(Opened { file, meta, rel })
    }
}

/// Identity of one version of a file: a renamed-over file is a new inode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Version {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Version {
    fn of(meta: &Metadata) -> Version {
        Version {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

/// sha256 of served files: from `NAME.sha256` or `manifest.json` when they
/// are at least as new as the file, else computed once per file version
/// (concurrent first requests wait for one computation).
#[derive(Default)]
pub struct ShaCache {
    entries: Mutex<HashMap<Version, Arc<OnceLock<Option<String>>>>>,
}

impl ShaCache {
    /// The sha256 of an opened file (None if it cannot be read).
    pub fn sha256(&self, root: &Root, opened: &Opened) -> Option<String> {
        let version = Version::of(&opened.meta);
        let cell = {
            let mut entries = self.entries.lock().ok()?;
            if entries.len() > 4096 {
                entries.clear();
            }
            entries.entry(version).or_default().clone()
        };
        cell.get_or_init(|| {
            recorded_sha(root, opened).or_else(|| {
                let mut file = opened.file.try_clone().ok()?;
                artifact::sha256_reader(&mut file).ok().map(|(_, sha)| sha)
            })
        })
        .clone()
    }
}

/// A sha256 recorded beside the file (sidecar, then manifest) after the file
/// was put in place, so a stale record for a previous version is never
/// trusted.
fn recorded_sha(root: &Root, opened: &Opened) -> Option<String> {
    let path = root.dir().join(&opened.rel);
    let name = path.file_name()?.to_string_lossy().into_owned();
    // The file's ctime is when it was renamed into place; a record written
    // before that belongs to an older version.
    let placed = std::time::UNIX_EPOCH
        + std::time::Duration::new(
            opened.meta.ctime().max(0) as u64,
            opened.meta.ctime_nsec().clamp(0, 999_999_999) as u32,
        );
    let newer = |p: &Path| {
        fs::metadata(p)
            .ok()
            .and_then(|m| m.modified().ok())
            .is_some_and(|t| t >= placed)
    };
    let sidecar = path.with_file_name(format!("{name}.sha256"));
    if newer(&sidecar) {
        if let Ok(text) = fs::read_to_string(&sidecar) {
            if let Some(sha) = text.split_whitespace().next().filter(|s| is_sha256(s)) {
                return Some(sha.to_string());
            }
        }
    }
    let manifest_path = path.with_file_name(artifact::MANIFEST);
    if newer(&manifest_path) {
        let manifest = Manifest::load(path.parent()?).ok()?;
        let entry = manifest.artifacts.get(&name)?;
        if entry.size == opened.meta.size() && is_sha256(&entry.sha256) {
            return Some(entry.sha256.clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_forms_are_refused() {
        for bad in [
            "/../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/a/..%2f..%2fetc",
            "/.work/x",
            "/.x.tmp",
            "/%2E%2e",
            "/a\\..\\b",
        ] {
            assert_eq!(relative_path(bad), Err(PathError::Forbidden), "{bad}");
        }
        assert_eq!(relative_path("/%zz"), Err(PathError::Malformed));
        assert_eq!(relative_path("/a%00b"), Err(PathError::Malformed));
        assert_eq!(
            relative_path("//etc//passwd").unwrap(),
            PathBuf::from("etc/passwd")
        );
        assert_eq!(relative_path("/a%20b").unwrap(), PathBuf::from("a b"));
    }

    #[test]
    fn symlink_out_is_refused_and_sidecar_sha_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
        fs::write(dir.path().join("f"), b"abc").unwrap();
        let root = Root::new(dir.path()).unwrap();
        assert_eq!(root.open("/link").err(), Some(PathError::Forbidden));
        // A system dir's own links may lead out; its request paths may not.
        let system = Root::system(dir.path()).unwrap();
        assert_eq!(system.open("/link").unwrap().meta.len(), 1);
        assert_eq!(system.open("/../link").err(), Some(PathError::Forbidden));
        let cache = ShaCache::default();
        let opened = root.open("/f").unwrap();
        let computed = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(cache.sha256(&root, &opened).as_deref(), Some(computed));
        let fake = "0".repeat(64);
        fs::write(dir.path().join("f.sha256"), format!("{fake}  f\n")).unwrap();
        fs::write(dir.path().join("g"), b"abc").unwrap();
        fs::write(dir.path().join("g.sha256"), format!("{fake}  g\n")).unwrap();
        let g = root.open("/g").unwrap();
        assert_eq!(cache.sha256(&root, &g), Some(fake));
    }
}
