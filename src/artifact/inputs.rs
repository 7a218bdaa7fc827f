//! The hash of what went into a build: the tool version, the resolved plan
//! (its template context) and every file of the roles it runs.

use std::path::Path;

use sha2::{Digest, Sha256};

/// A hash over everything that went into a build: the tool version, the
/// resolved config (`resolved`, serialized) and every file of the role
/// directories in `roles_dir` named by `roles`.
pub fn hash(resolved: &impl serde::Serialize, roles_dir: &Path, roles: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(serde_json::to_vec(resolved).unwrap_or_default());
    for role in roles {
        hash_dir(&mut h, &roles_dir.join(role), Path::new(role));
    }
    super::hex(&h.finalize())
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
