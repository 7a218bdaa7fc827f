//! Where the initrd's kernel comes from — a Debian kernel package fetched
//! through the configured mirror, or the basefs itself (an extracted tree or
//! its squashfs) — and the rule that the kernel must match the basefs's
//! `/lib/modules/VERSION`, since the booted system loads its modules from there.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::kmod::MODULE_DIRS;

use crate::apt::Fetcher;

/// Where the kernel (and its modules) come from.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelSource {
    /// The basefs: an extracted root tree, or its squashfs image.
    Basefs(PathBuf),
    /// A Debian package, e.g. `linux-image-amd64` (resolved to the real,
    /// versioned package).
    Package { name: String },
}

/// Errors locating the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{root}: no kernel modules (no lib/modules/VERSION); install a kernel package (linux-image-amd64) in the basefs, or set `kernel:` to a package")]
    NoModules { root: String },
    #[error("{root}: several kernels ({versions}); keep one kernel package in the basefs")]
    Several { root: String, versions: String },
    #[error("{root}: no boot/vmlinuz-{version} for the modules in lib/modules/{version}, and no kernel package named to take it from (a basefs built by mkimage records it in manifest.json)")]
    NoVmlinuz { root: String, version: String },
    #[error("kernel version mismatch: the initrd's kernel ({package}) is {kernel}, but the basefs {basefs} has /lib/modules/{base}; the booted system could not load its modules. Use the basefs's kernel (`kernel: basefs`), pin the package (`kernel: linux-image-{base}`), or rebuild the basefs")]
    Mismatch {
        package: String,
        kernel: String,
        basefs: String,
        base: String,
    },
}

