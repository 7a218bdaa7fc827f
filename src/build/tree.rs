//! Reading facts off a built tree: installed packages, kernel version,
//! and the inputs hash that identifies a build.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

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
    for dir in ["usr/lib/modules", "lib/modules"] {
        if let Ok(rd) = std::fs::read_dir(root.join(dir)) {
            found.extend(rd.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()).map(|e| e.file_name().to_string_lossy().to_string()));
        }
    }
    found.sort();
    found.dedup();
    found
}

/// A hash over everything that went into a build: the tool version, the
/// rendered config and every file of the roles it runs.
pub fn inputs_hash(cfg: &crate::config::Config) -> String {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(serde_json::to_vec(&cfg.context).unwrap_or_default());
    for role in &cfg.provisioners {
        hash_dir(&mut h, &cfg.provisioners_dir.join(role), Path::new(role));
    }
    crate::artifact::hex(&h.finalize())
}

fn hash_dir(h: &mut Sha256, dir: &Path, rel: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = rel.join(e.file_name());
        h.update(name.to_string_lossy().as_bytes());
        if path.is_dir() {
            hash_dir(h, &path, &name);
        } else if let Ok(bytes) = std::fs::read(&path) {
            h.update(&bytes);
        }
    }
}
