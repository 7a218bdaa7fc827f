//! What went into a build, part by part: the tool version, each key of the
//! resolved plan, every file of the roles and templates it used, the
//! package index (or lock file) it installed from and the artifacts it was
//! built on — each under a name (`plan:vars`,
//! `provisioners/discovery/files/mkimage-discovery`, `index:bookworm/main`,
//! `parent:basefs.squashfs`, `tool`) with its sha256. The combined hash
//! decides whether a build is up to date; comparing two records names the
//! inputs that changed.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};

/// The name of the tool-version part.
pub const TOOL: &str = "tool";

/// The inputs of one build, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs {
    parts: BTreeMap<String, String>,
}

impl Inputs {
    /// A record holding the tool version.
    pub fn new() -> Inputs {
        let mut inputs = Inputs::default();
        inputs.add(
            TOOL,
            super::sha256_bytes(env!("CARGO_PKG_VERSION").as_bytes()),
        );
        inputs
    }

    /// One part, by the hash the caller computed.
    pub fn add(&mut self, name: impl Into<String>, sha256: impl Into<String>) {
        self.parts.insert(name.into(), sha256.into());
    }

    /// One part, by its bytes.
    pub fn add_bytes(&mut self, name: impl Into<String>, bytes: &[u8]) {
        self.add(name, super::sha256_bytes(bytes));
    }

    /// Every file under `dir`, each as `label/REL` (a symlink by its
    /// target, a file by its mode and content). A missing dir adds nothing.
    pub fn add_tree(&mut self, label: &str, dir: &Path) -> anyhow::Result<()> {
        if !dir.exists() {
            return Ok(());
        }
        for (rel, hash) in tree_hashes(dir)? {
            self.add(format!("{label}/{rel}"), hash);
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.parts.get(name).map(String::as_str)
    }

    pub fn parts(&self) -> &BTreeMap<String, String> {
        &self.parts
    }

    /// The hash over every part (names and hashes, sorted).
    pub fn hash(&self) -> String {
        combined(&self.parts)
    }

    /// What changed from `old` to this record, one phrase per part:
    /// `X changed`, `X is new`, `X is gone`.
    pub fn changes_from(&self, old: &BTreeMap<String, String>) -> Vec<String> {
        let mut out = Vec::new();
        for (name, hash) in &self.parts {
            match old.get(name) {
                Some(h) if h == hash => {}
                Some(_) => out.push(format!("{name} changed")),
                None => out.push(format!("{name} is new")),
            }
        }
        out.extend(
            old.keys()
                .filter(|k| !self.parts.contains_key(*k))
                .map(|k| format!("{k} is gone")),
        );
        out
    }
}

/// The hash over named parts, as [`Inputs::hash`] computes it.
pub fn combined(parts: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (name, hash) in parts {
        h.update(name.as_bytes());
        h.update(b"=");
        h.update(hash.as_bytes());
        h.update(b"\n");
    }
    crate::hex::hex(&h.finalize())
}

/// Each file and symlink under `dir` (relative path → sha256 of its mode
/// and content, or of its link target), in walk order.
pub fn tree_hashes(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let items =
        crate::archive::walk(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut out = Vec::new();
    for item in items.iter().filter(|i| !i.meta.is_dir()) {
        let mut h = Sha256::new();
        if item.meta.file_type().is_symlink() {
            let target = std::fs::read_link(&item.abs)
                .with_context(|| format!("cannot read {}", item.abs.display()))?;
            h.update(b"link:");
            h.update(target.as_os_str().as_encoded_bytes());
        } else {
            h.update(format!("{:o}:", item.meta.permissions().mode() & 0o7777).as_bytes());
            let mut file = std::fs::File::open(&item.abs)
                .with_context(|| format!("cannot read {}", item.abs.display()))?;
            std::io::copy(&mut file, &mut h)
                .with_context(|| format!("cannot read {}", item.abs.display()))?;
        }
        let rel = if item.rel.as_os_str().is_empty() {
            item.abs.file_name().unwrap_or_default().into()
        } else {
            item.rel.clone()
        };
        out.push((
            rel.to_string_lossy().into_owned(),
            crate::hex::hex(&h.finalize()),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let role = dir.path().join("discovery");
        std::fs::create_dir_all(role.join("files")).unwrap();
        std::fs::write(role.join("tasks.yml"), "- shell: true\n").unwrap();
        std::fs::write(role.join("files/mkimage-discovery"), "#!/bin/sh\n").unwrap();
        let record = |inputs: &mut Inputs| {
            inputs.add_tree("provisioners/discovery", &role).unwrap();
            inputs.add("parent:basefs.squashfs", "aa");
        };
        let mut old = Inputs::new();
        record(&mut old);
        let mut same = Inputs::new();
        record(&mut same);
        assert_eq!(old.hash(), same.hash());
        assert!(same.changes_from(old.parts()).is_empty());

        std::fs::write(role.join("files/mkimage-discovery"), "#!/bin/sh\necho\n").unwrap();
        let mut new = Inputs::new();
        record(&mut new);
        new.add("index:bookworm/main", "bb");
        assert_ne!(new.hash(), old.hash());
        assert_eq!(
            new.changes_from(old.parts()),
            [
                "index:bookworm/main is new",
                "provisioners/discovery/files/mkimage-discovery changed"
            ]
        );

        // A mode change alone is a change (copy keeps the source's mode).
        let mut perms = std::fs::metadata(role.join("tasks.yml"))
            .unwrap()
            .permissions();
        perms.set_mode(0o755);
        std::fs::set_permissions(role.join("tasks.yml"), perms).unwrap();
        let mut moded = Inputs::new();
        moded.add_tree("provisioners/discovery", &role).unwrap();
        assert_eq!(
            moded.changes_from(new.parts()),
            [
                "provisioners/discovery/tasks.yml changed",
                "index:bookworm/main is gone",
                "parent:basefs.squashfs is gone"
            ]
        );
    }
}
