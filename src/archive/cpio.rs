//! newc cpio writing (the `cpio` crate) with gzip (flate2): the format the
//! kernel unpacks as an initramfs and the initrd extracts overlays from.

use std::io::{self, Read, Write};
use std::path::PathBuf;

/// What one cpio entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    /// A regular file whose bytes are read from a host path when written.
    File(PathBuf),
    /// A regular file with the given bytes.
    Data(Vec<u8>),
    Symlink(String),
    /// A character device (an overlayfs whiteout is 0/0).
    CharDev {
        major: u32,
        minor: u32,
    },
    BlockDev {
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
}

/// One entry: a path relative to the archive root, without leading `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits (and setuid/setgid/sticky); the type comes from `kind`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
}

impl Entry {
    pub fn new(path: impl Into<String>, kind: EntryKind, mode: u32) -> Self {
        Entry {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }

    fn type_bits(&self) -> u32 {
        match self.kind {
            EntryKind::Dir => libc::S_IFDIR,
            EntryKind::File(_) | EntryKind::Data(_) => libc::S_IFREG,
            EntryKind::Symlink(_) => libc::S_IFLNK,
            EntryKind::CharDev { .. } => libc::S_IFCHR,
            EntryKind::BlockDev { .. } => libc::S_IFBLK,
            EntryKind::Fifo => libc::S_IFIFO,
            EntryKind::Socket => libc::S_IFSOCK,
        }
    }
}

/// Write `entries` in the given order as a newc archive (inode numbers
/// assigned 1, 2, … so the output depends only on the entries), then the
/// trailer. Returns the writer.
pub fn write_newc<W: Write>(entries: impl IntoIterator<Item = Entry>, mut out: W) -> io::Result<W> {
    for (ino, entry) in entries.into_iter().enumerate() {
        let (rmaj, rmin) = match entry.kind {
            EntryKind::CharDev { major, minor } | EntryKind::BlockDev { major, minor } => {
                (major, minor)
            }
            _ => (0, 0),
        };
        let builder = cpio::newc::Builder::new(&entry.path)
            .ino(ino as u32 + 1)
            .mode(entry.type_bits() | (entry.mode & 0o7777))
            .uid(entry.uid)
            .gid(entry.gid)
            .mtime(entry.mtime.min(u32::MAX as u64) as u32)
            .nlink(if entry.kind == EntryKind::Dir { 2 } else { 1 })
            .rdev_major(rmaj)
            .rdev_minor(rmin);
        match &entry.kind {
            EntryKind::File(src) => {
                let mut file = std::fs::File::open(src)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", src.display())))?;
                let len = file.metadata()?.len();
                let len32 = u32::try_from(len).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{}: larger than 4 GiB, newc cannot hold it", src.display()),
                    )
                })?;
                let mut w = builder.write(&mut out, len32);
                let copied = io::copy(&mut (&mut file).take(len), &mut w)?;
                if copied != len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{}: changed while archiving", src.display()),
                    ));
                }
                w.finish()?;
            }
            EntryKind::Data(bytes) => {
                let mut w = builder.write(&mut out, bytes.len() as u32);
                w.write_all(bytes)?;
                w.finish()?;
            }
            EntryKind::Symlink(target) => {
                let mut w = builder.write(&mut out, target.len() as u32);
                w.write_all(target.as_bytes())?;
                w.finish()?;
            }
            _ => {
                builder.write(&mut out, 0).finish()?;
            }
        }
    }
    cpio::newc::trailer(out)
}

/// A sensible gzip level for overlays and initrds: with flate2's zlib-rs
/// backend, level 7 is about GNU `gzip -6` in size (level 6 is ~1.5% bigger
/// and ~1.7× faster); see the README's archive benchmarks.
pub const DEFAULT_GZIP_LEVEL: u32 = 7;

/// Write entries as a gzipped newc archive at the given level (0–9),
/// compressed on all cores (see `archive::gzip`). The gzip header carries no
/// name and no time, so output is deterministic.
pub fn write_newc_gz<W: Write>(
    entries: impl IntoIterator<Item = Entry>,
    out: W,
    level: u32,
) -> io::Result<W> {
    let gz = super::gzip::ParGzWriter::new(out, level)?;
    // The cpio crate writes headers in small pieces: batch them.
    let buffered = io::BufWriter::with_capacity(256 * 1024, gz);
    write_newc(entries, buffered)?
        .into_inner()
        .map_err(|e| e.into_error())?
        .finish()
}

