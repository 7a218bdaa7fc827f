//! Cleaning a tree before it is packed: on-imagebuilder's clean_fs list
//! (apt lists and caches, docs, man pages, locales, logs) plus everything
//! that would give every netbooted machine the same identity or leak the
//! build host (SSH host keys, machine-id, resolv.conf, proxy config, seeds).

use std::fs;
use std::path::Path;


/// Removed from every image (globs relative to the tree's root).
pub const CLEAN_FS: &[&str] = &[
    "var/lib/apt/lists/*",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/archives/partial/*",
    "var/cache/apt/archives/lock",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
    "var/cache/man/*",
    "var/cache/ldconfig/aux-cache",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/lintian/*",
    "usr/share/locale/*",
    "tmp/*",
    "var/tmp/*",
    "root/.bash_history",
    "root/.cache",
    "etc/ssh/ssh_host_*",
    "var/lib/systemd/random-seed",
    "var/lib/dbus/machine-id",
    "etc/resolv.conf",
    "etc/apt/apt.conf.d/*proxy*",
    "etc/apt/apt.conf.d/00mkimage-build",
    // mmdebstrap keeps every --aptopt (our cache and proxy settings) here.
    "etc/apt/apt.conf.d/99mmdebstrap",
    "usr/sbin/policy-rc.d",
    "etc/hostname.mkimage-build",
];

/// Files of these dirs are removed (the directories stay, packages expect them).
const EMPTY_FILES_UNDER: &[&str] = &["var/log"];

/// Clean `root`: the fixed list, then `extra` globs from the config.
pub fn clean(sys: &dyn crate::sys::Sys, root: &Path, extra: &[String]) -> anyhow::Result<usize> {
    let mut removed = 0;
    for pattern in CLEAN_FS.iter().map(|s| s.to_string()).chain(extra.iter().cloned()) {
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
    // An empty machine-id makes systemd generate one per boot.
    let machine_id = root.join("etc/machine-id");
    if fs::symlink_metadata(&machine_id).is_ok() {
        fs::write(&machine_id, b"")?;
    }
    Ok(removed)
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
    let Ok(entries) = fs::read_dir(dir) else { return Ok(0) };
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
        for f in ["etc/ssh/ssh_host_rsa_key", "var/lib/apt/lists/x_Packages", "var/log/apt/term.log", "etc/keep", "etc/apt/apt.conf.d/01proxy"] {
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
}
