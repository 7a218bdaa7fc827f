//! depmod while xz works. libkmod tells a compressed module by its first
//! bytes, not by its name (`kmod_file_open` in kmod 30, bookworm's, and
//! kmod 34, trixie's), and depmod follows symlinks when it scans a modules
//! dir. So depmod can index the modules before xz has compressed one: in
//! a shadow of the modules dir inside the tree, where every `X.ko` that
//! `modules_xz` will compress is already named `X.ko.xz` (a symlink to the
//! uncompressed `X.ko`) and `modules.order` says so. What depmod writes
//! there names the same files and comes from the same module bytes as
//! what it writes into the compressed dir: the same bytes (proved on a real
//! kernel by the root test `modules_depmod`). It is moved into the real
//! dir, and the shadow removed, once both are done. (Plain `depmod` in a
//! tree, for a selection without xz, is here too.)

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;

use crate::exec::Cmd;

use super::modules_xz::{self, Compressed};

/// Compress the modules under `dir` (kernel `version`'s modules dir in
/// `root`) with `modules_xz` into `cache`, and run depmod meanwhile.
pub fn compress_with_depmod(
    root: &Path,
    dir: &Path,
    version: &str,
    cache: &Path,
) -> anyhow::Result<Compressed> {
    let shadow = Shadow::create(root, dir)?;
    let (compressed, depmodded) = std::thread::scope(|s| {
        let depmod = s.spawn(|| depmod_in(root, Some(&shadow.rel_base), version));
        let compressed = modules_xz::compress_beside(&dir.join("kernel"), cache, None);
        (compressed, depmod.join())
    });
    let (compressed, originals) = compressed?;
    depmodded.map_err(|_| anyhow::anyhow!("depmod's thread panicked"))??;
    modules_xz::remove_originals(&originals)?;
    rename_in_order(dir)?;
    shadow.install(dir)?;
    Ok(compressed)
}

/// `depmod VERSION` with the tree's own kmod (chrooted), else the host's
/// against the tree (`depmod -b ROOT`).
pub fn depmod(root: &Path, version: &str) -> anyhow::Result<()> {
    depmod_in(root, None, version)
}

/// `depmod` as above, for the modules under `root`/`base` (a path
/// relative to `root`; `None`: the tree's own).
fn depmod_in(root: &Path, base: Option<&Path>, version: &str) -> anyhow::Result<()> {
    let own = ["usr/sbin/depmod", "sbin/depmod"]
        .iter()
        .any(|p| root.join(p).exists());
    let cmd = match (own, base) {
        (true, None) => Cmd::new("depmod").arg(version).chroot(root),
        (true, Some(base)) => Cmd::new("depmod")
            .arg("-b")
            .arg(Path::new("/").join(base))
            .arg(version)
            .chroot(root),
        (false, _) => Cmd::new("depmod")
            .arg("-b")
            .arg(base.map_or(root.to_path_buf(), |b| root.join(b)))
            .arg(version),
    };
    cmd.run().with_context(|| {
        format!("cannot regenerate modules.dep for kernel {version} (kmod's depmod)")
    })?;
    Ok(())
}