/// One entry read back from an archive (for `inspect` and tests).
#[derive(Debug, Clone)]
pub struct ReadEntry {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub size: u64,
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

/// Read every entry of a (not compressed) newc archive.
pub fn read_newc(mut input: impl Read) -> io::Result<Vec<ReadEntry>> {
    let mut entries = Vec::new();
    loop {
        let mut reader = cpio::NewcReader::new(input)?;
        if reader.entry().is_trailer() {
            break;
        }
        let e = reader.entry();
        let mut item = ReadEntry {
            path: e.name().to_string(),
            mode: e.mode(),
            uid: e.uid(),
            gid: e.gid(),
            mtime: e.mtime() as u64,
            size: e.file_size() as u64,
            rdev: (e.rdev_major(), e.rdev_minor()),
            data: Vec::new(),
        };
        reader.read_to_end(&mut item.data)?;
        entries.push(item);
        input = reader.finish()?;
    }
    Ok(entries)
}

/// Read one newc archive at the start of `buf`, up to and including its
/// trailer: the entries and the number of bytes used (an initrd may hold
/// several archives back to back).
pub fn read_newc_prefix(buf: &[u8]) -> io::Result<(Vec<ReadEntry>, usize)> {
    let mut rest = buf;
    let entries = read_newc(&mut rest)?;
    let used = buf.len() - rest.len();
    // The trailer's name is padded to 4 bytes like every other entry's.
    Ok((entries, ((used + 3) & !3).min(buf.len())))
}

impl ReadEntry {
    /// The entry as `inspect` lists it.
    pub fn listing(&self) -> super::listing::ListEntry {
        let is_link = self.mode & libc::S_IFMT == libc::S_IFLNK;
        super::listing::ListEntry {
            path: self.path.clone(),
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime,
            size: self.size,
            target: is_link.then(|| String::from_utf8_lossy(&self.data).into_owned()),
            rdev: self.rdev,
        }
    }
}

/// Unpack a cpio.gz (as mkimage writes them) into `dest`, keeping modes,
/// ownership, symlinks and whiteout devices.
pub fn extract_gz(archive: &std::path::Path, dest: &std::path::Path) -> anyhow::Result<()> {
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::path::Path;
    let file = fs::File::open(archive)?;
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(file), &mut raw)?;
    fs::create_dir_all(dest)?;
    for e in read_newc(&raw[..])? {
        let rel = Path::new(&e.path);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            anyhow::bail!("{}: unsafe path `{}` in archive", archive.display(), e.path);
        }
        let path = dest.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let perm = e.mode & 0o7777;
        match e.mode & libc::S_IFMT {
            libc::S_IFDIR => fs::create_dir_all(&path)?,
            libc::S_IFREG => fs::write(&path, &e.data)?,
            libc::S_IFLNK => symlink(String::from_utf8_lossy(&e.data).to_string(), &path)?,
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                let kind = nix::sys::stat::SFlag::from_bits_truncate(e.mode & libc::S_IFMT);
                nix::sys::stat::mknod(
                    &path,
                    kind,
                    nix::sys::stat::Mode::from_bits_truncate(perm),
                    nix::sys::stat::makedev(e.rdev.0 as u64, e.rdev.1 as u64),
                )?;
            }
            _ => continue,
        }
        std::os::unix::fs::lchown(&path, Some(e.uid), Some(e.gid))?;
        if e.mode & libc::S_IFMT != libc::S_IFLNK {
            fs::set_permissions(&path, fs::Permissions::from_mode(perm))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Entry> {
        vec![
            Entry::new("etc", EntryKind::Dir, 0o755),
            Entry::new("etc/motd", EntryKind::Data(b"hello\n".to_vec()), 0o644),
            Entry::new("etc/gone", EntryKind::CharDev { major: 0, minor: 0 }, 0),
            Entry::new("bin", EntryKind::Symlink("usr/bin".into()), 0o777),
        ]
    }

    #[test]
    fn round_trip_keeps_types_and_data() {
        let bytes = write_newc(sample(), Vec::new()).unwrap();
        let read = read_newc(&bytes[..]).unwrap();
        let names: Vec<_> = read.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(names, ["etc", "etc/motd", "etc/gone", "bin"]);
        assert_eq!(read[0].mode & libc::S_IFMT, libc::S_IFDIR);
        assert_eq!(read[1].data, b"hello\n");
        assert_eq!(read[2].mode & libc::S_IFMT, libc::S_IFCHR);
        assert_eq!(read[2].rdev, (0, 0));
        assert_eq!(read[3].data, b"usr/bin");
    }

    #[test]
    fn gzip_output_is_deterministic() {
        let a = write_newc_gz(sample(), Vec::new(), 6).unwrap();
        let b = write_newc_gz(sample(), Vec::new(), 6).unwrap();
        assert_eq!(a, b);
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&a[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(read_newc(&raw[..]).unwrap().len(), 4);
    }
}
