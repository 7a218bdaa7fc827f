//! Vars files → a validated build plan. Two stages, as in ripgrep: `vars`
//! reads what the files and `--var` say (includes, overrides, templates,
//! unknown keys refused with their place); `plan` turns that into a typed
//! [`Plan`] with every option checked and every path absolute, before
//! anything is bootstrapped. `keys` is the one table of top-level keys,
//! `playbook` reads playbooks, `check` validates roles and `--var` names.

pub mod initrd;
pub mod keys;
pub(crate) mod modules;
mod plan;
pub mod playbook;
mod vars;

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value as Yaml;

pub use crate::ConfigError;
pub use keys::Kind;
pub use modules::{ModuleSelection, DEFAULT_DROP, DEFAULT_KEEP};
pub use plan::{Bootstrapper, BuildDir, InitrdPlan, KernelChoice, Plan, RAM_BUILD_MIN};
pub use vars::Vars;

/// Load and validate the plan of one build of `kind` into `out`.
pub fn load(
    file: &Path,
    overrides: &[String],
    kind: Kind,
    out: &Path,
) -> Result<Plan, ConfigError> {
    let vars = Vars::read(file, overrides)?;
    plan_of(&vars, kind, out)
}

/// The plan of already-read vars.
pub fn plan_of(vars: &Vars, kind: Kind, out: &Path) -> Result<Plan, ConfigError> {
    let mut defaults: Vec<(&str, Yaml)> = plan::TEMPLATE_DEFAULTS
        .iter()
        .map(|(k, v)| (*k, Yaml::from(*v)))
        .collect();
    let mirror_set = vars
        .keys
        .get("mirror")
        .is_some_and(|s| s.value.as_str().is_some_and(|m| !m.is_empty()));
    if !mirror_set {
        let mirror = crate::apt::host_mirror().map_err(|e| ConfigError(e.to_string()))?;
        defaults.push(("mirror", Yaml::from(mirror)));
    }
    let rendered = vars.render(&defaults)?;
    plan::build(vars, &rendered, kind, &absolute(out)?)
}

/// A path made absolute against the current directory (not resolving links).
pub fn absolute(path: &Path) -> Result<PathBuf, ConfigError> {
    std::path::absolute(path).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests;
