//! Reading facts off a built tree: installed packages and kernel versions,
//! for the manifest.

use std::collections::BTreeMap;
use std::path::Path;

/// Installed packages (name → version) from the tree's dpkg status.
pub fn packages(root: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap_or_default();
    crate::apt::deb822::parse(&text)
        .iter()
        .filter(|p| p.get("Status").is_some_and(|s| s.ends_with(" installed")))
        .filter_map(|p| Some((p.get("Package")?.to_string(), p.get("Version")?.to_string())))
        .collect()
}

/// Kernel versions with modules in the tree (`/lib/modules/<ver>`), sorted.
pub fn kernel_versions(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for dir in crate::kmod::MODULE_DIRS {
        if let Ok(rd) = std::fs::read_dir(root.join(dir)) {
            found.extend(
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().to_string()),
            );
        }
    }
    found.sort();
    found.dedup();
    found
}

/// A hash of everything an initrd takes from the tree: `/boot/vmlinuz-*`,
/// `/lib/modules` and `/lib/firmware` (paths, modes, contents, links).
/// `None` when the tree has no kernel.
pub fn kernel_hash(root: &Path) -> anyhow::Result<Option<String>> {
    let mut parts = BTreeMap::new();
    let boot = crate::provision::paths::resolve(root, "/boot", true).map_err(anyhow::Error::msg)?;
    if let Ok(rd) = std::fs::read_dir(&boot) {
        for e in rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
        {
            for (rel, hash) in crate::artifact::inputs::tree_hashes(&e.path())? {
                parts.insert(format!("boot/{rel}"), hash);
            }
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    for dir in ["/lib/modules", "/lib/firmware"] {
        let path = crate::provision::paths::resolve(root, dir, true).map_err(anyhow::Error::msg)?;
        if path.is_dir() {
            for (rel, hash) in crate::artifact::inputs::tree_hashes(&path)? {
                parts.insert(format!("{dir}/{rel}"), hash);
            }
        }
    }
    Ok(Some(crate::artifact::inputs::combined(&parts)))
}
