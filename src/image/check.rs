//! `mkimage check`, and the checks every build runs before it starts:
//! the plan (every option), every role it names (modules known, sources
//! present, templates render), and every `--var` name (a top-level key, or
//! a variable some template or role reads) — without building anything or
//! needing root.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::config::{keys, playbook, Kind, Plan, Vars};
use crate::ConfigError;

/// What `mkimage check` validates.
#[derive(Debug, Clone)]
pub enum Target {
    /// One vars file; its kind is read off its keys.
    Vars(PathBuf),
    /// Every build of a playbook.
    Playbook(PathBuf),
}

/// The validated plans of what `mkimage check` names. A vars file without
/// `name:` is settings other files include (`common.yml`): its keys and
/// values are checked as they would be in a build, and it yields no plan.
pub fn plans(target: &Target, overrides: &[String], out: &Path) -> Result<Vec<Plan>, ConfigError> {
    match target {
        Target::Vars(file) => {
            let vars = Vars::read(file, overrides)?;
            let kind = Kind::infer(|k| vars.keys.contains_key(k));
            if !vars.keys.contains_key("name") {
                let named = [
                    overrides.to_vec(),
                    vec!["name=included-settings".to_string()],
                ]
                .concat();
                crate::config::plan_of(&Vars::read(file, &named)?, kind, out)?;
                return Ok(Vec::new());
            }
            Ok(vec![validated(file, overrides, kind, out)?])
        }
        Target::Playbook(p) => playbook_plans(p, overrides, out),
    }
}

/// The plan of one build, its roles checked, every `--var` read by something.
pub fn validated(
    file: &Path,
    overrides: &[String],
    kind: Kind,
    out: &Path,
) -> Result<Plan, ConfigError> {
    let vars = Vars::read(file, overrides)?;
    let plan = crate::config::plan_of(&vars, kind, out)?;
    let reads = check_roles(&plan, &vars)?;
    unread_overrides(overrides, &reads)?;
    Ok(plan)
}

/// Every build of a playbook, validated; a `--var` given for the whole
/// playbook must be read by at least one of its builds.
pub fn playbook_plans(
    path: &Path,
    overrides: &[String],
    out: &Path,
) -> Result<Vec<Plan>, ConfigError> {
    let book = playbook::load(path)?;
    let mut plans = Vec::new();
    let mut reads = BTreeSet::new();
    for b in &book.builds {
        let vars = Vars::read(&b.vars, &[b.overrides.clone(), overrides.to_vec()].concat())?;
        let plan = crate::config::plan_of(&vars, b.kind, out)?;
        let build_reads = check_roles(&plan, &vars)?;
        unread_overrides(&b.overrides, &build_reads)?;
        reads.extend(build_reads);
        plans.push(plan);
    }
    unread_overrides(overrides, &reads)?;
    Ok(plans)
}

/// Check every role of the plan; returns the variables the build reads:
/// its vars files' templates, its roles, and (initrd) the init's defaults.
fn check_roles(plan: &Plan, vars: &Vars) -> Result<BTreeSet<String>, ConfigError> {
    let mut reads = BTreeSet::new();
    if plan.kind == Kind::Initrd {
        reads.extend(["onfail", "retries", "backoff", "rootsize"].map(String::from));
    }
    for setting in vars.keys.values().chain(vars.vars.values()) {
        reads.extend(crate::template::yaml_reads(&setting.value));
    }
    for name in &plan.provisioners {
        let role = crate::provision::load_role(&plan.provisioners_dir, name)
            .map_err(|e| ConfigError(format!("{}: {e}", plan.file.display())))?;
        role.check(&plan.context)
            .map_err(|e| ConfigError(format!("{}: {e}", role.dir.join("tasks.yml").display())))?;
        reads.extend(role.reads());
    }
    Ok(reads)
}

/// Refuse a `--var` that names neither a top-level key nor a variable read.
fn unread_overrides(overrides: &[String], reads: &BTreeSet<String>) -> Result<(), ConfigError> {
    for item in overrides {
        let key = item
            .split_once('=')
            .map_or(item.as_str(), |(k, _)| k)
            .trim();
        let var = key.strip_prefix("vars.").unwrap_or(key);
        if keys::get(key).is_some() || reads.contains(var) {
            continue;
        }
        let candidates = keys::KEYS
            .iter()
            .map(|k| k.name)
            .chain(reads.iter().map(String::as_str));
        let hint = keys::closest(var, candidates)
            .map(|c| format!("did you mean `{c}`? "))
            .unwrap_or_default();
        return Err(ConfigError(format!(
            "--var {key}: `{var}` is not a top-level key, and no template or role of this build reads it; {hint}(top-level keys: {})",
            keys::KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}
