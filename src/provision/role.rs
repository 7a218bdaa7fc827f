//! A role as loaded from disk (its tasks parsed and checked against the
//! task modules, its defaults), what a task runs with, and how a task
//! fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value as Yaml;

use super::task::{self, Task};
use crate::progress::Progress;
use crate::template::Templater;
use crate::{yaml, ConfigError};

/// A task failed while building.
#[derive(Debug, thiserror::Error)]
#[error("role `{role}`, task `{task}`: {detail}")]
pub struct TaskError {
    pub role: String,
    pub task: String,
    pub detail: String,
}

/// A role as loaded from disk.
#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub dir: PathBuf,
    pub(super) tasks_file: PathBuf,
    pub(super) text: String,
    /// Each task as written (for rendering) and as parsed (for checks).
    pub(super) tasks: Vec<(Yaml, Task)>,
    /// `defaults.yml`: variables with the lowest precedence.
    pub(super) defaults: BTreeMap<String, Yaml>,
}

/// Load `dir/<name>/tasks.yml`, rejecting unknown keys and modules.
pub fn load_role(dir: &Path, name: &str) -> Result<Role, ConfigError> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(ConfigError(format!(
            "provisioner `{name}`: a role name is a directory name under {}",
            dir.display()
        )));
    }
    let role_dir = dir.join(name);
    let tasks_file = role_dir.join("tasks.yml");
    if !tasks_file.is_file() {
        let known = list_roles(dir).join(", ");
        return Err(ConfigError(format!(
            "provisioner `{name}`: no role at {} (roles in {}: {})",
            tasks_file.display(),
            dir.display(),
            if known.is_empty() {
                "none".into()
            } else {
                known
            }
        )));
    }
    let text = std::fs::read_to_string(&tasks_file)
        .map_err(|e| ConfigError(format!("{}: cannot read: {e}", tasks_file.display())))?;
    let raw: Vec<Yaml> = if text.trim().is_empty() {
        Vec::new()
    } else {
        yaml::parse(&tasks_file, &text)?
    };
    let parsed: Vec<Task> = if text.trim().is_empty() {
        Vec::new()
    } else {
        yaml::parse(&tasks_file, &text)?
    };
    let tasks: Vec<(Yaml, Task)> = raw.into_iter().zip(parsed).collect();
    for (i, (_, task)) in tasks.iter().enumerate() {
        let modules = task::module_names(task);
        if modules.len() != 1 {
            let (line, col) = yaml::locate(&text, &[i.to_string()]);
            let what = if modules.is_empty() {
                format!("no module (use one of: {})", task::all_modules().join(", "))
            } else {
                format!("more than one module ({})", modules.join(", "))
            };
            return Err(ConfigError(format!(
                "{}:{line}:{col}: task {}: {what}",
                tasks_file.display(),
                i + 1
            )));
        }
    }
    let defaults_file = role_dir.join("defaults.yml");
    let defaults = if defaults_file.is_file() {
        yaml::load(&defaults_file)?
    } else {
        BTreeMap::new()
    };
    Ok(Role {
        name: name.to_string(),
        dir: role_dir,
        tasks_file,
        text,
        tasks,
        defaults,
    })
}

fn list_roles(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("tasks.yml").is_file())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// What a task runs with: the tree, the variables, the progress display.
pub struct Context<'a> {
    pub root: &'a Path,
    /// Mounts (and the refusal to delete through one) go through it.
    pub sys: &'a dyn crate::sys::Sys,
    pub vars: &'a minijinja::Value,
    pub progress: &'a Progress,
    pub source_date_epoch: u64,
    pub templater: Templater,
}

/// One execution of a task (one loop item).
pub(crate) struct Run<'a> {
    pub root: &'a Path,
    pub sys: &'a dyn crate::sys::Sys,
    pub role: &'a Role,
    pub ctx: minijinja::Value,
    pub env: Vec<(String, String)>,
    pub progress: &'a Progress,
    pub templater: &'a Templater,
    /// Check only: validate sources and templates, change nothing.
    pub dry: bool,
}
