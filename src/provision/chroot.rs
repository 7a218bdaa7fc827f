//! The chroot a role runs in: API filesystems, a private /tmp, the host's
//! resolv.conf, a policy-rc.d that keeps daemons from starting, the apt
//! proxy, the shared package cache and package lists — all only while
//! building. `leave()`
//! takes every one of them away again before the tree is packed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::mount::MsFlags;

use crate::sys::{self, Sys};

/// Files mkimage puts into the tree only for the build.
const POLICY_RC_D: &str = "usr/sbin/policy-rc.d";
const APT_BUILD_CONF: &str = "etc/apt/apt.conf.d/00mkimage-build";
const RESOLV_CONF: &str = "etc/resolv.conf";
/// A lock's local repository: its source line, and where it is mounted.
pub const LOCK_SOURCES: &str = "etc/apt/sources.list.d/mkimage-lock.list";
const LOCK_REPO: &str = "run/mkimage-lock-repo";

/// What the chroot gets while building.
#[derive(Debug, Clone, Default)]
pub struct ChrootOptions {
    pub apt_proxy: Option<String>,
    /// Shared .deb cache, bind-mounted on /var/cache/apt/archives.
    pub package_cache: Option<PathBuf>,
    /// A lock file's pins (apt preferences), in force while building.
    pub preferences: Option<String>,
    /// A lock's local repository of cached `.deb`s, mounted read-only.
    pub local_repo: Option<PathBuf>,
    /// Shared apt package lists, bind-mounted on /var/lib/apt/lists (apt
    /// tasks hold them while they run: `flock::apt_lists`).
    pub apt_lists: Option<PathBuf>,
}

/// Where the shared lists are mounted in the tree.
pub const APT_LISTS: &str = "var/lib/apt/lists";

/// A prepared chroot; call `leave` to restore the tree.
pub struct Chroot<'a> {
    sys: &'a dyn Sys,
    root: PathBuf,
    saved: Vec<(PathBuf, Saved)>,
    /// Dirs `enter` created as mount points, deepest first.
    made: Vec<PathBuf>,
}

enum Saved {
    Absent,
    File(Vec<u8>, u32),
    Symlink(PathBuf),
}

