//! A kernel's depmod index in a tree (`modules.dep`, `modules.softdep`,
//! `modules.alias`): what the basefs's module selection reads to keep every
//! module a kept one needs, closed over by [`super::close_over`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use anyhow::Context;

/// What depmod knows about a kernel's modules: files by path under
/// `kernel/`, their dependencies, soft dependencies and aliases.
pub struct Index {
    pub files: BTreeSet<String>,
    deps: BTreeMap<String, Vec<String>>,
    /// Module name → soft dependency names or aliases (pre and post).
    soft: BTreeMap<String, Vec<String>>,
    /// Exact alias → module names.
    alias: BTreeMap<String, Vec<String>>,
    by_name: BTreeMap<String, String>,
}

impl Index {
    pub fn read(dir: &Path) -> anyhow::Result<Index> {
        let kernel = dir.join("kernel");
        let mut files = BTreeSet::new();
        for item in crate::archive::walk::walk(&kernel)
            .with_context(|| format!("cannot read {}", kernel.display()))?
        {
            let rel = item.rel.to_string_lossy().to_string();
            if item.meta.is_file() && super::module_name(&item.rel).is_some() {
                files.insert(rel);
            }
        }
        let by_name = files
            .iter()
            .filter_map(|f| Some((super::module_name(Path::new(f))?, f.clone())))
            .collect();
        let read = |name: &str| {
            fs::read_to_string(dir.join(name))
                .with_context(|| format!("cannot read {}", dir.join(name).display()))
        };
        let mut deps = BTreeMap::new();
        for line in read("modules.dep")?.lines() {
            let Some((module, list)) = line.split_once(':') else {
                continue;
            };
            let strip = |p: &str| p.strip_prefix("kernel/").map(str::to_string);
            if let Some(m) = strip(module.trim()) {
                deps.insert(m, list.split_whitespace().filter_map(strip).collect());
            }
        }
        let mut soft = BTreeMap::new();
        for line in read("modules.softdep").unwrap_or_default().lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let ["softdep", module, rest @ ..] = words.as_slice() {
                let names = rest
                    .iter()
                    .filter(|w| **w != "pre:" && **w != "post:")
                    .map(|w| w.to_string());
                soft.entry(super::canonical(module))
                    .or_insert_with(Vec::new)
                    .extend(names);
            }
        }
        let mut alias = BTreeMap::new();
        for line in read("modules.alias").unwrap_or_default().lines() {
            if let ["alias", a, module] = line.split_whitespace().collect::<Vec<_>>().as_slice() {
                alias
                    .entry(a.to_string())
                    .or_insert_with(Vec::new)
                    .push(super::canonical(module));
            }
        }
        Ok(Index {
            files,
            deps,
            soft,
            alias,
            by_name,
        })
    }

    /// `start` (files under `kernel/`) and every file it needs, whatever
    /// else asked for them.
    pub fn closure(
        &self,
        start: impl IntoIterator<Item = String>,
    ) -> anyhow::Result<BTreeSet<String>> {
        super::close_over(start, |level| {
            Ok(level
                .iter()
                .flat_map(|rel| self.needs(rel))
                .filter(|dep| self.files.contains(dep))
                .collect())
        })
    }

    /// The files `rel` needs loaded: its `modules.dep` entries and its soft
    /// dependencies (by module name or exact alias).
    fn needs(&self, rel: &str) -> Vec<String> {
        let mut out = self.deps.get(rel).cloned().unwrap_or_default();
        let name = super::module_name(Path::new(rel)).unwrap_or_default();
        for s in self.soft.get(&name).into_iter().flatten() {
            let names = self
                .alias
                .get(s)
                .cloned()
                .unwrap_or_else(|| vec![super::canonical(s)]);
            out.extend(names.iter().filter_map(|n| self.by_name.get(n).cloned()));
        }
        out
    }
}
