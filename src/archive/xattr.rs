//! Extended attributes of a tree: neither backhand's squashfs writer nor
//! newc cpio can store them, so every archive writer scans the tree first
//! and refuses (naming the files) rather than dropping them silently.
//! Thin wrappers over the `xattr` crate that never follow symlinks, treat a
//! filesystem without xattr support as having none, and name the path in
//! every error.

use std::io;
use std::path::{Path, PathBuf};

use super::walk::walk;

/// Every file under `root` (including `root`, reported as `.`) that carries
/// extended attributes, with their names; paths are relative to `root`, in
/// archive order. Symlinks are not followed.
pub fn scan_xattrs(root: &Path) -> io::Result<Vec<(PathBuf, Vec<String>)>> {
    let mut found = Vec::new();
    for item in walk(root)? {
        let names = list(&item.abs)?;
        if !names.is_empty() {
            found.push((item.rel_path(), names));
        }
    }
    Ok(found)
}

fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOTSUP)
}

fn named(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {what}: {e}", path.display()))
}

/// The names of the xattrs of `path` (not following a symlink).
pub fn list(path: &Path) -> io::Result<Vec<String>> {
    match xattr::list(path) {
        Ok(names) => Ok(names.map(|n| n.to_string_lossy().into_owned()).collect()),
        Err(e) if unsupported(&e) => Ok(Vec::new()),
        Err(e) => Err(named(path, "listing xattrs", e)),
    }
}

/// The value of one xattr of `path` (not following a symlink), if set.
pub fn get(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    match xattr::get(path, name) {
        Ok(value) => Ok(value),
        Err(e) if unsupported(&e) => Ok(None),
        Err(e) => Err(named(path, &format!("reading xattr {name}"), e)),
    }
}

/// Set an xattr (tests and tools; not following a symlink).
pub fn set(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    xattr::set(path, name, value).map_err(|e| named(path, &format!("setting xattr {name}"), e))
}

/// Remove an xattr (not following a symlink); absent is fine.
pub fn remove(path: &Path, name: &str) -> io::Result<()> {
    match xattr::remove(path, name) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) || unsupported(&e) => Ok(()),
        Err(e) => Err(named(path, &format!("removing xattr {name}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_user_xattr() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), b"x").unwrap();
        std::fs::write(dir.path().join("plain"), b"y").unwrap();
        set(&dir.path().join("d/f"), "user.test", b"1")
            .expect("this test needs a filesystem with user xattrs (ext4, tmpfs) for its temp dir");
        let found = scan_xattrs(dir.path()).unwrap();
        assert_eq!(
            found,
            vec![(PathBuf::from("d/f"), vec!["user.test".to_string()])]
        );
        assert_eq!(
            get(&dir.path().join("d/f"), "user.test").unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(get(&dir.path().join("plain"), "user.test").unwrap(), None);
    }
}
