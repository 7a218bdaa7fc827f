//! Archive writers and readers: squashfs for the basefs, newc cpio (gzipped)
//! for overlays and the initrd. All output is deterministic: sorted entries,
//! ownership as in the tree, mtimes clamped to SOURCE_DATE_EPOCH.
//!
//! This file holds what the formats share: the error type and the entry
//! listing that `inspect` prints; `walk` has the one tree walker and glob
//! matcher that exclude lists, cleanup and extraction patterns use.

pub mod cpio;
pub mod gzip;
pub mod squashfs;
mod squashfs_par;
pub mod squashfs_read;
pub mod tree;
pub mod verity;
pub mod walk;
pub mod xattr;

use std::io;
use std::path::PathBuf;

pub use squashfs::{write_tree, Compressor, SquashfsOptions, SquashfsWriter};
pub use squashfs_read::{extract, read_entries, read_file};
pub use tree::{tree_entries, write_tree_gz, TreeOptions};
pub use walk::{glob_match, path_pattern_matches, walk, WalkItem};
pub use xattr::scan_xattrs;

/// Files carrying xattrs that an archive cannot hold (at most this many are
/// named in an error; the count says how many there were).
pub const XATTR_REPORT_LIMIT: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{count} file(s) in {} carry extended attributes, which {format} cannot hold: {}; {fix}",
        root.display(), describe_xattrs(files))]
    Xattrs {
        root: PathBuf,
        format: &'static str,
        count: usize,
        /// The first few files and their attribute names.
        files: Vec<(PathBuf, Vec<String>)>,
        fix: String,
    },
    #[error("{}: {what}", path.display())]
    Squashfs { path: PathBuf, what: String },
    #[error("invalid squashfs options: {0}")]
    Options(String),
    #[error("{}: no entry matches `{pattern}`", image.display())]
    NotFound { image: PathBuf, pattern: String },
    #[error(transparent)]
    Exec(#[from] crate::exec::ExecError),
}

impl ArchiveError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ArchiveError {
        let path = path.into();
        move |source| ArchiveError::Io { path, source }
    }
}

/// backhand's error text (its Display is empty without the `error-strings`
/// feature, so fall back to the variant name).
pub(crate) fn bh_text(e: &backhand::BackhandError) -> String {
    let s = e.to_string();
    if s.trim().is_empty() {
        format!("{e:?}")
    } else {
        s
    }
}

fn describe_xattrs(files: &[(PathBuf, Vec<String>)]) -> String {
    files
        .iter()
        .map(|(p, names)| format!("{} ({})", p.display(), names.join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One entry of an archive as `inspect` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// Path relative to the archive root, without leading `/`; the root is `.`.
    pub path: String,
    /// Full `st_mode`: type bits and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    /// File size in bytes (0 for everything but regular files and symlinks).
    pub size: u64,
    /// Symlink target.
    pub target: Option<String>,
    /// Device numbers of a character or block device.
    pub rdev: (u32, u32),
}

impl ListEntry {
    pub fn file_type(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    /// An overlayfs whiteout: a 0/0 character device.
    pub fn is_whiteout(&self) -> bool {
        self.file_type() == libc::S_IFCHR && self.rdev == (0, 0)
    }
}

/// `ls -l` style mode: `drwxr-xr-x`, `crw-------`, `-rwsr-xr-x`…
pub fn mode_string(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        libc::S_IFREG => '-',
        _ => '?',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    for (shift, special, lower, upper) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => lower,
            (false, true) => upper,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(mode_string(libc::S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(libc::S_IFREG | 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(libc::S_IFDIR | 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(libc::S_IFCHR), "c---------");
        assert_eq!(mode_string(libc::S_IFLNK | 0o777), "lrwxrwxrwx");
    }
}