/// `modules.order` names the compressed files after `modules_xz` ran.
pub(super) fn rename_in_order(dir: &Path) -> anyhow::Result<()> {
    let order = dir.join("modules.order");
    let Ok(text) = fs::read_to_string(&order) else {
        return Ok(());
    };
    let renamed: String = text
        .lines()
        .map(|l| {
            if !dir.join(l).exists() && dir.join(format!("{l}.xz")).exists() {
                format!("{l}.xz\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    fs::write(&order, renamed).with_context(|| format!("cannot write {}", order.display()))
}

/// The shadow of one modules dir, removed when dropped.
struct Shadow {
    base: tempfile::TempDir,
    /// `base` relative to the tree's root (what `depmod -b` is given).
    rel_base: PathBuf,
    /// The modules dir in the shadow.
    modules: PathBuf,
    /// The files copied into `modules`' top level, by inode.
    copied: BTreeMap<std::ffi::OsString, u64>,
}

impl Shadow {
    /// A shadow of `dir` under `root`, as `modules_xz` will leave `dir`.
    fn create(root: &Path, dir: &Path) -> anyhow::Result<Shadow> {
        let rel = dir
            .strip_prefix(root)
            .with_context(|| format!("{} is not under {}", dir.display(), root.display()))?;
        let base = tempfile::Builder::new()
            .prefix(".mkimage-depmod.")
            .tempdir_in(root)
            .with_context(|| format!("cannot create a directory in {}", root.display()))?;
        // depmod looks in its own module directory: a merged /usr's
        // `lib -> usr/lib` leads there in the shadow too.
        for top in crate::kmod::MODULE_DIRS
            .iter()
            .filter_map(|d| d.split('/').next())
        {
            if let Ok(target) = fs::read_link(root.join(top)) {
                let _ = std::os::unix::fs::symlink(target, base.path().join(top));
            }
        }
        let rel_base = base.path().strip_prefix(root)?.to_path_buf();
        let mut shadow = Shadow {
            modules: base.path().join(rel),
            base,
            rel_base,
            copied: BTreeMap::new(),
        };
        shadow.fill(root, dir)?;
        rename_in_order(&shadow.modules)?;
        Ok(shadow)
    }

    /// Top-level files copied (depmod reads some and may keep others),
    /// symlinks as they are; every file below as a relative symlink to it,
    /// named as `modules_xz` will name it.
    fn fill(&mut self, root: &Path, dir: &Path) -> anyhow::Result<()> {
        let items = crate::archive::walk::walk(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?;
        for item in items {
            let to = self.modules.join(&item.rel);
            let top = item.rel.components().count() == 1;
            let made = if item.meta.is_dir() {
                fs::create_dir_all(&to)
            } else if item.meta.is_symlink() && top {
                fs::read_link(&item.abs).and_then(|t| std::os::unix::fs::symlink(t, &to))
            } else if top {
                fs::copy(&item.abs, &to).and_then(|_| {
                    let ino = fs::metadata(&to)?.ino();
                    self.copied.insert(item.rel.clone().into_os_string(), ino);
                    Ok(())
                })
            } else {
                let name = compressed_name(&item.rel, item.meta.is_file());
                let target =
                    up_to_root(&self.modules.join(&name), root).join(item.abs.strip_prefix(root)?);
                std::os::unix::fs::symlink(target, self.modules.join(name))
            };
            made.with_context(|| format!("cannot make {}", to.display()))?;
        }
        Ok(())
    }

    /// Move what depmod wrote (a top-level file that is new, or not the
    /// copy put there) into `dir`; the shadow goes.
    fn install(self, dir: &Path) -> anyhow::Result<()> {
        let rd = fs::read_dir(&self.modules)
            .with_context(|| format!("cannot read {}", self.modules.display()))?;
        for e in rd.filter_map(|e| e.ok()) {
            let meta = e.metadata()?;
            let name = e.file_name();
            if !meta.is_file() || self.copied.get(&name) == Some(&meta.ino()) {
                continue;
            }
            let to = dir.join(&name);
            fs::rename(e.path(), &to).with_context(|| format!("cannot write {}", to.display()))?;
        }
        let base = self.base.path().to_path_buf();
        self.base
            .close()
            .with_context(|| format!("cannot remove {}", base.display()))
    }
}

/// `rel` (under the modules dir) as `modules_xz` leaves it: a `*.ko` file
/// under `kernel/` becomes `*.ko.xz`.
fn compressed_name(rel: &Path, is_file: bool) -> PathBuf {
    let compresses =
        is_file && rel.starts_with("kernel") && rel.extension().is_some_and(|e| e == "ko");
    if !compresses {
        return rel.to_path_buf();
    }
    let mut name = rel.as_os_str().to_owned();
    name.push(".xz");
    PathBuf::from(name)
}

/// The relative path from the directory of `link` (under `root`, through
/// no symlink) up to `root`.
fn up_to_root(link: &Path, root: &Path) -> PathBuf {
    let depth = link
        .strip_prefix(root)
        .map(|r| {
            r.components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .count()
        })
        .unwrap_or(0);
    (1..depth).map(|_| "..").collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_links_as_xz_will_leave_them() {
        assert_eq!(
            compressed_name(Path::new("kernel/fs/xfs/xfs.ko"), true),
            Path::new("kernel/fs/xfs/xfs.ko.xz")
        );
        assert_eq!(
            compressed_name(Path::new("kernel/fs/xfs/xfs.ko.xz"), true),
            Path::new("kernel/fs/xfs/xfs.ko.xz")
        );
        assert_eq!(
            compressed_name(Path::new("updates/dkms/x.ko"), true),
            Path::new("updates/dkms/x.ko")
        );
        assert_eq!(
            up_to_root(
                Path::new("/r/.s/usr/lib/modules/v/kernel/a.ko.xz"),
                Path::new("/r")
            ),
            Path::new("../../../../../..")
        );
    }

    /// A shadow of a small modules dir: links that resolve to the
    /// uncompressed modules, modules.order renamed, top-level files copied;
    /// only what changed is installed, and the shadow is gone.
    #[test]
    fn shadow_links_resolve_and_only_new_files_are_installed() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.path().join("lib")).unwrap();
        let dir = root.path().join("usr/lib/modules/6.1.0-9-amd64");
        fs::create_dir_all(dir.join("kernel/fs/xfs")).unwrap();
        fs::write(dir.join("kernel/fs/xfs/xfs.ko"), b"\x7fELF xfs").unwrap();
        fs::write(dir.join("modules.order"), "kernel/fs/xfs/xfs.ko\n").unwrap();
        fs::write(dir.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        fs::write(dir.join("modules.dep"), "old\n").unwrap();
        let shadow = Shadow::create(root.path(), &dir).unwrap();
        let m = &shadow.modules;
        assert!(m.starts_with(root.path().join(&shadow.rel_base)));
        assert_eq!(
            fs::read(m.join("kernel/fs/xfs/xfs.ko.xz")).unwrap(),
            b"\x7fELF xfs"
        );
        assert!(fs::read_link(m.join("kernel/fs/xfs/xfs.ko.xz"))
            .unwrap()
            .is_relative());
        assert_eq!(
            fs::read_to_string(m.join("modules.order")).unwrap(),
            "kernel/fs/xfs/xfs.ko.xz\n"
        );
        assert_eq!(
            fs::read_link(shadow.base.path().join("lib")).unwrap(),
            Path::new("usr/lib")
        );
        // depmod writes by temp file and rename.
        fs::write(m.join("modules.dep.tmp"), "new\n").unwrap();
        fs::rename(m.join("modules.dep.tmp"), m.join("modules.dep")).unwrap();
        fs::write(m.join("modules.alias"), "alias x xfs\n").unwrap();
        let base = shadow.base.path().to_path_buf();
        shadow.install(&dir).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("modules.dep")).unwrap(),
            "new\n"
        );
        assert!(dir.join("modules.alias").is_file());
        assert_eq!(
            fs::read_to_string(dir.join("modules.order")).unwrap(),
            "kernel/fs/xfs/xfs.ko\n",
            "the real modules.order is renamed after xz, not by the shadow"
        );
        assert!(!base.exists());
    }
}
