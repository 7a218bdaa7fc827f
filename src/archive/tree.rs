//! A directory tree as sorted archive entries: the tree → cpio entry list
//! for overlays and the initrd, including overlayfs upper-dir semantics (whiteouts kept, opaque
//! directories expanded into explicit whiteouts, build-only files excluded).

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::cpio::{Entry, EntryKind};
use super::error::{ArchiveError, XATTR_REPORT_LIMIT};
use super::walk::{path_pattern_matches, walk_filtered, WalkItem};
use super::xattr;

/// How a tree is turned into cpio entries.
#[derive(Debug, Clone, Default)]
pub struct TreeOptions {
    /// mtimes later than this are clamped to it.
    pub source_date_epoch: u64,
    /// Paths (relative, `/`-separated, each component a glob) left out with
    /// everything under them: `var/lib/apt/lists`, `var/log/*`…
    pub exclude: Vec<String>,
    /// `Some(lowers)`: the tree is an overlayfs upper dir over these lower
    /// dirs (top-most first). Whiteouts are kept; an opaque directory is
    /// written as a plain directory plus a whiteout for every name the lower
    /// dirs have there, so unpacking onto a tmpfs upper reproduces the view.
    pub overlay_lowers: Option<Vec<PathBuf>>,
}

/// Overlay xattrs that only carry overlayfs's own bookkeeping; safe to drop.
const OVERLAY_BOOKKEEPING: &[&str] = &["origin", "impure", "nlink", "uuid"];

/// The cpio entries for `root` (not including the root itself), sorted so
/// every directory precedes its contents, ownership and modes as in the
/// tree, mtimes clamped.
pub fn tree_entries(root: &Path, opts: &TreeOptions) -> Result<Vec<Entry>, ArchiveError> {
    let excluded = |rel: &Path| {
        opts.exclude
            .iter()
            .any(|p| path_pattern_matches(p, &rel.to_string_lossy()))
    };
    let items = walk_filtered(root, &excluded).map_err(ArchiveError::io(root))?;
    let clamp = |m: i64| (m.max(0) as u64).min(opts.source_date_epoch);
    let mut entries = Vec::with_capacity(items.len());
    let mut refused: Vec<(PathBuf, Vec<String>)> = Vec::new();
    let mut refused_count = 0;
    let mut overlay_unsupported = false;
    for item in items.iter().skip(1) {
        let rel = item.rel.to_str().ok_or_else(|| ArchiveError::Io {
            path: item.abs.clone(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                "file name is not UTF-8; cpio entries here must be",
            ),
        })?;
        let (opaque, bad, unsupported) = xattrs_of(item, opts)?;
        overlay_unsupported |= unsupported;
        if !bad.is_empty() {
            refused_count += 1;
            if refused.len() < XATTR_REPORT_LIMIT {
                refused.push((item.rel.clone(), bad));
            }
        }
        let kind = entry_kind(item)?;
        let meta = &item.meta;
        entries.push(Entry {
            path: rel.to_string(),
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: clamp(meta.mtime()),
        });
        if opaque {
            if let Some(lowers) = &opts.overlay_lowers {
                for name in hidden_names(&item.abs, &item.rel, lowers)? {
                    let path = format!("{rel}/{name}");
                    if !excluded(Path::new(&path)) {
                        let mut w = Entry::new(path, EntryKind::CharDev { major: 0, minor: 0 }, 0);
                        w.mtime = clamp(meta.mtime());
                        entries.push(w);
                    }
                }
            }
        }
    }
    if refused_count > 0 {
        let fix = if overlay_unsupported {
            "overlayfs redirect/metacopy/xwhiteout attributes cannot be unpacked onto a plain upper dir: mount the build overlay with redirect_dir=off,metacopy=off; remove other attributes in the role (e.g. `setcap -r FILE`, and `chmod u+s` instead of a capability)".to_string()
        } else {
            "remove them in the role that sets them (e.g. `setcap -r FILE`, and `chmod u+s` instead of a capability), or ship the files in the squashfs basefs with `squashfs.writer: mksquashfs`".to_string()
        };
        return Err(ArchiveError::Xattrs {
            root: root.to_path_buf(),
            format: "a cpio archive",
            count: refused_count,
            files: refused,
            fix,
        });
    }
    entries.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    Ok(entries)
}

