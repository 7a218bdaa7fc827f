//! One entry of an archive's listing (what `inspect` prints), and `ls -l`'s
//! mode string.

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
