//! The [`Sys`] trait and [`Real`], the one implementation that talks to
//! the kernel; the mount table read deepest first.

use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// The privileged calls a build makes.
pub trait Sys: Sync {
    /// mount(2): `source` is a device, a directory (bind) or a name (`proc`).
    fn mount(
        &self,
        source: &Path,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> anyhow::Result<()>;
    /// A read-only loop mount of an image file (`mount -o loop,ro`).
    fn mount_image(&self, image: &Path, target: &Path, fstype: &str) -> anyhow::Result<()>;
    /// umount(2); `detach` is MNT_DETACH (lazy).
    fn umount(&self, target: &Path, detach: bool) -> anyhow::Result<()>;
    /// unshare(2).
    fn unshare(&self, flags: CloneFlags) -> anyhow::Result<()>;
    /// Mount points at or under `dir` in this mount namespace, deepest first.
    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf>;
}

/// The kernel.
pub struct Real;

/// The one real implementation, for callers that have no other.
pub static REAL: Real = Real;

impl Sys for Real {
    fn mount(
        &self,
        source: &Path,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> anyhow::Result<()> {
        nix::mount::mount(Some(source), target, fstype, flags, data).with_context(|| {
            format!(
                "cannot mount {} on {}",
                fstype.unwrap_or("(bind)"),
                target.display()
            )
        })
    }

    fn mount_image(&self, image: &Path, target: &Path, fstype: &str) -> anyhow::Result<()> {
        crate::exec::Cmd::new("mount")
            .args(["-t", fstype, "-o", "loop,ro"])
            .arg(image)
            .arg(target)
            .run()
            .with_context(|| {
                format!(
                    "cannot loop-mount {} (is it a {fstype} image?)",
                    image.display()
                )
            })?;
        Ok(())
    }

    fn umount(&self, target: &Path, detach: bool) -> anyhow::Result<()> {
        let flags = if detach {
            MntFlags::MNT_DETACH
        } else {
            MntFlags::empty()
        };
        nix::mount::umount2(target, flags)
            .with_context(|| format!("cannot unmount {}", target.display()))
    }

    fn unshare(&self, flags: CloneFlags) -> anyhow::Result<()> {
        nix::sched::unshare(flags)
            .with_context(|| format!("cannot create private namespaces ({flags:?})"))
    }

    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let points = text
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|p| PathBuf::from(unescape_mountinfo(p)));
        deepest_first(points.filter(|p| p.starts_with(dir)).collect())
    }
}

/// Sort mount points so children come before their parents.
pub fn deepest_first(mut points: Vec<PathBuf>) -> Vec<PathBuf> {
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
    }

    #[test]
    fn proc_is_mounted_somewhere() {
        assert!(!REAL.mounts_under(Path::new("/proc")).is_empty());
        assert!(REAL
            .mounts_under(Path::new("/nonexistent-mkimage"))
            .is_empty());
    }
}
