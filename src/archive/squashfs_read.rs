//! Reading squashfs images with backhand: list entries (`inspect`), read one
//! file, and extract a subtree (the initrd build takes the kernel and its
//! modules out of the basefs this way). Paths inside the image resolve
//! through the image's own symlinks (`/lib` → `usr/lib`), never the host's.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use backhand::{FilesystemReader, InnerNode, Node, SquashfsFileReader};

use super::error::ArchiveError;
use super::listing::ListEntry;
use super::walk::glob_match;

/// Maximum symlinks followed while resolving one path (as Linux's 40).
const MAX_HOPS: usize = 40;

/// An opened image: the reader and an index from path to node.
pub(crate) struct Image<'b> {
    pub path: std::path::PathBuf,
    pub fs: FilesystemReader<'b>,
    index: HashMap<String, usize>,
}

fn rel_of(node: &Node<SquashfsFileReader>) -> String {
    node.fullpath
        .to_string_lossy()
        .trim_start_matches('/')
        .to_string()
}

pub(crate) fn decode_dev(dev: u32) -> (u32, u32) {
    ((dev & 0xfff00) >> 8, (dev & 0xff) | ((dev >> 12) & 0xfff00))
}

impl Image<'_> {
    pub fn open(path: &Path) -> Result<Self, ArchiveError> {
        let file = File::open(path).map_err(ArchiveError::io(path))?;
        let fs = FilesystemReader::from_reader(BufReader::new(file)).map_err(|e| {
            ArchiveError::Squashfs {
                path: path.to_path_buf(),
                what: format!(
                    "not a readable squashfs v4 image: {}",
                    super::error::bh_text(&e)
                ),
            }
        })?;
        let index = fs
            .root
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (rel_of(n), i))
            .collect();
        Ok(Image {
            path: path.to_path_buf(),
            fs,
            index,
        })
    }

    fn node(&self, rel: &str) -> Option<&Node<SquashfsFileReader>> {
        self.index.get(rel).map(|&i| &self.fs.root.nodes[i])
    }

    /// Resolve `path` inside the image through its symlinks: the real path of
    /// an existing node, or None.
    fn resolve(&self, path: &str, follow_last: bool) -> Option<String> {
        let mut todo: VecDeque<String> = path.split('/').map(str::to_string).collect();
        let mut cur: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(comp) = todo.pop_front() {
            match comp.as_str() {
                "" | "." => continue,
                ".." => {
                    cur.pop();
                    continue;
                }
                _ => cur.push(comp),
            }
            let node = self.node(&cur.join("/"))?;
            if let InnerNode::Symlink(link) = &node.inner {
                if follow_last || !todo.is_empty() {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return None;
                    }
                    cur.pop();
                    let target = link.link.to_string_lossy();
                    if target.starts_with('/') {
                        cur.clear();
                    }
                    for c in target.split('/').rev() {
                        todo.push_front(c.to_string());
                    }
                }
            }
        }
        Some(cur.join("/"))
    }

    fn entry(&self, node: &Node<SquashfsFileReader>) -> ListEntry {
        let h = node.header;
        let (kind, size, target, rdev) = match &node.inner {
            InnerNode::File(f) => (libc::S_IFREG, f.file_len() as u64, None, (0, 0)),
            InnerNode::Symlink(s) => {
                let t = s.link.to_string_lossy().into_owned();
                (libc::S_IFLNK, t.len() as u64, Some(t), (0, 0))
            }
            InnerNode::Dir(_) => (libc::S_IFDIR, 0, None, (0, 0)),
            InnerNode::CharacterDevice(d) => (libc::S_IFCHR, 0, None, decode_dev(d.device_number)),
            InnerNode::BlockDevice(d) => (libc::S_IFBLK, 0, None, decode_dev(d.device_number)),
            InnerNode::NamedPipe => (libc::S_IFIFO, 0, None, (0, 0)),
            InnerNode::Socket => (libc::S_IFSOCK, 0, None, (0, 0)),
        };
        let rel = rel_of(node);
        ListEntry {
            path: if rel.is_empty() { ".".into() } else { rel },
            mode: kind | u32::from(h.permissions & 0o7777),
            uid: h.uid,
            gid: h.gid,
            mtime: u64::from(h.mtime),
            size,
            target,
            rdev,
        }
    }

    fn read(
        &self,
        node: &Node<SquashfsFileReader>,
        out: &mut impl io::Write,
    ) -> Result<u64, ArchiveError> {
        let InnerNode::File(f) = &node.inner else {
            return Err(ArchiveError::Squashfs {
                path: self.path.clone(),
                what: format!("/{} is not a regular file", rel_of(node)),
            });
        };
        let mut reader = self
            .fs
            .file(f)
            .reader_checked()
            .map_err(|e| ArchiveError::Squashfs {
                path: self.path.clone(),
                what: format!("/{}: {}", rel_of(node), super::error::bh_text(&e)),
            })?;
        io::copy(&mut reader, out).map_err(|e| ArchiveError::Squashfs {
            path: self.path.clone(),
            what: format!("/{}: {e}", rel_of(node)),
        })
    }
}

