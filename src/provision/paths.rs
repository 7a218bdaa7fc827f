//! Paths inside the build tree, resolved as the chroot would see them:
//! symlinks are followed relative to the tree's root, never out of it.

use std::path::{Component, Path, PathBuf};

/// Resolve `guest` (an absolute path inside the tree) to a host path under
/// `root`, following symlinks in every component but the last as if `root`
/// were `/`. The last component is not followed (so `file: state=absent`
/// removes a link, not its target) unless `follow_last`.
pub fn resolve(root: &Path, guest: &str, follow_last: bool) -> Result<PathBuf, String> {
    if !guest.starts_with('/') {
        return Err(format!(
            "`{guest}` is not an absolute path inside the image"
        ));
    }
    let mut parts: Vec<String> = Vec::new();
    let mut pending: Vec<String> = components(guest);
    pending.reverse();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                parts.pop();
                continue;
            }
            _ => {}
        }
        let candidate = root.join(parts.join("/")).join(&part);
        let is_last = pending.is_empty();
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() && (!is_last || follow_last) => {
                hops += 1;
                if hops > 40 {
                    return Err(format!("`{guest}`: too many levels of symbolic links"));
                }
                let target = std::fs::read_link(&candidate).map_err(|e| e.to_string())?;
                let target = target.to_string_lossy().to_string();
                if target.starts_with('/') {
                    parts.clear();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
            _ => parts.push(part),
        }
    }
    Ok(root.join(parts.join("/")))
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().to_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("usr/lib/up")).unwrap();
        assert_eq!(
            resolve(root, "/lib/x", false).unwrap(),
            root.join("usr/lib/x")
        );
        assert_eq!(
            resolve(root, "/usr/lib/up/passwd", false).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve(root, "/../../etc", false).unwrap(),
            root.join("etc")
        );
        assert_eq!(resolve(root, "/lib", false).unwrap(), root.join("lib"));
        assert!(resolve(root, "rel", false).is_err());
    }
}
