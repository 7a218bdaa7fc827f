//! `NODE…` on the command line → nodes of the inventory: a node's name,
//! its MAC (any common spelling), `tag:TAG` (every node with that tag) or
//! a glob over names (`rack12-*`). Each word must select something; the
//! result is in the order given, each node once.

use crate::archive::walk::glob_match;
use crate::inventory::{normalize_mac, Lab, Node};
use crate::UsageError;

/// A node picked by the command line.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub node: Node,
}

pub fn select(lab: &Lab, words: &[String]) -> Result<Vec<Target>, UsageError> {
    if lab.nodes.is_empty() {
        return Err(UsageError(format!(
            "{} has no `nodes:` inventory: list the lab's machines and their BMCs there (see docs/power.md)",
            lab.source.display()
        )));
    }
    let mut picked: Vec<Target> = Vec::new();
    for word in words {
        let names: Vec<&String> = if let Some(tag) = word.strip_prefix("tag:") {
            lab.nodes
                .iter()
                .filter(|(_, n)| n.tags.iter().any(|t| t == tag))
                .map(|(name, _)| name)
                .collect()
        } else if let Some(mac) = normalize_mac(word) {
            lab.nodes
                .iter()
                .filter(|(_, n)| n.mac == mac)
                .map(|(name, _)| name)
                .collect()
        } else if word.contains(['*', '?', '[']) {
            lab.nodes
                .keys()
                .filter(|name| glob_match(word, name))
                .collect()
        } else {
            lab.nodes.keys().filter(|name| *name == word).collect()
        };
        if names.is_empty() {
            return Err(UsageError(format!(
                "`{word}` matches no node of {} (its nodes: {}; use a name, a MAC, tag:TAG or a glob)",
                lab.source.display(),
                lab.nodes.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        for name in names {
            if !picked.iter().any(|t| &t.name == name) {
                picked.push(Target {
                    name: name.clone(),
                    node: lab.nodes[name].clone(),
                });
            }
        }
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn names_macs_tags_and_globs() {
        let lab = Lab::parse(
            Path::new("boot.yml"),
            "nodes:\n  r12-a: {mac: '52:54:00:00:00:01', tags: [rack12]}\n  r12-b: {mac: '52:54:00:00:00:02', tags: [rack12]}\n  other: {mac: '52:54:00:00:00:03'}\n",
        )
        .unwrap();
        let names = |words: &[&str]| {
            let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
            select(&lab, &words).map(|t| t.into_iter().map(|t| t.name).collect::<Vec<_>>())
        };
        assert_eq!(names(&["other"]).unwrap(), ["other"]);
        assert_eq!(names(&["52-54-00-00-00-02"]).unwrap(), ["r12-b"]);
        assert_eq!(names(&["tag:rack12", "r12-a"]).unwrap(), ["r12-a", "r12-b"]);
        assert_eq!(
            names(&["r12-*", "other"]).unwrap(),
            ["r12-a", "r12-b", "other"]
        );
        let err = names(&["nope"]).unwrap_err().0;
        assert!(
            err.contains("`nope` matches no node") && err.contains("r12-a, r12-b"),
            "{err}"
        );
        assert!(names(&["tag:rack13"]).is_err());
    }
}