/// Every entry of a squashfs image (root first, as `.`), in image order.
pub fn read_entries(path: &Path) -> Result<Vec<ListEntry>, ArchiveError> {
    let image = Image::open(path)?;
    Ok(image.fs.files().map(|n| image.entry(n)).collect())
}

/// The contents of the regular file `inner` (symlinks in the image followed).
pub fn read_file(path: &Path, inner: &str) -> Result<Vec<u8>, ArchiveError> {
    let image = Image::open(path)?;
    let not_found = || ArchiveError::NotFound {
        image: path.to_path_buf(),
        pattern: inner.to_string(),
    };
    let real = image.resolve(inner, true).ok_or_else(not_found)?;
    let node = image.node(&real).ok_or_else(not_found)?;
    let mut out = Vec::new();
    image.read(node, &mut out)?;
    Ok(out)
}

/// Extract what `pattern` names (an absolute path inside the image whose
/// components may be globs: `/boot/vmlinuz-*`, `/lib/modules/6.1.0-18-amd64`)
/// with everything under it, into `dest` at the same path (`dest/boot/…`).
/// Symlinks along the pattern (and a symlink the pattern itself names) are
/// followed inside the image; symlinks inside an extracted subtree are
/// recreated as symlinks. Returns the matched paths; none is an error.
pub fn extract(image: &Path, pattern: &str, dest: &Path) -> Result<Vec<String>, ArchiveError> {
    extract_from(&Image::open(image)?, pattern, dest)
}

