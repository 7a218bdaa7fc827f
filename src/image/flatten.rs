//! Task layers merged into the one upper dir an overlay artifact packs.
//!
//! Each task of an overlay build leaves an overlayfs upper dir relative to
//! the layers below it. Applied bottom first onto a fresh dir with
//! overlayfs's own rules — a whiteout or a file replaces whatever the
//! layers below had at its path, an opaque dir hides what they had under
//! it, a plain dir merges — they give one upper dir with the same effect
//! over the same lower dirs (the basefs and parent overlays). Whiteouts for
//! paths those lower dirs never had (a file made by one task and removed by
//! a later one) are dropped, so the result is what one upper dir over all
//! the tasks holds. Files are hard-linked from the layers (copied across
//! filesystems); only directories are made anew.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

const OPAQUE: &str = "trusted.overlay.opaque";

/// Merge `layers` (top-most first) into the empty or missing dir `dest`;
/// `lowers` are the dirs under the layers (top-most first).
pub fn flatten(layers: &[PathBuf], lowers: &[PathBuf], dest: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    // Each dir's attributes come from the top-most layer that has it.
    let mut dirs: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    for layer in layers.iter().rev() {
        let items = crate::archive::walk(layer)
            .with_context(|| format!("cannot read the layer {}", layer.display()))?;
        for item in items.iter().skip(1) {
            apply(&item.abs, &item.meta, &dest.join(&item.rel))?;
            if item.meta.is_dir() {
                dirs.insert(item.rel.clone(), item.abs.clone());
            }
        }
    }
    let items =
        crate::archive::walk(dest).with_context(|| format!("cannot read {}", dest.display()))?;
    for item in items.iter().skip(1).filter(|i| is_whiteout(&i.meta)) {
        if !visible(lowers, &item.rel) {
            fs::remove_file(&item.abs)
                .with_context(|| format!("cannot remove {}", item.abs.display()))?;
        }
    }
    let mut deepest_first: Vec<_> = dirs.into_iter().collect();
    deepest_first.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
    for (rel, src) in deepest_first {
        copy_dir_attrs(&src, &dest.join(rel))?;
    }
    Ok(())
}

/// Apply one entry of a layer at `target`.
fn apply(src: &Path, meta: &fs::Metadata, target: &Path) -> anyhow::Result<()> {
    let existing = fs::symlink_metadata(target).ok();
    if meta.is_dir() {
        let opaque_here = crate::archive::xattr::get(src, OPAQUE)?.as_deref() == Some(b"y");
        let opaque = match &existing {
            Some(m) if m.is_dir() && !opaque_here => return Ok(()),
            // A dir over something a lower layer removed or replaced hides
            // what the lower dirs have there.
            Some(_) => true,
            None => opaque_here,
        };
        remove(target, existing.as_ref())?;
        fs::create_dir(target).with_context(|| format!("cannot create {}", target.display()))?;
        if opaque {
            crate::archive::xattr::set(target, OPAQUE, b"y")?;
        }
        return Ok(());
    }
    remove(target, existing.as_ref())?;
    if fs::hard_link(src, target).is_err() {
        copy_entry(src, meta, target)?;
    }
    Ok(())
}

fn remove(path: &Path, meta: Option<&fs::Metadata>) -> anyhow::Result<()> {
    match meta {
        Some(m) if m.is_dir() => fs::remove_dir_all(path),
        Some(_) => fs::remove_file(path),
        None => return Ok(()),
    }
    .with_context(|| format!("cannot remove {}", path.display()))
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Does `rel` exist in the union of `lowers` (top-most first)?
pub fn visible(lowers: &[PathBuf], rel: &Path) -> bool {
    lower_meta(lowers, rel).is_some()
}

/// What `rel` is in the union of `lowers` (top-most first), as overlayfs
/// resolves it: component by component, stopping at whiteouts,
/// non-directories and opaque directories.
pub fn lower_meta(lowers: &[PathBuf], rel: &Path) -> Option<fs::Metadata> {
    let parts: Vec<_> = rel.components().collect();
    let (last, parents) = parts.split_last()?;
    'lowers: for lower in lowers {
        let mut dir = lower.clone();
        let mut opaque = false;
        for part in parents {
            dir.push(part);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {
                    opaque |= crate::archive::xattr::get(&dir, OPAQUE)
                        .ok()
                        .flatten()
                        .as_deref()
                        == Some(b"y")
                }
                Ok(_) => return None,
                Err(_) => continue 'lowers,
            }
        }
        match fs::symlink_metadata(dir.join(last)) {
            Ok(m) if is_whiteout(&m) => return None,
            Ok(m) => return Some(m),
            Err(_) if opaque => return None,
            Err(_) => {}
        }
    }
    None
}

/// Copy one non-directory across filesystems: data or link or device node,
/// owner, mode, times, xattrs.
fn copy_entry(src: &Path, meta: &fs::Metadata, target: &Path) -> anyhow::Result<()> {
    let ft = meta.file_type();
    let what = || format!("cannot copy {} to {}", src.display(), target.display());
    if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src).with_context(what)?, target)
            .with_context(what)?;
    } else if ft.is_file() {
        fs::copy(src, target).with_context(what)?;
    } else {
        use nix::sys::stat::{mknod, Mode, SFlag};
        let kind = SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
        mknod(
            target,
            kind,
            Mode::from_bits_truncate(meta.mode() & 0o7777),
            meta.rdev(),
        )
        .with_context(what)?;
    }
    std::os::unix::fs::lchown(target, Some(meta.uid()), Some(meta.gid())).with_context(what)?;
    if !ft.is_symlink() {
        fs::set_permissions(target, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .with_context(what)?;
        copy_xattrs(src, target)?;
    }
    set_times(target, meta)
}

/// A dir's owner, mode, xattrs (its opaque flag stays as merged) and times.
fn copy_dir_attrs(src: &Path, target: &Path) -> anyhow::Result<()> {
    let Ok(meta) = fs::symlink_metadata(src) else {
        return Ok(());
    };
    if !fs::symlink_metadata(target).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    std::os::unix::fs::lchown(target, Some(meta.uid()), Some(meta.gid()))
        .with_context(|| format!("cannot chown {}", target.display()))?;
    fs::set_permissions(target, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .with_context(|| format!("cannot chmod {}", target.display()))?;
    copy_xattrs(src, target)?;
    set_times(target, &meta)
}

/// Make the xattrs of `target` those of `src`, but for overlayfs's own.
fn copy_xattrs(src: &Path, target: &Path) -> anyhow::Result<()> {
    use crate::archive::xattr;
    let ours = |n: &str| n.starts_with("trusted.overlay.");
    for name in xattr::list(target)?.into_iter().filter(|n| !ours(n)) {
        xattr::remove(target, &name)?;
    }
    for name in xattr::list(src)?.into_iter().filter(|n| !ours(n)) {
        if let Some(value) = xattr::get(src, &name)? {
            xattr::set(target, &name, &value)?;
        }
    }
    Ok(())
}

fn set_times(target: &Path, meta: &fs::Metadata) -> anyhow::Result<()> {
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(
        None,
        target,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .with_context(|| format!("cannot set the times of {}", target.display()))
}
