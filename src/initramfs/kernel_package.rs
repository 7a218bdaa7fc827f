//! The kernel image of a basefs that ships none. A netbooted machine gets
//! its kernel from the boot server, so the basefs build leaves
//! `boot/vmlinuz-VERSION` out (8 MB every machine would download and never
//! read); the initrd takes the image from the very package version the
//! basefs has installed (its manifest entry lists it), through the private
//! apt and the shared `.deb` cache the basefs build filled.

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
}
