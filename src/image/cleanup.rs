//! Cleaning a tree before it is packed, by the one table in `never_ship`:
//! the basefs's tree, and an overlay's upper dir (where removing a path
//! leaves the basefs's version, which was cleaned the same way).

use std::fs;
use std::path::Path;

use super::never_ship::{EMPTIED, EMPTY_FILES_UNDER, NEVER_SHIP};

/// Clean `root`: the never-ship table, then `extra` globs from the config.
pub fn clean(sys: &dyn crate::sys::Sys, root: &Path, extra: &[String]) -> anyhow::Result<usize> {
    let mut removed = 0;
    for pattern in NEVER_SHIP
        .iter()
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
    {
        for path in crate::archive::walk::expand(root, pattern.trim_start_matches('/')) {
            remove(sys, &path)?;
            removed += 1;
        }
    }
    for dir in EMPTY_FILES_UNDER {
        removed += remove_files_under(&root.join(dir))?;
    }
    // systemd-tmpfiles puts ACLs on the journal dir; they are re-applied at
    // every boot (tmpfiles.d/systemd.conf `a+` lines), so they need not ship
    // (and the squashfs writer refuses xattrs rather than dropping them).
    for dir in ["var/log/journal"] {
        let path = root.join(dir);
        if path.is_dir() {
            for acl in ["system.posix_acl_access", "system.posix_acl_default"] {
                crate::archive::xattr::remove(&path, acl)?;
            }
        }
    }
    for rel in EMPTIED {
        let path = root.join(rel);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => empty(&path, &meta)?,
            _ => {}
        }
    }
    Ok(removed)
}

/// Drop the directories of an overlay's upper dir that only overlayfs's
/// copy-up put there: empty once cleaned (a role wrote only logs or caches
/// under them) and of the same owner and mode as in the `lowers`, so the
/// overlay would carry nothing but their clamped mtime. Returns how many.
pub fn prune_copied_up(upper: &Path, lowers: &[std::path::PathBuf]) -> anyhow::Result<usize> {
    use std::os::unix::fs::MetadataExt;
    let items = crate::archive::walk(upper)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", upper.display()))?;
    let mut pruned = 0;
    // Reversed pre-order: a dir's contents come before the dir.
    for item in items.iter().skip(1).rev().filter(|i| i.meta.is_dir()) {
        let empty = fs::read_dir(&item.abs)
            .map(|mut rd| rd.next().is_none())
            .unwrap_or(false);
        let opaque = crate::archive::xattr::get(&item.abs, "trusted.overlay.opaque")?.is_some();
        let same = super::flatten::lower_meta(lowers, &item.rel).is_some_and(|l| {
            l.is_dir()
                && l.mode() == item.meta.mode()
                && l.uid() == item.meta.uid()
                && l.gid() == item.meta.gid()
        });
        if empty && !opaque && same {
            fs::remove_dir(&item.abs)?;
            pruned += 1;
        }
    }
    Ok(pruned)
}

/// Replace a file with an empty one of the same owner and mode (a new
/// file: the old one may be a hard link into a cached layer, which must not
/// change).
fn empty(path: &Path, meta: &fs::Metadata) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    fs::remove_file(path)?;
    fs::write(path, b"")?;
    fs::set_permissions(path, meta.permissions())?;
    std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))?;
    Ok(())
}

fn remove(sys: &dyn crate::sys::Sys, path: &Path) -> anyhow::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => crate::sys::remove_tree(sys, path),
        Ok(_) => Ok(fs::remove_file(path)?),
        Err(_) => Ok(()),
    }
}

fn remove_files_under(dir: &Path) -> anyhow::Result<usize> {
    let mut n = 0;
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(0);
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            n += remove_files_under(&path)?;
        } else {
            fs::remove_file(&path)?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_identity_and_caches() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for f in [
            "etc/ssh/ssh_host_rsa_key",
            "var/lib/apt/lists/x_Packages",
            "var/log/apt/term.log",
            "etc/keep",
            "etc/apt/apt.conf.d/01proxy",
        ] {
            fs::create_dir_all(r.join(f).parent().unwrap()).unwrap();
            fs::write(r.join(f), b"x").unwrap();
        }
        fs::write(r.join("etc/machine-id"), b"abc\n").unwrap();
        clean(&crate::sys::REAL, r, &["etc/keep-not".into()]).unwrap();
        assert!(!r.join("etc/ssh/ssh_host_rsa_key").exists());
        assert!(!r.join("var/lib/apt/lists/x_Packages").exists());
        assert!(r.join("var/lib/apt/lists").is_dir());
        assert!(!r.join("var/log/apt/term.log").exists() && r.join("var/log/apt").is_dir());
        assert!(!r.join("etc/apt/apt.conf.d/01proxy").exists());
        assert!(r.join("etc/keep").exists());
        assert_eq!(fs::read(r.join("etc/machine-id")).unwrap(), b"");
    }

    #[test]
    fn copy_up_residue_goes_and_real_changes_stay() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper) = (dir.path().join("lower"), dir.path().join("upper"));
        for d in ["var/log/apt", "srv/chmodded", "etc"] {
            fs::create_dir_all(lower.join(d)).unwrap();
            fs::create_dir_all(upper.join(d)).unwrap();
        }
        fs::create_dir_all(upper.join("opt/new-empty")).unwrap();
        fs::write(upper.join("etc/kept"), b"x").unwrap();
        fs::set_permissions(
            upper.join("srv/chmodded"),
            fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        assert_eq!(
            prune_copied_up(&upper, &[lower]).unwrap(),
            3,
            "var/log/apt, then var/log, then var"
        );
        assert!(!upper.join("var").exists());
        assert!(
            upper.join("srv/chmodded").is_dir()
                && upper.join("opt/new-empty").is_dir()
                && upper.join("etc/kept").is_file()
        );
    }
}
