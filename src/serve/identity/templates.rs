//! The node templates: a folder of minijinja templates mirroring the target
//! tree (`nodes/templates/etc/hostname` becomes `/etc/hostname`). The
//! repository's folder is built into the binary; a boot config's
//! `node_templates: DIR` replaces it with a folder of the site's own.

use std::path::{Path, PathBuf};

/// One template: its path in the target tree (no leading `/`) and its source.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub path: String,
    pub source: String,
}

/// The built-in templates (the files under `nodes/templates/`).
const BUILT_IN: &[(&str, &str)] = &[
    (
        "etc/hostname",
        include_str!("../../../nodes/templates/etc/hostname"),
    ),
    (
        "etc/hosts",
        include_str!("../../../nodes/templates/etc/hosts"),
    ),
    (
        "etc/mkimage/node.json",
        include_str!("../../../nodes/templates/etc/mkimage/node.json"),
    ),
    (
        "etc/systemd/network/10-mkimage-node.network",
        include_str!("../../../nodes/templates/etc/systemd/network/10-mkimage-node.network"),
    ),
    (
        "etc/systemd/network/10-mkimage-node-vlan.netdev",
        include_str!("../../../nodes/templates/etc/systemd/network/10-mkimage-node-vlan.netdev"),
    ),
    (
        "etc/systemd/network/10-mkimage-node-vlan.network",
        include_str!("../../../nodes/templates/etc/systemd/network/10-mkimage-node-vlan.network"),
    ),
    (
        "etc/systemd/network/10-mkimage-node-bond.netdev",
        include_str!("../../../nodes/templates/etc/systemd/network/10-mkimage-node-bond.netdev"),
    ),
    (
        "etc/systemd/network/10-mkimage-node-bond-ports.network",
        include_str!(
            "../../../nodes/templates/etc/systemd/network/10-mkimage-node-bond-ports.network"
        ),
    ),
    (
        "root/.ssh/authorized_keys",
        include_str!("../../../nodes/templates/root/.ssh/authorized_keys"),
    ),
];

/// The built-in templates, sorted by path.
pub fn built_in() -> Vec<Template> {
    let mut all: Vec<Template> = BUILT_IN
        .iter()
        .map(|(path, source)| Template {
            path: path.to_string(),
            source: source.to_string(),
        })
        .collect();
    all.sort_by(|a, b| a.path.cmp(&b.path));
    all
}

/// The templates of `dir` (every regular file under it), sorted by path.
pub fn load(dir: &Path) -> Result<Vec<Template>, String> {
    let mut all = Vec::new();
    walk(dir, dir, &mut all)?;
    if all.is_empty() {
        return Err(format!(
            "node_templates: {} holds no template",
            dir.display()
        ));
    }
    all.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(all)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<Template>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("node_templates: cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("node_templates: {}: {e}", dir.display()))?;
        let path: PathBuf = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| format!("node_templates: {}: {e}", path.display()))?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file() {
            let rel = path
                .strip_prefix(root)
                .map_err(|_| format!("node_templates: {} is outside", path.display()))?;
            let rel = rel
                .to_str()
                .ok_or_else(|| format!("node_templates: {} is not UTF-8", path.display()))?;
            let source = std::fs::read_to_string(&path)
                .map_err(|e| format!("node_templates: cannot read {}: {e}", path.display()))?;
            out.push(Template {
                path: rel.to_string(),
                source,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_set_is_the_repository_folder() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("nodes/templates");
        assert_eq!(load(&dir).unwrap(), built_in());
    }
}