/// `extract` for several patterns, reading the image's tables once. A
/// pattern that matches nothing is skipped; the matches are returned.
pub fn extract_many(
    image: &Path,
    patterns: &[&str],
    dest: &Path,
) -> Result<Vec<String>, ArchiveError> {
    let img = Image::open(image)?;
    let mut found = Vec::new();
    for pattern in patterns {
        match extract_from(&img, pattern, dest) {
            Ok(m) => found.extend(m),
            Err(ArchiveError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

/// The paths (relative, without a leading `/`) of every entry of a squashfs image.
pub fn list_paths(image: &Path) -> Result<Vec<String>, ArchiveError> {
    let img = Image::open(image)?;
    Ok(img
        .fs
        .files()
        .map(rel_of)
        .filter(|p| !p.is_empty() && p != ".")
        .collect())
}

fn extract_from(img: &Image, pattern: &str, dest: &Path) -> Result<Vec<String>, ArchiveError> {
    let image = &img.path;
    let comps: Vec<&str> = pattern
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let current = glob_walk(img, &comps);
    if current.is_empty() || comps.is_empty() {
        return Err(ArchiveError::NotFound {
            image: image.to_path_buf(),
            pattern: pattern.to_string(),
        });
    }
    let mut dirs = Vec::new();
    for (asked, real) in &current {
        let under = format!("{real}/");
        for node in img.fs.files() {
            let rel = rel_of(node);
            let suffix = if rel == *real {
                ""
            } else if let Some(s) = rel.strip_prefix(&under) {
                s
            } else {
                continue;
            };
            let out = if suffix.is_empty() {
                dest.join(asked)
            } else {
                dest.join(asked).join(suffix)
            };
            write_node(img, node, &out, &mut dirs)?;
        }
    }
    // Directory modes and times last, deepest first, so their contents could be written.
    for (path, entry) in dirs.iter().rev() {
        finish_attrs(path, entry)?;
    }
    Ok(current
        .into_iter()
        .map(|(asked, _)| format!("/{asked}"))
        .collect())
}

/// The paths that match the pattern's components one level at a time, as
/// (path as asked, real path in the image): every component but the last
/// matches directories only (symlinks followed).
fn glob_walk(img: &Image, comps: &[&str]) -> Vec<(String, String)> {
    let mut current = vec![(String::new(), String::new())];
    for (i, pat) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let mut next = Vec::new();
        for (asked, real) in &current {
            let prefix = if real.is_empty() {
                String::new()
            } else {
                format!("{real}/")
            };
            let mut names: Vec<String> = img
                .index
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .filter(|n| !n.is_empty() && !n.contains('/'))
                .filter(|n| glob_match(pat, n))
                .map(str::to_string)
                .collect();
            names.sort();
            for name in names {
                let child_asked = if asked.is_empty() {
                    name.clone()
                } else {
                    format!("{asked}/{name}")
                };
                if let Some(child_real) = img.resolve(&format!("{prefix}{name}"), true) {
                    if last
                        || matches!(
                            img.node(&child_real).map(|n| &n.inner),
                            Some(InnerNode::Dir(_))
                        )
                    {
                        next.push((child_asked, child_real));
                    }
                }
            }
        }
        current = next;
    }
    current
}

fn write_node(
    img: &Image,
    node: &Node<SquashfsFileReader>,
    out: &Path,
    dirs: &mut Vec<(std::path::PathBuf, ListEntry)>,
) -> Result<(), ArchiveError> {
    let entry = img.entry(node);
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent).map_err(ArchiveError::io(parent))?;
    }
    if entry.file_type() != libc::S_IFDIR {
        match fs::symlink_metadata(out) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(out).map_err(ArchiveError::io(out))?,
            Ok(_) => fs::remove_file(out).map_err(ArchiveError::io(out))?,
            Err(_) => {}
        }
    }
    let perm = fs::Permissions::from_mode(entry.mode & 0o7777);
    use nix::sys::stat::{mknod, Mode, SFlag};
    let mknod_as = |kind: SFlag| {
        let dev = nix::sys::stat::makedev(u64::from(entry.rdev.0), u64::from(entry.rdev.1));
        mknod(
            out,
            kind,
            Mode::from_bits_truncate(entry.mode & 0o7777),
            dev,
        )
        .map_err(|e| ArchiveError::io(out)(e.into()))
    };
    match entry.file_type() {
        libc::S_IFDIR => {
            fs::create_dir_all(out).map_err(ArchiveError::io(out))?;
            dirs.push((out.to_path_buf(), entry));
            return Ok(());
        }
        libc::S_IFREG => {
            let mut file = File::create(out).map_err(ArchiveError::io(out))?;
            img.read(node, &mut file)?;
            file.set_permissions(perm).map_err(ArchiveError::io(out))?;
        }
        libc::S_IFLNK => {
            let target = entry.target.clone().unwrap_or_default();
            std::os::unix::fs::symlink(target, out).map_err(ArchiveError::io(out))?;
        }
        libc::S_IFCHR => mknod_as(SFlag::S_IFCHR)?,
        libc::S_IFBLK => mknod_as(SFlag::S_IFBLK)?,
        libc::S_IFIFO => mknod_as(SFlag::S_IFIFO)?,
        _ => return Ok(()), // a socket is only meaningful while its server runs
    }
    finish_attrs(out, &entry)
}

/// Owner (when running as root), mode and mtime of an extracted entry.
fn finish_attrs(path: &Path, entry: &ListEntry) -> Result<(), ArchiveError> {
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(path, Some(entry.uid), Some(entry.gid))
            .map_err(ArchiveError::io(path))?;
    }
    if entry.file_type() != libc::S_IFLNK {
        fs::set_permissions(path, fs::Permissions::from_mode(entry.mode & 0o7777))
            .map_err(ArchiveError::io(path))?;
    }
    let t = nix::sys::time::TimeSpec::new(entry.mtime as i64, 0);
    nix::sys::stat::utimensat(
        None,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| ArchiveError::io(path)(e.into()))
}
