//! Extended attributes of a tree: neither backhand's squashfs writer nor
//! newc cpio can store them, so every archive writer scans the tree first
//! and refuses (naming the files) rather than dropping them silently.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::tree::walk;

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

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// The names of the xattrs of `path` (not following a symlink). A
/// filesystem without xattr support has none.
pub fn list(path: &Path) -> io::Result<Vec<String>> {
    let c = cpath(path)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `c` is a NUL-terminated path, `buf` is writable for its length.
        let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(io::Error::new(err.kind(), format!("{}: listing xattrs: {err}", path.display()))),
        }
    }
    Ok(buf.split(|&b| b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
}

/// The value of one xattr of `path` (not following a symlink), if set.
pub fn get(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let c = cpath(path)?;
    let cname = CString::new(OsStr::new(name).as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    let mut buf = vec![0u8; 64];
    loop {
        // SAFETY: both strings are NUL-terminated, `buf` is writable for its length.
        let n = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => buf.resize(buf.len() * 16, 0),
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            _ => return Err(io::Error::new(err.kind(), format!("{}: reading xattr {name}: {err}", path.display()))),
        }
    }
}

/// Set an xattr (tests and tools; not following a symlink).
pub fn set(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = cpath(path)?;
    let cname = CString::new(OsStr::new(name).as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    // SAFETY: both strings are NUL-terminated, `value` is readable for its length.
    let rc = unsafe { libc::lsetxattr(c.as_ptr(), cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        let err = io::Error::last_os_error();
        Err(io::Error::new(err.kind(), format!("{}: setting xattr {name}: {err}", path.display())))
    }
}

/// Remove an xattr (not following a symlink); absent is fine.
pub fn remove(path: &Path, name: &str) -> io::Result<()> {
    let c = cpath(path)?;
    let cname = CString::new(OsStr::new(name).as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    // SAFETY: both strings are NUL-terminated.
    let rc = unsafe { libc::lremovexattr(c.as_ptr(), cname.as_ptr()) };
    let err = io::Error::last_os_error();
    match (rc, err.raw_os_error()) {
        (0, _) | (_, Some(libc::ENODATA)) => Ok(()),
        _ => Err(io::Error::new(err.kind(), format!("{}: removing xattr {name}: {err}", path.display()))),
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
        set(&dir.path().join("d/f"), "user.test", b"1").expect("this test needs a filesystem with user xattrs (ext4, tmpfs) for its temp dir");
        let found = scan_xattrs(dir.path()).unwrap();
        assert_eq!(found, vec![(PathBuf::from("d/f"), vec!["user.test".to_string()])]);
        assert_eq!(get(&dir.path().join("d/f"), "user.test").unwrap(), Some(b"1".to_vec()));
        assert_eq!(get(&dir.path().join("plain"), "user.test").unwrap(), None);
    }
}
