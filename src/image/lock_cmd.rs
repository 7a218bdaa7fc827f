//! `mkimage lock --vars FILE | PLAYBOOK`: run the builds against the
//! mirror as it is now (ignoring any lock they name; up-to-date builds are
//! skipped), then write every package their artifacts hold — the basefs's
//! installed packages, what each overlay adds or changes, the initrd's
//! kernel, busybox and dmsetup packages — with the `.deb` sha256 and pool
//! file the mirror's index gives for that version, to the lock file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::check::Target;
use super::{basefs, overlay, play_plans, BuildOptions, Kind};
use crate::artifact::Manifest;
use crate::config::Plan;
use crate::lockfile::{self, Lock};
use crate::UsageError;

/// `mkimage lock`, resolved by the CLI.
#[derive(Debug, Clone)]
pub struct LockRequest {
    pub target: Target,
    pub overrides: Vec<String>,
    pub out: PathBuf,
    /// Where to write; default: the `lock:` the builds name.
    pub output: Option<PathBuf>,
    pub keep_build_dir: bool,
}

pub fn run(req: &LockRequest) -> anyhow::Result<()> {
    let mut plans = super::check::plans(&req.target, &req.overrides, &req.out)?;
    let named: Vec<_> = plans
        .iter()
        .map(|p| (p.file.clone(), p.lock.clone()))
        .collect();
    let path = lockfile::target(req.output.as_deref(), &named)?;
    let first = plans
        .first()
        .ok_or_else(|| UsageError("nothing to lock".into()))?
        .clone();
    if let Some(other) = plans
        .iter()
        .find(|p| p.suite != first.suite || p.arch != first.arch || p.mirror != first.mirror)
    {
        return Err(UsageError(format!(
            "{} installs from {}/{}, {} from {}/{} (or another mirror): one lock file covers builds of one suite, architecture and mirror",
            first.file.display(),
            first.suite,
            first.arch,
            other.file.display(),
            other.suite,
            other.arch
        ))
        .into());
    }
    for plan in &mut plans {
        plan.lock = None;
    }
    let source = match &req.target {
        Target::Vars(f) | Target::Playbook(f) => f.clone(),
    };
    play_plans(
        &plans,
        &source,
        req.keep_build_dir,
        &BuildOptions::default(),
    )?;

    let wanted = installed(&plans)?;
    let versions: BTreeMap<String, String> = wanted
        .iter()
        .map(|(n, (v, _))| (n.clone(), v.clone()))
        .collect();
    let offered = lockfile::index::lookup(
        &lockfile::index::fresh_lists(&super::inputs::apt_source(&first))?,
        &versions,
    )?;
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(n, _)| !offered.contains_key(*n))
        .map(|(n, (v, by))| format!("{n} {v} (in {by})"))
        .collect();
    if !missing.is_empty() {
        return Err(UsageError(format!(
            "{} package(s) the builds hold are not in the mirror's index now: {}; the mirror changed since they were built (build again with --force, then lock), or a role installs packages from elsewhere, which a lock cannot pin",
            missing.len(),
            missing.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
        ))
        .into());
    }
    let lock = Lock {
        suite: first.suite.clone(),
        arch: first.arch.clone(),
        packages: offered,
    };
    lock.save(&path)?;
    println!(
        "{}: {} packages locked",
        path.display(),
        lock.packages.len()
    );
    Ok(())
}

/// Every package the builds' artifacts hold (name → version, and the
/// artifact it is in); two versions of one package is an error.
fn installed(plans: &[Plan]) -> anyhow::Result<BTreeMap<String, (String, String)>> {
    let mut wanted: BTreeMap<String, (String, String)> = BTreeMap::new();
    for plan in plans {
        let manifest = Manifest::load(&plan.out)?;
        let file = match plan.kind {
            Kind::Basefs => basefs::file_name(&plan.name),
            Kind::Overlay => overlay::file_name(&plan.name),
            Kind::Initrd => format!("{}.initrd", plan.name),
        };
        let entry = manifest.artifacts.get(&file).ok_or_else(|| {
            anyhow::anyhow!(
                "{file} is not in {}/manifest.json after its build",
                plan.out.display()
            )
        })?;
        for (name, version) in &entry.packages {
            match wanted.get(name) {
                Some((v, by)) if v != version => {
                    return Err(UsageError(format!("{name} is {v} in {by} but {version} in {file}: one lock file pins one version of each package; make the builds agree")).into());
                }
                Some(_) => {}
                None => {
                    wanted.insert(name.clone(), (version.clone(), file.clone()));
                }
            }
        }
    }
    Ok(wanted)
}