impl<'a> Chroot<'a> {
    pub fn enter(
        sys: &'a dyn Sys,
        root: &Path,
        opts: &ChrootOptions,
    ) -> anyhow::Result<Chroot<'a>> {
        let mut chroot = Chroot {
            sys,
            root: root.to_path_buf(),
            saved: Vec::new(),
            made: Vec::new(),
        };
        chroot.mount_api()?;
        if let Some(cache) = &opts.package_cache {
            fs::create_dir_all(cache.join("partial"))
                .with_context(|| format!("cannot create {}", cache.display()))?;
            sys::bind(sys, cache, &root.join("var/cache/apt/archives"), false)?;
        }
        if let Some(lists) = &opts.apt_lists {
            fs::create_dir_all(lists.join("partial"))
                .with_context(|| format!("cannot create {}", lists.display()))?;
            chroot.made = missing_dirs(root, APT_LISTS);
            sys::bind(sys, lists, &root.join(APT_LISTS), false)?;
        }
        let host_resolv = fs::read("/etc/resolv.conf").unwrap_or_default();
        chroot.put(RESOLV_CONF, &host_resolv, 0o644)?;
        chroot.put(
            POLICY_RC_D,
            b"#!/bin/sh\n# mkimage: no daemons start while building\nexit 101\n",
            0o755,
        )?;
        // dpkg without fsync: the tree is packed afterwards, and a crashed
        // build is thrown away, so a sync per unpacked file buys nothing.
        // No translated descriptions: mmdebstrap fetches none either, so
        // the shared lists hold the same indexes after either's update
        // (apt deletes what its sources do not name), and the first update
        // does not fetch the 30 MB Translation-en.
        let mut apt_conf = String::from(
            "APT::Keep-Downloaded-Packages \"true\";\nBinary::apt::APT::Keep-Downloaded-Packages \"true\";\nAPT::Install-Recommends \"false\";\nDpkg::Use-Pty \"false\";\nDPkg::Options:: \"--force-unsafe-io\";\nAcquire::Languages \"none\";\n",
        );
        if let Some(proxy) = &opts.apt_proxy {
            apt_conf.push_str(&format!("Acquire::http::Proxy \"{proxy}\";\n"));
        }
        chroot.put(APT_BUILD_CONF, apt_conf.as_bytes(), 0o644)?;
        if let Some(prefs) = &opts.preferences {
            chroot.put(
                &format!("etc/apt/preferences.d/{}", crate::apt::PREFERENCES),
                prefs.as_bytes(),
                0o644,
            )?;
        }
        if let Some(repo) = &opts.local_repo {
            sys::bind(sys, repo, &root.join(LOCK_REPO), true)?;
            chroot.put(
                LOCK_SOURCES,
                format!("deb [trusted=yes] file:/{LOCK_REPO} ./\n").as_bytes(),
                0o644,
            )?;
        }
        Ok(chroot)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn mount_api(&self) -> anyhow::Result<()> {
        let (sys, r) = (self.sys, &self.root);
        let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        sys::mount_fs(sys, "proc", "proc", &r.join("proc"), nosuid, None)?;
        sys::bind(sys, Path::new("/sys"), &r.join("sys"), true)?;
        sys::mount_fs(
            sys,
            "tmpfs",
            "tmpfs",
            &r.join("dev"),
            MsFlags::MS_NOSUID,
            Some("mode=0755,size=16m"),
        )?;
        for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
            sys::bind(
                sys,
                &Path::new("/dev").join(dev),
                &r.join("dev").join(dev),
                false,
            )?;
        }
        sys::mount_fs(
            sys,
            "devpts",
            "devpts",
            &r.join("dev/pts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )?;
        std::os::unix::fs::symlink("pts/ptmx", r.join("dev/ptmx"))
            .context("cannot create /dev/ptmx")?;
        sys::mount_fs(
            sys,
            "tmpfs",
            "tmpfs",
            &r.join("dev/shm"),
            nosuid,
            Some("mode=1777"),
        )?;
        sys::mount_fs(
            sys,
            "tmpfs",
            "tmpfs",
            &r.join("tmp"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        )?;
        sys::mount_fs(
            sys,
            "tmpfs",
            "tmpfs",
            &r.join("run"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        )?;
        Ok(())
    }

    /// Put a build-only file into the tree, remembering what was there.
    fn put(&mut self, rel: &str, contents: &[u8], mode: u32) -> anyhow::Result<()> {
        let path = self.root.join(rel);
        let saved = match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => Saved::Symlink(fs::read_link(&path)?),
            Ok(m) => Saved::File(fs::read(&path)?, m.permissions().mode() & 0o7777),
            Err(_) => Saved::Absent,
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let _ = fs::remove_file(&path);
        fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        self.saved.push((path, saved));
        Ok(())
    }

    /// Undo everything `enter` did: unmount, restore the build-only files.
    pub fn leave(mut self) -> anyhow::Result<()> {
        self.restore()
    }

    fn restore(&mut self) -> anyhow::Result<()> {
        sys::unmount_all(self.sys, &self.root.join("proc"))?;
        for sub in [
            APT_LISTS,
            "var/cache/apt/archives",
            "run",
            "tmp",
            "dev",
            "sys",
        ] {
            sys::unmount_all(self.sys, &self.root.join(sub))?;
        }
        // The mount point leaves no trace in the task's layer.
        for dir in self.made.drain(..) {
            let _ = fs::remove_dir(dir);
        }
        for (path, saved) in self.saved.drain(..).rev() {
            let _ = fs::remove_file(&path);
            match saved {
                Saved::Absent => {}
                Saved::File(bytes, mode) => {
                    fs::write(&path, bytes)?;
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
                }
                Saved::Symlink(target) => std::os::unix::fs::symlink(target, &path)?,
            }
        }
        Ok(())
    }
}

/// The dirs of `rel` under `root` that do not exist yet, deepest first.
fn missing_dirs(root: &Path, rel: &str) -> Vec<PathBuf> {
    let mut made = Vec::new();
    let mut dir = root.join(rel);
    while dir != root && fs::symlink_metadata(&dir).is_err() {
        made.push(dir.clone());
        if !dir.pop() {
            break;
        }
    }
    made
}

impl Drop for Chroot<'_> {
    fn drop(&mut self) {
        if !self.saved.is_empty() || !self.made.is_empty() {
            if let Err(e) = self.restore() {
                tracing::warn!("cleaning up the chroot failed: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::record::Recorder;

    #[test]
    fn mount_plan_and_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/resolv.conf"), b"nameserver 192.0.2.1\n").unwrap();
        let cache = dir.path().join("debs");
        let sys = Recorder::default();
        let opts = ChrootOptions {
            apt_proxy: Some("http://127.0.0.1:3142".into()),
            package_cache: Some(cache.clone()),
            apt_lists: Some(dir.path().join("lists")),
            ..Default::default()
        };
        let chroot = Chroot::enter(&sys, &root, &opts).unwrap();
        let conf = fs::read_to_string(root.join(APT_BUILD_CONF)).unwrap();
        assert!(
            conf.contains("Acquire::http::Proxy \"http://127.0.0.1:3142\";"),
            "{conf}"
        );
        assert!(root.join(POLICY_RC_D).is_file());
        chroot.leave().unwrap();
        let plan = sys.plan(dir.path());
        let r = |p: &str| format!("/root{p}");
        let mut want = vec![
            format!("mount proc {}", r("/proc")),
            format!("bind /sys {}", r("/sys")),
            format!("remount-ro {}", r("/sys")),
            format!("mount tmpfs {} mode=0755,size=16m", r("/dev")),
        ];
        want.extend(
            ["null", "zero", "full", "random", "urandom", "tty"]
                .map(|d| format!("bind /dev/{d} {}", r(&format!("/dev/{d}")))),
        );
        want.extend([
            format!(
                "mount devpts {} newinstance,ptmxmode=0666,mode=0620",
                r("/dev/pts")
            ),
            format!("mount tmpfs {} mode=1777", r("/dev/shm")),
            format!("mount tmpfs {} mode=1777", r("/tmp")),
            format!("mount tmpfs {} mode=0755", r("/run")),
            format!("bind /debs {}", r("/var/cache/apt/archives")),
            format!("bind /lists {}", r("/var/lib/apt/lists")),
            format!("umount {}", r("/proc")),
            format!("umount {}", r("/var/lib/apt/lists")),
            format!("umount {}", r("/var/cache/apt/archives")),
            format!("umount {}", r("/run")),
            format!("umount {}", r("/tmp")),
        ]);
        assert_eq!(plan[..want.len()], want[..], "{plan:#?}");
        assert!(
            sys.mounts_under(dir.path()).is_empty(),
            "everything unmounted: {:?}",
            sys.mounts_under(dir.path())
        );
        assert_eq!(
            fs::read_to_string(root.join("etc/resolv.conf")).unwrap(),
            "nameserver 192.0.2.1\n",
            "the tree's own file is back"
        );
        assert!(!root.join(POLICY_RC_D).exists() && !root.join(APT_BUILD_CONF).exists());
        assert!(
            !root.join("var/lib").exists(),
            "the lists' mount point is gone with the mount"
        );
        assert!(
            dir.path().join("lists/partial").is_dir(),
            "the shared lists"
        );
    }
}
