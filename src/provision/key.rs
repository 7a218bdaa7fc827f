//! The cache key of a task's layer: the key of the layer below it, the task
//! as rendered (every loop item, without its `name`), the files it reads
//! (`copy`: the source's paths, modes and contents; `template`: what it
//! renders to) and, for `apt`, the package index or lock file. Editing a
//! task, a file it copies or a variable it uses changes its key and so the
//! key of every task after it.

use sha2::{Digest, Sha256};

use super::role::TaskError;
use super::Prepared;
use crate::template::Templater;
use serde_yaml_ng::Value as Yaml;

/// Keys of the task mapping that do not change what it does.
const NOT_IN_KEY: &[&str] = &["name", "cache"];

impl Prepared<'_> {
    /// The layer key of this task on top of the layer keyed `below`;
    /// `packages` stands for the package index (or lock) apt installs from.
    pub fn key(&self, below: &str, packages: &str, t: &Templater) -> Result<String, TaskError> {
        let fail = |e: anyhow::Error| TaskError {
            role: self.role.name.clone(),
            task: self.label.clone(),
            detail: crate::progress::format_error(&e),
        };
        let mut h = Sha256::new();
        h.update(b"mkimage task layer 1\n");
        h.update(below.as_bytes());
        for item in &self.items {
            h.update(b"\nitem ");
            h.update(
                serde_json::to_vec(&without_names(&item.rendered)).map_err(|e| fail(e.into()))?,
            );
            if let Some(c) = &item.task.copy {
                let src = super::file_tasks::source(self.role, "files", &c.src).map_err(fail)?;
                for (rel, hash) in crate::artifact::inputs::tree_hashes(&src).map_err(fail)? {
                    h.update(format!("\nfile {rel} {hash}").as_bytes());
                }
            }
            if let Some(c) = &item.task.template {
                let (_, text) =
                    super::file_tasks::render_template(self.role, t, c, &item.ctx).map_err(fail)?;
                h.update(b"\ntemplate ");
                h.update(text.as_bytes());
            }
            if item.task.apt.is_some() {
                h.update(b"\npackages ");
                h.update(packages.as_bytes());
            }
        }
        Ok(crate::hex::hex(&h.finalize()))
    }
}

fn without_names(task: &Yaml) -> Yaml {
    match task {
        Yaml::Mapping(map) => Yaml::Mapping(
            map.iter()
                .filter(|(k, _)| !k.as_str().is_some_and(|k| NOT_IN_KEY.contains(&k)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::load_role;

    #[test]
    fn key_follows_the_task_its_files_and_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let role = dir.path().join("r");
        std::fs::create_dir_all(role.join("files")).unwrap();
        std::fs::create_dir_all(role.join("templates")).unwrap();
        std::fs::write(role.join("files/f"), "one\n").unwrap();
        std::fs::write(role.join("templates/t.j2"), "host={{ host }}\n").unwrap();
        let tasks = "- name: a\n  copy: {src: f, dest: /f}\n- template: {src: t.j2, dest: /t}\n- apt: {pkg: [curl]}\n  cache: false\n- shell: echo {{ item }}\n  loop: [x, y]\n";
        std::fs::write(role.join("tasks.yml"), tasks).unwrap();
        let t = crate::template::Templater::default();
        let vars = |host: &str| minijinja::context! { host => host };
        let keys = |host: &str, packages: &str| -> Vec<String> {
            let r = load_role(dir.path(), "r").unwrap();
            (0..r.len())
                .map(|i| {
                    r.prepare(i, &vars(host), &t)
                        .unwrap()
                        .key("below", packages, &t)
                        .unwrap()
                })
                .collect()
        };
        let base = keys("a", "idx1");
        assert_eq!(base, keys("a", "idx1"), "stable");
        let other_host = keys("b", "idx1");
        assert_eq!(other_host[0], base[0]);
        assert_ne!(
            other_host[1], base[1],
            "a template's output is part of its key"
        );
        let other_index = keys("a", "idx2");
        assert_eq!(other_index[..2], base[..2]);
        assert_ne!(other_index[2], base[2], "apt depends on the index");
        assert_eq!(other_index[3], base[3]);
        std::fs::write(role.join("files/f"), "two\n").unwrap();
        assert_ne!(
            keys("a", "idx1")[0],
            base[0],
            "a copied file's content is part of its key"
        );
        // Renaming a task does not change it; `cache: false` is read.
        std::fs::write(
            role.join("tasks.yml"),
            tasks.replace("name: a", "name: renamed"),
        )
        .unwrap();
        std::fs::write(role.join("files/f"), "one\n").unwrap();
        assert_eq!(keys("a", "idx1")[0], base[0]);
        let r = load_role(dir.path(), "r").unwrap();
        assert!(
            !r.prepare(2, &vars("a"), &t).unwrap().cache
                && r.prepare(0, &vars("a"), &t).unwrap().cache
        );
    }
}
