//! The basefs's kernel, cut down after the roles ran: every machine
//! downloads the whole basefs into RAM, and the kernel package's ~400 MB of
//! modules are mostly for hardware a lab microkernel never meets, while its
//! 8 MB image is never read at all (the boot server hands out the kernel).
//!
//! The modules are cut to the `kernel_modules:` selection. A module a kept module needs (its `modules.dep`
//! line, or a soft dependency) stays whatever the patterns say, the kept
//! ones are compressed one by one with xz (`modules_xz`), and depmod
//! rebuilds `modules.dep` and `modules.alias` so udev and modprobe in the
//! booted system find what is left (while xz works: `modules_shadow`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::ModuleSelection;

pub use super::modules_shadow::depmod;

/// What the selection did to one kernel's modules.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub version: String,
    pub kept: usize,
    pub dropped: usize,
    pub dropped_bytes: u64,
    /// Modules the patterns dropped but a kept module needs (kept).
    pub needed: Vec<String>,
    /// Modules stored as `.ko.xz` (some from the cache), and how long it took.
    pub compressed: super::modules_xz::Compressed,
    pub compress_secs: f64,
}

/// Apply `sel` to every kernel under `root`'s `lib/modules`.
pub fn apply(root: &Path, sel: &ModuleSelection, cache: &Path) -> anyhow::Result<Vec<Summary>> {
    let mut out = Vec::new();
    for (dir, version) in kernel_dirs(root) {
        let mut summary = select(root, &dir, &version, sel)?;
        if sel.compress {
            let started = std::time::Instant::now();
            summary.compressed = super::modules_shadow::compress_with_depmod(
                root,
                &dir,
                &version,
                &cache.join(super::modules_xz::CACHE_DIR),
            )?;
            summary.compress_secs = started.elapsed().as_secs_f64();
        } else {
            depmod(root, &version)?;
        }
        out.push(summary);
    }
    Ok(out)
}

/// Apply `sel` to every kernel under `root` (an unpacked kernel package)
/// and compress what it keeps into `cache`'s module cache, for the build
/// whose tree will install that package (`modules_warm`); `stop` ends it.
pub(super) fn compress_ahead(
    root: &Path,
    sel: &ModuleSelection,
    cache: &Path,
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<super::modules_xz::Compressed> {
    let mut total = super::modules_xz::Compressed::default();
    for (dir, version) in kernel_dirs(root) {
        select(root, &dir, &version, sel)?;
        let (c, _) = super::modules_xz::compress_beside(
            &dir.join("kernel"),
            &cache.join(super::modules_xz::CACHE_DIR),
            Some(stop),
        )?;
        total.modules += c.modules;
        total.cached += c.cached;
    }
    Ok(total)
}

/// `(lib/modules/VERSION dir, VERSION)` for each kernel with a `kernel/` dir.
fn kernel_dirs(root: &Path) -> Vec<(PathBuf, String)> {
    let mut found = BTreeMap::new();
    // On a merged /usr, `lib` is a link to `usr/lib`: never follow it.
    let lib_is_dir = fs::symlink_metadata(root.join("lib")).is_ok_and(|m| m.is_dir());
    for parent in crate::kmod::MODULE_DIRS {
        if parent == crate::kmod::MODULE_DIRS[1] && !lib_is_dir {
            continue;
        }
        let Ok(rd) = fs::read_dir(root.join(parent)) else {
            continue;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let path = e.path();
            if fs::symlink_metadata(path.join("kernel")).is_ok_and(|m| m.is_dir()) {
                found
                    .entry(e.file_name().to_string_lossy().to_string())
                    .or_insert(path);
            }
        }
    }
    found.into_iter().map(|(v, p)| (p, v)).collect()
}

/// Remove the modules the selection drops (and no kept module needs).
fn select(
    root: &Path,
    dir: &Path,
    version: &str,
    sel: &ModuleSelection,
) -> anyhow::Result<Summary> {
    if !dir.join("modules.dep").is_file() {
        depmod(root, version)?;
    }
    let index = crate::kmod::depmod::Index::read(dir)?;
    let chosen: BTreeSet<&String> = index.files.iter().filter(|rel| !sel.drops(rel)).collect();
    let kept = index.closure(chosen.iter().map(|r| r.to_string()))?;
    let needed: Vec<String> = kept
        .iter()
        .filter(|r| !chosen.contains(r))
        .cloned()
        .collect();
    let mut summary = Summary {
        version: version.to_string(),
        kept: kept.len(),
        needed,
        ..Default::default()
    };
    let kernel = dir.join("kernel");
    for rel in index.files.iter().filter(|r| !kept.contains(*r)) {
        let path = kernel.join(rel);
        summary.dropped_bytes += fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
        fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        summary.dropped += 1;
    }
    remove_empty_dirs(&kernel)?;
    let order = dir.join("modules.order");
    if let Ok(text) = fs::read_to_string(&order) {
        let left: String = text
            .lines()
            .filter(|l| dir.join(l.trim()).exists())
            .map(|l| format!("{l}\n"))
            .collect();
        fs::write(&order, left).with_context(|| format!("cannot write {}", order.display()))?;
    }
    Ok(summary)
}

fn remove_empty_dirs(dir: &Path) -> anyhow::Result<bool> {
    let mut empty = true;
    for e in fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok())
    {
        let path = e.path();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if !(is_dir && remove_empty_dirs(&path)? && fs::remove_dir(&path).is_ok()) {
            empty = false;
        }
    }
    Ok(empty)
}