/// What an entry's extended attributes say: an opaque overlay dir (its
/// lowers' names to be hidden), the attributes a cpio cannot carry, and
/// whether one of those is overlayfs's own (redirect, metacopy...).
fn xattrs_of(
    item: &WalkItem,
    opts: &TreeOptions,
) -> Result<(bool, Vec<String>, bool), ArchiveError> {
    let mut unsupported = false;
    let mut opaque = false;
    let mut bad = Vec::new();
    for name in xattr::list(&item.abs).map_err(ArchiveError::io(&item.abs))? {
        let overlay_key = name
            .strip_prefix("trusted.overlay.")
            .or_else(|| name.strip_prefix("user.overlay."));
        match (overlay_key, &opts.overlay_lowers) {
            (Some("opaque"), Some(_)) if item.meta.is_dir() => {
                match xattr::get(&item.abs, &name)
                    .map_err(ArchiveError::io(&item.abs))?
                    .as_deref()
                {
                    Some(b"y") => opaque = true,
                    _ => {
                        unsupported = true;
                        bad.push(name);
                    }
                }
            }
            (Some(key), Some(_)) if OVERLAY_BOOKKEEPING.contains(&key) => {}
            (Some(_), Some(_)) => {
                unsupported = true;
                bad.push(name);
            }
            _ => bad.push(name),
        }
    }
    Ok((opaque, bad, unsupported))
}

/// [`tree_entries`] written as a gzipped newc archive at `level` (0–9) into
/// `out` (from its current position): an overlay or an initrd from a tree.
pub fn write_tree_gz(
    root: &Path,
    opts: &TreeOptions,
    out: &mut std::fs::File,
    level: u32,
) -> Result<(), ArchiveError> {
    let entries = tree_entries(root, opts)?;
    let writer = io::BufWriter::with_capacity(1 << 20, out);
    super::cpio::write_newc_gz(entries, writer, level)
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .map_err(ArchiveError::io(root))?;
    Ok(())
}

fn entry_kind(item: &WalkItem) -> Result<EntryKind, ArchiveError> {
    let ft = item.meta.file_type();
    let rdev = item.meta.rdev();
    let dev = || (libc::major(rdev), libc::minor(rdev));
    Ok(if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File(item.abs.clone())
    } else if ft.is_symlink() {
        let target = fs::read_link(&item.abs).map_err(ArchiveError::io(&item.abs))?;
        let target = target.to_str().ok_or_else(|| ArchiveError::Io {
            path: item.abs.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, "symlink target is not UTF-8"),
        })?;
        EntryKind::Symlink(target.to_string())
    } else if ft.is_char_device() {
        let (major, minor) = dev();
        EntryKind::CharDev { major, minor }
    } else if ft.is_block_device() {
        let (major, minor) = dev();
        EntryKind::BlockDev { major, minor }
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else {
        EntryKind::Socket
    })
}

/// Names that the lower dirs have at `rel` and the upper dir `abs` does not:
/// what an opaque `abs` hides. Paths through a lower's symlink are not
/// followed (they would leave the lower tree).
fn hidden_names(
    abs: &Path,
    rel: &Path,
    lowers: &[PathBuf],
) -> Result<BTreeSet<String>, ArchiveError> {
    let upper: BTreeSet<_> = fs::read_dir(abs)
        .map_err(ArchiveError::io(abs))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    let mut hidden = BTreeSet::new();
    for lower in lowers {
        let Some(dir) = real_dir_in(lower, rel) else {
            continue;
        };
        for entry in fs::read_dir(&dir).map_err(ArchiveError::io(&dir))? {
            let name = entry.map_err(ArchiveError::io(&dir))?.file_name();
            if upper.contains(&name) {
                continue;
            }
            let name = name.to_str().ok_or_else(|| ArchiveError::Io {
                path: dir.join(&name),
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    "file name is not UTF-8; cpio entries here must be",
                ),
            })?;
            hidden.insert(name.to_string());
        }
    }
    Ok(hidden)
}