/// A kernel ready to pack: its image, its modules dir and where firmware is.
#[derive(Debug)]
pub struct Kernel {
    pub version: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/VERSION`.
    pub modules_dir: PathBuf,
    /// Candidate firmware dirs (`lib/firmware`), existing or not.
    pub firmware_dirs: Vec<PathBuf>,
    /// The kernel package (name, version) when it came from one.
    pub package: Option<(String, String)>,
    /// Set when files come from a squashfs on demand.
    pub lazy: Option<Lazy>,
    /// Holds an extraction alive while the build runs.
    _scratch: Option<tempfile::TempDir>,
}

/// Where to look and what to take.
pub struct Locate<'a> {
    pub source: &'a KernelSource,
    /// The basefs (if known), checked for a matching `/lib/modules/VERSION`.
    pub basefs: Option<&'a Path>,
    /// Also extract `lib/firmware` from a squashfs.
    pub firmware: bool,
    /// Where squashfs contents are extracted.
    pub scratch: &'a Path,
    /// The basefs's kernel package (name, version): where the image comes
    /// from when the basefs ships none (`kernel_package`).
    pub image_package: Option<&'a (String, String)>,
    /// The shared `.deb` cache, where a basefs build keeps the image it
    /// left out (`kernel_package::stash`).
    pub image_stash: Option<&'a Path>,
}

/// Find the kernel per `source`.
pub fn locate(
    at: &Locate,
    fetcher: &dyn Fn() -> anyhow::Result<Fetcher>,
) -> anyhow::Result<Kernel> {
    let (source, basefs) = (at.source, at.basefs);
    let mut kernel = match source {
        KernelSource::Basefs(path) if path.is_dir() => from_tree(path, None, None)?,
        KernelSource::Basefs(image) => from_squashfs(image, at.firmware, at.scratch)?,
        KernelSource::Package { name } => {
            let f = fetcher()?;
            let pkg = f.resolve(name)?;
            let tree = f.unpacked(&pkg)?;
            from_tree(&tree, None, Some((pkg.name, pkg.version)))?
        }
    };
    if !kernel.vmlinuz.is_file() {
        let root = kernel
            .vmlinuz
            .parent()
            .and_then(Path::parent)
            .map(|r| r.display().to_string())
            .unwrap_or_default();
        let no_image = || KernelError::NoVmlinuz {
            root,
            version: kernel.version.clone(),
        };
        let package = at.image_package.ok_or_else(no_image)?;
        let dir = match &kernel._scratch {
            Some(t) => t.path().to_path_buf(),
            None => {
                let t = tempfile::Builder::new()
                    .prefix(".initrd-kernel.")
                    .tempdir_in(at.scratch)
                    .context("cannot create a scratch dir")?;
                let dir = t.path().to_path_buf();
                kernel._scratch = Some(t);
                dir
            }
        };
        let stashed = match at.image_stash {
            Some(debs) => super::kernel_package::from_stash(debs, package, &kernel.version, &dir)?,
            None => false,
        };
        if !stashed {
            super::kernel_package::fetch(&fetcher()?, package, &kernel.version, &dir)?;
        }
        kernel.vmlinuz = dir.join(format!("boot/vmlinuz-{}", kernel.version));
    }
    if let Some(base) = basefs {
        let versions = basefs_kernel_versions(base)?;
        if versions.is_empty() {
            tracing::warn!(basefs = %base.display(), "the basefs has no /lib/modules: the booted system will not load any module");
        } else if !versions.contains(&kernel.version) {
            let from = match source {
                KernelSource::Package { name } => name.clone(),
                KernelSource::Basefs(p) => p.display().to_string(),
            };
            return Err(KernelError::Mismatch {
                package: kernel
                    .package
                    .as_ref()
                    .map(|p| format!("{} {}", p.0, p.1))
                    .unwrap_or(from),
                kernel: kernel.version.clone(),
                basefs: base.display().to_string(),
                base: versions.join(", "),
            }
            .into());
        }
    }
    Ok(kernel)
}

/// Files of a squashfs basefs, extracted only when the build needs them
/// (the modules dir alone is ~400 MB; an initrd needs ~30 modules of it).
#[derive(Debug)]
pub struct Lazy {
    image: PathBuf,
    root: PathBuf,
    /// Root-relative paths in the image under the directories listed.
    listing: BTreeSet<String>,
}

impl Lazy {
    /// Extract these root-relative paths (those in the image and not yet
    /// extracted) in one go.
    pub fn materialize(&self, paths: &[String]) -> anyhow::Result<()> {
        let mut todo: Vec<&str> = paths
            .iter()
            .map(String::as_str)
            .filter(|p| {
                self.listing.contains(*p) && fs::symlink_metadata(self.root.join(p)).is_err()
            })
            .collect();
        todo.sort();
        todo.dedup();
        if todo.is_empty() {
            return Ok(());
        }
        extract_squashfs(&self.image, &todo, &self.root)
    }

    /// The listed paths under a root-relative directory, relative to it.
    pub fn files_under(&self, dir: &str) -> Vec<PathBuf> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        self.listing
            .iter()
            .filter_map(|p| p.strip_prefix(&prefix))
            .map(PathBuf::from)
            .collect()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// A kernel from a basefs squashfs: list what is there, extract the kernel
/// image and `modules.builtin` now, modules and firmware on demand.
fn from_squashfs(image: &Path, firmware: bool, scratch: &Path) -> anyhow::Result<Kernel> {
    let mut dirs = vec!["boot"];
    dirs.extend(MODULE_DIRS);
    if firmware {
        dirs.extend(["usr/lib/firmware", "lib/firmware"]);
    }
    let listing = list_squashfs(image, &dirs)?;
    let tmp = tempfile::Builder::new()
        .prefix(".initrd-kernel.")
        .tempdir_in(scratch)
        .context("cannot create a scratch dir")?;
    let lazy = Lazy {
        image: image.to_path_buf(),
        root: tmp.path().to_path_buf(),
        listing,
    };
    let mut first = Vec::new();
    for p in &lazy.listing {
        let Some((moddir, version)) = module_dir_of(p) else {
            continue;
        };
        fs::create_dir_all(lazy.root.join(&moddir).join("kernel"))?;
        first.push(format!("boot/vmlinuz-{version}"));
        first.push(format!("{moddir}/modules.builtin"));
    }
    lazy.materialize(&first)?;
    let mut kernel = from_tree(&lazy.root.clone(), Some(tmp), None)
        .with_context(|| format!("in basefs image {}", image.display()))?;
    kernel.lazy = Some(lazy);
    Ok(kernel)
}

/// `usr/lib/modules/V/kernel` → (`usr/lib/modules/V`, `V`).
fn module_dir_of(path: &str) -> Option<(String, String)> {
    let rest = path.strip_suffix("/kernel")?;
    let (parent, version) = rest.rsplit_once('/')?;
    MODULE_DIRS
        .contains(&parent)
        .then(|| (rest.to_string(), version.to_string()))
}

/// Root-relative paths of everything under `dirs` in a squashfs image.
pub fn list_squashfs(image: &Path, dirs: &[&str]) -> anyhow::Result<BTreeSet<String>> {
    if !image.is_file() {
        return Err(crate::UsageError(format!(
            "basefs {} does not exist (build it first: mkimage basefs)",
            image.display()
        ))
        .into());
    }
    let all = crate::archive::squashfs_read::list_paths(image)
        .with_context(|| format!("cannot list {}", image.display()))?;
    Ok(all
        .into_iter()
        .filter(|p| {
            dirs.iter()
                .any(|d| p == d || p.starts_with(&format!("{d}/")))
        })
        .collect())
}

/// Extract `prefixes` (those present) of a squashfs image into `dest`.
/// The one place that knows how; swap for `archive::squashfs::extract`.
pub fn extract_squashfs(image: &Path, prefixes: &[&str], dest: &Path) -> anyhow::Result<()> {
    if !image.is_file() {
        return Err(crate::UsageError(format!(
            "basefs {} does not exist (build it first: mkimage basefs)",
            image.display()
        ))
        .into());
    }
    let patterns: Vec<String> = prefixes
        .iter()
        .map(|p| format!("/{}", p.trim_start_matches('/')))
        .collect();
    let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
    crate::archive::squashfs_read::extract_many(image, &patterns, dest)
        .with_context(|| format!("cannot extract the kernel from {}", image.display()))?;
    Ok(())
}

/// The kernel versions under a basefs's `lib/modules` (tree or squashfs).
pub fn basefs_kernel_versions(basefs: &Path) -> anyhow::Result<Vec<String>> {
    if basefs.is_dir() {
        return Ok(versions_in(basefs));
    }
    let listing = list_squashfs(basefs, &MODULE_DIRS)?;
    let mut versions: Vec<String> = listing
        .iter()
        .filter_map(|p| module_dir_of(p))
        .map(|(_, v)| v)
        .collect();
    versions.sort();
    versions.dedup();
    Ok(versions)
}

fn versions_in(root: &Path) -> Vec<String> {
    let mut versions: Vec<String> = MODULE_DIRS
        .iter()
        .filter_map(|d| fs::read_dir(root.join(d)).ok())
        .flat_map(|rd| rd.filter_map(|e| e.ok()))
        .filter(|e| e.path().join("kernel").is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

fn from_tree(
    root: &Path,
    scratch: Option<tempfile::TempDir>,
    package: Option<(String, String)>,
) -> anyhow::Result<Kernel> {
    let shown = root.display().to_string();
    let versions = versions_in(root);
    let version = match versions.as_slice() {
        [] => return Err(KernelError::NoModules { root: shown }.into()),
        [one] => one.clone(),
        many => {
            return Err(KernelError::Several {
                root: shown,
                versions: many.join(", "),
            }
            .into())
        }
    };
    // Checked by `locate`, which can take it from the kernel package.
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{version}"));
    let modules_dir = MODULE_DIRS
        .iter()
        .map(|d| root.join(d).join(&version))
        .find(|p| p.join("kernel").is_dir())
        .unwrap_or_else(|| root.join(MODULE_DIRS[1]).join(&version));
    let firmware_dirs = vec![root.join("usr/lib/firmware"), root.join("lib/firmware")];
    Ok(Kernel {
        version,
        vmlinuz,
        modules_dir,
        firmware_dirs,
        package,
        lazy: None,
        _scratch: scratch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root(version: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(format!("usr/lib/modules/{version}/kernel"))).unwrap();
        fs::create_dir_all(dir.path().join("boot")).unwrap();
        fs::write(
            dir.path().join(format!("boot/vmlinuz-{version}")),
            b"kernel",
        )
        .unwrap();
        dir
    }

    #[test]
    fn finds_kernel_in_tree() {
        let root = fake_root("6.1.0-9-amd64");
        let k = locate(
            &Locate {
                source: &KernelSource::Basefs(root.path().into()),
                basefs: None,
                firmware: true,
                scratch: root.path(),
                image_package: None,
                image_stash: None,
            },
            &|| anyhow::bail!("no fetch"),
        )
        .unwrap();
        assert_eq!(k.version, "6.1.0-9-amd64");
        assert!(k.modules_dir.ends_with("usr/lib/modules/6.1.0-9-amd64"));
    }

    #[test]
    fn empty_tree_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = locate(
            &Locate {
                source: &KernelSource::Basefs(dir.path().into()),
                basefs: None,
                firmware: true,
                scratch: dir.path(),
                image_package: None,
                image_stash: None,
            },
            &|| anyhow::bail!("no fetch"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("linux-image-amd64"), "{err}");
    }

    #[test]
    fn kernel_must_match_the_basefs() {
        let kernel_root = fake_root("6.1.0-9-amd64");
        let base = fake_root("6.1.0-8-amd64");
        let at = Locate {
            source: &KernelSource::Basefs(kernel_root.path().into()),
            basefs: Some(base.path()),
            firmware: false,
            scratch: base.path(),
            image_package: None,
            image_stash: None,
        };
        let err = locate(&at, &|| anyhow::bail!("no fetch"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("6.1.0-9-amd64")
                && err.contains("/lib/modules/6.1.0-8-amd64")
                && err.contains("kernel: linux-image-6.1.0-8-amd64"),
            "{err}"
        );
        let same = Locate {
            basefs: Some(kernel_root.path()),
            ..at
        };
        assert!(locate(&same, &|| anyhow::bail!("no fetch")).is_ok());
    }

    #[test]
    fn module_dirs_in_a_listing() {
        assert_eq!(
            module_dir_of("usr/lib/modules/6.1.0-9-amd64/kernel"),
            Some((
                "usr/lib/modules/6.1.0-9-amd64".into(),
                "6.1.0-9-amd64".into()
            ))
        );
        assert_eq!(
            module_dir_of("usr/lib/modules/6.1.0-9-amd64/kernel/fs/kernel"),
            None
        );
        assert_eq!(module_dir_of("usr/lib/modules/6.1.0-9-amd64"), None);
    }

    #[test]
    fn versions_of_a_tree() {
        let root = fake_root("6.1.0-9-amd64");
        assert_eq!(
            basefs_kernel_versions(root.path()).unwrap(),
            ["6.1.0-9-amd64"]
        );
    }
}