/// Remove `boot/vmlinuz-*` and the `/vmlinuz` links to them: a netbooted
/// machine never reads them, and the initrd build takes the image from the
/// basefs's kernel package (`initramfs::kernel_package`). Returns the bytes removed.
pub fn drop_image(root: &Path) -> anyhow::Result<u64> {
    let mut removed = 0;
    for path in crate::archive::walk::expand(root, "boot/vmlinuz-*") {
        removed += fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
        fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    for link in ["vmlinuz", "vmlinuz.old"] {
        let path = root.join(link);
        if fs::read_link(&path).is_ok_and(|t| t.to_string_lossy().contains("vmlinuz-")) {
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A modules dir as depmod leaves it: files, modules.dep, softdeps, aliases.
    fn tree(files: &[&str], dep: &str, softdep: &str, alias: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("usr/lib/modules/6.1.0-9-amd64");
        for f in files {
            let p = dir.join("kernel").join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"\x7fELF").unwrap();
        }
        fs::write(dir.join("modules.dep"), dep).unwrap();
        fs::write(dir.join("modules.softdep"), softdep).unwrap();
        fs::write(dir.join("modules.alias"), alias).unwrap();
        let order: String = files.iter().map(|f| format!("kernel/{f}\n")).collect();
        fs::write(dir.join("modules.order"), order).unwrap();
        root
    }

    #[test]
    fn drops_by_pattern_but_keeps_what_kept_modules_need() {
        let files = [
            "drivers/net/ethernet/intel/e1000e/e1000e.ko",
            "drivers/ptp/ptp.ko",
            "drivers/gpu/drm/drm.ko",
            "drivers/gpu/drm/nouveau/nouveau.ko",
            "drivers/platform/x86/thing.ko",
            "sound/core/snd.ko",
            "fs/ext4/ext4.ko",
            "crypto/crc32c_generic.ko",
        ];
        let dep = "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko: kernel/drivers/ptp/ptp.ko\n\
                   kernel/drivers/platform/x86/thing.ko: kernel/drivers/gpu/drm/drm.ko\n\
                   kernel/drivers/gpu/drm/nouveau/nouveau.ko: kernel/drivers/gpu/drm/drm.ko\n";
        let root = tree(
            &files,
            dep,
            "softdep ext4 pre: crypto-crc32c\n",
            "alias crypto-crc32c crc32c_generic\n",
        );
        let sel = ModuleSelection {
            drop: vec!["*".into(), "crypto".into()],
            keep: vec![
                "drivers/net".into(),
                "drivers/platform/x86".into(),
                "fs".into(),
            ],
            compress: false,
        };
        let dir = root.path().join("usr/lib/modules/6.1.0-9-amd64");
        let s = select(root.path(), &dir, "6.1.0-9-amd64", &sel).unwrap();
        let k = dir.join("kernel");
        for kept in [
            "drivers/net/ethernet/intel/e1000e/e1000e.ko",
            "drivers/ptp/ptp.ko",
            "drivers/gpu/drm/drm.ko",
            "fs/ext4/ext4.ko",
            "crypto/crc32c_generic.ko",
        ] {
            assert!(k.join(kept).exists(), "{kept} should stay");
        }
        for gone in ["drivers/gpu/drm/nouveau/nouveau.ko", "sound/core/snd.ko"] {
            assert!(!k.join(gone).exists(), "{gone} should be gone");
        }
        assert!(
            !k.join("sound").exists() && !k.join("drivers/gpu/drm/nouveau").exists(),
            "emptied directories go too"
        );
        assert_eq!((s.kept, s.dropped), (6, 2));
        assert_eq!(
            s.needed,
            [
                "crypto/crc32c_generic.ko",
                "drivers/gpu/drm/drm.ko",
                "drivers/ptp/ptp.ko"
            ]
        );
        let order = fs::read_to_string(dir.join("modules.order")).unwrap();
        assert!(
            !order.contains("snd.ko") && order.contains("e1000e.ko"),
            "{order}"
        );
    }

    #[test]
    fn kernel_image_goes_and_links_to_it() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("boot")).unwrap();
        fs::write(
            root.path().join("boot/vmlinuz-6.1.0-9-amd64"),
            vec![0u8; 1000],
        )
        .unwrap();
        fs::write(
            root.path().join("boot/config-6.1.0-9-amd64"),
            b"CONFIG_X=y\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("boot/vmlinuz-6.1.0-9-amd64", root.path().join("vmlinuz"))
            .unwrap();
        std::os::unix::fs::symlink("etc", root.path().join("unrelated")).unwrap();
        assert_eq!(drop_image(root.path()).unwrap(), 1000);
        assert!(
            !root.path().join("boot/vmlinuz-6.1.0-9-amd64").exists()
                && fs::symlink_metadata(root.path().join("vmlinuz")).is_err()
        );
        assert!(
            root.path().join("boot/config-6.1.0-9-amd64").exists()
                && fs::symlink_metadata(root.path().join("unrelated")).is_ok()
        );
    }
}