/// `lower/rel` if every component of it is a real directory (no symlinks).
fn real_dir_in(lower: &Path, rel: &Path) -> Option<PathBuf> {
    let mut dir = lower.to_path_buf();
    if !fs::symlink_metadata(&dir).ok()?.is_dir() {
        return None;
    }
    for comp in rel.components() {
        dir.push(comp);
        if !fs::symlink_metadata(&dir).ok()?.is_dir() {
            return None;
        }
    }
    Some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.path.as_str()).collect()
    }

    fn whiteout(path: &Path) {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
            .expect("making a whiteout (0/0 char device) needs root: run the tests as root");
    }

    #[test]
    fn sorted_clamped_and_excluded() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in [
            "var/log/apt",
            "var/lib/apt/lists",
            "etc/apt/apt.conf.d",
            "tmp",
            "usr/bin",
        ] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        for f in [
            "var/log/apt/history.log",
            "var/lib/apt/lists/x",
            "etc/apt/apt.conf.d/01proxy",
            "etc/apt/apt.conf.d/70debconf",
            "etc/resolv.conf",
            "tmp/junk",
            "usr/bin/b",
            "usr/bin/a",
            "usr/bin/B",
        ] {
            fs::write(r.join(f), f).unwrap();
        }
        let opts = TreeOptions {
            source_date_epoch: 1000,
            exclude: [
                "var/lib/apt/lists",
                "etc/apt/apt.conf.d/*proxy*",
                "etc/resolv.conf",
                "tmp",
                "var/log/*",
            ]
            .map(String::from)
            .to_vec(),
            overlay_lowers: None,
        };
        let entries = tree_entries(r, &opts).unwrap();
        assert_eq!(
            paths(&entries),
            [
                "etc",
                "etc/apt",
                "etc/apt/apt.conf.d",
                "etc/apt/apt.conf.d/70debconf",
                "usr",
                "usr/bin",
                "usr/bin/B",
                "usr/bin/a",
                "usr/bin/b",
                "var",
                "var/lib",
                "var/lib/apt",
                "var/log"
            ]
        );
        assert!(entries.iter().all(|e| e.mtime == 1000));
    }

    #[test]
    fn opaque_dir_becomes_whiteouts_for_lower_names() {
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper) = (dir.path().join("lower"), dir.path().join("upper"));
        for f in [
            "etc/app/old1",
            "etc/app/old2",
            "etc/app/keep",
            "etc/app/sub/deep",
            "etc/other",
        ] {
            fs::create_dir_all(lower.join(f).parent().unwrap()).unwrap();
            fs::write(lower.join(f), b"lower").unwrap();
        }
        fs::create_dir_all(upper.join("etc/app")).unwrap();
        fs::write(upper.join("etc/app/keep"), b"upper").unwrap();
        fs::write(upper.join("etc/app/new"), b"upper").unwrap();
        xattr::set(&upper.join("etc/app"), "user.overlay.opaque", b"y")
            .expect("user xattrs needed on the temp dir's filesystem");
        whiteout(&upper.join("etc/other"));
        let opts = TreeOptions {
            source_date_epoch: 1,
            exclude: vec![],
            overlay_lowers: Some(vec![lower.clone()]),
        };
        let entries = tree_entries(&upper, &opts).unwrap();
        assert_eq!(
            paths(&entries),
            [
                "etc",
                "etc/app",
                "etc/app/keep",
                "etc/app/new",
                "etc/app/old1",
                "etc/app/old2",
                "etc/app/sub",
                "etc/other"
            ]
        );
        let wo = |p: &str| entries.iter().find(|e| e.path == p).map(|e| e.kind.clone());
        for p in ["etc/app/old1", "etc/app/old2", "etc/app/sub", "etc/other"] {
            assert_eq!(
                wo(p),
                Some(EntryKind::CharDev { major: 0, minor: 0 }),
                "{p}"
            );
        }
        assert!(matches!(wo("etc/app/keep"), Some(EntryKind::File(_))));
        // Without overlay mode the same xattr is refused, by name.
        let err = tree_entries(
            &upper,
            &TreeOptions {
                overlay_lowers: None,
                ..opts
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("etc/app") && err.contains("user.overlay.opaque"),
            "{err}"
        );
    }

    #[test]
    fn write_tree_gz_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path().join("t");
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::write(r.join("etc/motd"), b"hi\n").unwrap();
        std::os::unix::fs::symlink("../etc/motd", r.join("etc/link")).unwrap();
        let mut out = tempfile::tempfile().unwrap();
        write_tree_gz(
            &r,
            &TreeOptions {
                source_date_epoch: 5,
                ..Default::default()
            },
            &mut out,
            9,
        )
        .unwrap();
        use std::io::{Read, Seek};
        out.rewind().unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(out)
            .read_to_end(&mut raw)
            .unwrap();
        let back = crate::archive::cpio::read_newc(&raw[..]).unwrap();
        let got: Vec<_> = back
            .iter()
            .map(|e| (e.path.as_str(), e.data.as_slice(), e.mtime))
            .collect();
        assert_eq!(
            got,
            [
                ("etc", &b""[..], 5),
                ("etc/link", &b"../etc/motd"[..], 5),
                ("etc/motd", &b"hi\n"[..], 5)
            ]
        );
    }

    #[test]
    fn other_xattrs_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"x").unwrap();
        xattr::set(&dir.path().join("f"), "user.test", b"1")
            .expect("user xattrs needed on the temp dir's filesystem");
        let opts = TreeOptions {
            overlay_lowers: Some(vec![]),
            ..Default::default()
        };
        let err = tree_entries(dir.path(), &opts).unwrap_err().to_string();
        assert!(
            err.contains("f (user.test)") && err.contains("setcap -r"),
            "{err}"
        );
    }
}
