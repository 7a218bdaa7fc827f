//! The kernel image of a basefs that ships none. A netbooted machine gets
//! its kernel from the boot server, so the basefs build leaves
//! `boot/vmlinuz-VERSION` out (8 MB every machine would download and never
//! read); the initrd takes the image from the very package version the
//! basefs has installed (its manifest entry lists it), through the private
//! apt and the shared `.deb` cache the basefs build filled. The basefs
//! build also keeps the image it left out in that cache
//! (`debs/PACKAGE_VERSION.vmlinuz`, `stash`), so an initrd built after it
//! copies 8 MB instead of unpacking the 70 MB package.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use crate::apt::fetcher::DebError;
use crate::apt::Fetcher;

/// The kernel package (name, version) of kernel `kver` among a basefs's
/// installed packages: Debian's `linux-image-KVER` (or its `-unsigned` twin).
pub fn package_of(packages: &BTreeMap<String, String>, kver: &str) -> Option<(String, String)> {
    [
        format!("linux-image-{kver}"),
        format!("linux-image-{kver}-unsigned"),
    ]
    .into_iter()
    .find_map(|name| packages.get(&name).map(|v| (name, v.clone())))
}

/// The name of package `name` = `version`'s kernel image in the shared
/// `.deb` cache (`apt`'s file naming: an epoch's colon as `%3a`).
fn stash_name((name, version): &(String, String)) -> String {
    format!("{name}_{}.vmlinuz", version.replace(':', "%3a"))
}

/// Keep `image` (a basefs's `boot/vmlinuz-KVER`, installed from `package`)
/// in the shared `.deb` cache `debs`, for `from_stash`. Written to a temp
/// file and renamed: a reader sees the whole image or none.
pub fn stash(debs: &Path, package: &(String, String), image: &Path) -> anyhow::Result<()> {
    let name = stash_name(package);
    if debs.join(&name).is_file() {
        return Ok(());
    }
    let mut from =
        std::fs::File::open(image).with_context(|| format!("cannot read {}", image.display()))?;
    crate::artifact::write_atomic(debs, &name, |f| std::io::copy(&mut from, f).map(|_| ()))?;
    Ok(())
}

/// Put `boot/vmlinuz-KVER` of `package` under `root` from the shared
/// `.deb` cache `debs`, if a basefs build kept it there (`stash`).
pub fn from_stash(
    debs: &Path,
    package: &(String, String),
    kver: &str,
    root: &Path,
) -> anyhow::Result<bool> {
    let kept = debs.join(stash_name(package));
    if !kept.is_file() {
        return Ok(false);
    }
    std::fs::create_dir_all(root.join("boot"))?;
    let dest = root.join(format!("boot/vmlinuz-{kver}"));
    std::fs::copy(&kept, &dest)
        .with_context(|| format!("cannot copy {} to {}", kept.display(), dest.display()))?;
    tracing::info!(package = %package.0, version = %package.1, "the basefs ships no kernel image: taking the one its build kept in the cache");
    Ok(true)
}

/// Put `boot/vmlinuz-KVER` of package `name` = `version` under `root`.
pub fn fetch(
    fetcher: &Fetcher,
    (name, version): &(String, String),
    kver: &str,
    root: &Path,
) -> anyhow::Result<()> {
    tracing::info!(package = %name, %version, "the basefs ships no kernel image: taking it from its kernel package");
    let pkg = fetcher.resolve_exact(name, version).map_err(|e| {
        // Only a package the lists lack is the basefs's fault; a mirror that fails is not.
        match e.downcast_ref() {
            Some(DebError::NotFound { .. }) => e.context(format!("the basefs has no boot/vmlinuz-{kver} and its kernel package {name} {version} cannot be found; rebuild the basefs")),
            _ => e,
        }
    })?;
    let tree = fetcher.unpacked(&pkg)?;
    let image = tree.join(format!("boot/vmlinuz-{kver}"));
    let dest = root.join(format!("boot/vmlinuz-{kver}"));
    std::fs::create_dir_all(root.join("boot"))?;
    std::fs::copy(&image, &dest)
        .with_context(|| format!("package {name} {version} has no {}", image.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_kernel_package() {
        let mut p = BTreeMap::new();
        p.insert("linux-image-amd64".to_string(), "6.1.176-1".to_string());
        p.insert(
            "linux-image-6.1.0-50-amd64".to_string(),
            "6.1.176-1".to_string(),
        );
        assert_eq!(
            package_of(&p, "6.1.0-50-amd64"),
            Some(("linux-image-6.1.0-50-amd64".into(), "6.1.176-1".into()))
        );
        assert_eq!(package_of(&p, "6.1.0-49-amd64"), None);
    }

    #[test]
    fn a_stashed_image_comes_back_whole_and_only_for_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let debs = dir.path().join("debs");
        let image = dir.path().join("vmlinuz");
        std::fs::write(&image, b"MZ kernel bytes").unwrap();
        let pkg = (
            "linux-image-6.1.0-50-amd64".to_string(),
            "1:6.1.176-1".to_string(),
        );
        stash(&debs, &pkg, &image).unwrap();
        assert!(debs
            .join("linux-image-6.1.0-50-amd64_1%3a6.1.176-1.vmlinuz")
            .is_file());
        let root = dir.path().join("root");
        assert!(from_stash(&debs, &pkg, "6.1.0-50-amd64", &root).unwrap());
        assert_eq!(
            std::fs::read(root.join("boot/vmlinuz-6.1.0-50-amd64")).unwrap(),
            b"MZ kernel bytes"
        );
        let other = (pkg.0.clone(), "1:6.1.177-1".to_string());
        assert!(!from_stash(&debs, &other, "6.1.0-50-amd64", &root).unwrap());
        let names: Vec<_> = std::fs::read_dir(&debs)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
    }
}
