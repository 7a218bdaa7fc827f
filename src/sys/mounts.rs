//! The steps every mount plan is made of, on any [`Sys`]: bind mounts,
//! filesystems on fresh mount points, unmounting everything under a
//! directory (deepest first), and removing a tree only when nothing is
//! mounted under it.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context};
use nix::mount::MsFlags;

use super::calls::Sys;

/// Bind-mount `src` on `dest` (creating `dest`), read-only if asked.
pub fn bind(sys: &dyn Sys, src: &Path, dest: &Path, readonly: bool) -> anyhow::Result<()> {
    if src.is_dir() {
        fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    } else if fs::symlink_metadata(dest).is_err() {
        fs::write(dest, b"").with_context(|| format!("cannot create {}", dest.display()))?;
    }
    sys.mount(src, dest, None, MsFlags::MS_BIND, None)
        .with_context(|| format!("cannot bind-mount {} on {}", src.display(), dest.display()))?;
    if readonly {
        sys.mount(
            Path::new("none"),
            dest,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )
        .with_context(|| format!("cannot make {} read-only", dest.display()))?;
    }
    Ok(())
}

/// Mount a filesystem of `fstype` on `dest` (creating it).
pub fn mount_fs(
    sys: &dyn Sys,
    fstype: &str,
    source: &str,
    dest: &Path,
    flags: MsFlags,
    data: Option<&str>,
) -> anyhow::Result<()> {
    fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    sys.mount(Path::new(source), dest, Some(fstype), flags, data)
}

/// The memory the kernel says is available (`MemAvailable`), in bytes; 0
/// when it cannot be read.
pub fn mem_available() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Loop-mount an image read-only on `dest` (creating it).
pub fn mount_image(sys: &dyn Sys, image: &Path, fstype: &str, dest: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    sys.mount_image(image, dest, fstype)
}

/// Unmount everything at or under `dir`, deepest first (lazily if busy).
pub fn unmount_all(sys: &dyn Sys, dir: &Path) -> anyhow::Result<()> {
    for _ in 0..3 {
        let mounts = sys.mounts_under(dir);
        if mounts.is_empty() {
            return Ok(());
        }
        for m in mounts {
            if sys.umount(&m, false).is_err() {
                let _ = sys.umount(&m, true);
            }
        }
    }
    let left = sys.mounts_under(dir);
    if left.is_empty() {
        Ok(())
    } else {
        bail!(
            "cannot unmount {}",
            left.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// Remove a directory tree, refusing while anything is mounted under it.
pub fn remove_tree(sys: &dyn Sys, dir: &Path) -> anyhow::Result<()> {
    let mounts = sys.mounts_under(dir);
    if !mounts.is_empty() {
        bail!(
            "refusing to remove {}: still mounted under it: {}",
            dir.display(),
            mounts
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", dir.display())),
    }
}

/// `cp -a` (with reflinks where the filesystem has them) of a tree's
/// contents into `to`: owners, modes, times, links, devices and xattrs.
pub fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    crate::exec::Cmd::new("cp")
        .args(["-a", "--reflink=auto", "--"])
        .arg(from.join("."))
        .arg(to)
        .run()
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::record::{Call, Recorder};
    use super::*;

    #[test]
    fn remove_refuses_a_live_mount_and_unmount_all_goes_deepest_first() {
        let dir = tempfile::tempdir().unwrap();
        let sys = Recorder::default();
        let a = dir.path().join("a");
        mount_fs(&sys, "tmpfs", "tmpfs", &a, MsFlags::empty(), None).unwrap();
        mount_fs(
            &sys,
            "proc",
            "proc",
            &a.join("proc"),
            MsFlags::empty(),
            None,
        )
        .unwrap();
        let err = remove_tree(&sys, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("refusing to remove") && err.contains("/a/proc"),
            "{err}"
        );
        assert!(a.is_dir(), "nothing removed through a live mount");
        unmount_all(&sys, dir.path()).unwrap();
        let umounts: Vec<_> = sys
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Umount { target, .. } => Some(target),
                _ => None,
            })
            .collect();
        assert_eq!(umounts, [a.join("proc"), a.clone()]);
        remove_tree(&sys, dir.path()).unwrap();
        assert!(!dir.path().exists());
    }
}
