//! A build job (the plan, its options, where mounts go) and the steps every
//! build kind shares: the up-to-date check, the lock in force, the roles
//! run on task layers, and the inputs recorded in the manifest entries.

use std::path::PathBuf;

use super::{inputs, uptodate};
use crate::artifact::inputs::Inputs;
use crate::artifact::{Entry, Manifest};
use crate::config::Plan;
use crate::progress::Progress;
use crate::sys::Sys;

/// How much of a build may come from what earlier builds left.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// `--force`: build even when the artifact is up to date.
    pub force: bool,
    /// `--no-cache`: run every task afresh (implies `force`); nothing
    /// cached is read, and nothing is stored.
    pub no_cache: bool,
    /// `--save FILE` (basefs): keep the provisioned tree as a stage archive.
    pub save: Option<PathBuf>,
    /// `--from FILE` (basefs): start from a stage archive, not a bootstrap.
    pub from: Option<PathBuf>,
}

/// Everything a build step needs.
pub struct Job<'a> {
    pub plan: &'a Plan,
    pub keep_build_dir: bool,
    pub progress: &'a Progress,
    /// Where mounts go (the kernel, or a recorder in tests).
    pub sys: &'a dyn Sys,
    pub options: &'a BuildOptions,
}

/// The entries of a build's artifacts `files` when the build is up to date
/// (logged as such), else `None`, with the reason logged: the inputs that
/// changed, a missing artifact, `--force`.
pub(super) fn up_to_date(
    job: &Job,
    files: &[String],
    inputs: &Inputs,
) -> anyhow::Result<Option<Vec<Entry>>> {
    let plan = job.plan;
    let what = format!("{} `{}`", plan.kind.name(), plan.name);
    let forced = [
        (job.options.no_cache, "--no-cache"),
        (job.options.force, "--force"),
        (job.options.save.is_some(), "--save"),
    ];
    if let Some((_, flag)) = forced.iter().find(|(set, _)| *set) {
        job.progress.step(format!("{what}: building ({flag})"));
        return Ok(None);
    }
    let manifest = Manifest::load(&plan.out)?;
    match uptodate::check(&plan.out, &manifest, files, inputs) {
        uptodate::Verdict::UpToDate(entries) => {
            job.progress.step(format!(
                "{what} is up to date ({}), skipped",
                files.join(", ")
            ));
            Ok(Some(entries))
        }
        uptodate::Verdict::Stale(why) => {
            job.progress.step(format!("{what}: {why}; building"));
            Ok(None)
        }
    }
}

/// The lock in force for a build about to run (`lock:`), its versions
/// checked against the mirror and the `.deb` cache before anything is built.
pub(super) fn pins(plan: &Plan) -> anyhow::Result<Option<crate::lockfile::Pinned>> {
    let Some(path) = &plan.lock else {
        return Ok(None);
    };
    let pinned = crate::lockfile::Pinned::prepare(
        path,
        &plan.file,
        &inputs::apt_source(plan),
        &plan.arch,
        &plan.package_cache(),
    )?;
    Ok(Some(pinned))
}

/// Run the plan's roles, task by task, on `stack`; `packages` is the
/// package index (or lock file) digest that keys apt tasks.
pub(super) fn run_roles(
    job: &Job,
    stack: &mut crate::provision::stack::Stack,
    packages: &str,
    pins: Option<&crate::lockfile::Pinned>,
) -> anyhow::Result<()> {
    let plan = job.plan;
    let roles = plan
        .provisioners
        .iter()
        .map(|name| crate::provision::load_role(&plan.provisioners_dir, name))
        .collect::<Result<Vec<_>, _>>()?;
    let env = crate::provision::stack::Env {
        vars: &plan.context,
        progress: job.progress,
        packages,
        source_date_epoch: plan.source_date_epoch,
        chroot: crate::provision::ChrootOptions {
            apt_proxy: plan.apt_proxy.clone(),
            package_cache: Some(plan.package_cache()),
            preferences: pins.map(|p| p.lock.preferences()),
            local_repo: pins.and_then(|p| p.repo.clone()),
            // The same lists the bootstrap fetched (a basefs and the
            // overlays on it have the same sources, so the same key).
            apt_lists: Some(plan.apt_lists(pins.is_some_and(|p| p.repo.is_some()))),
        },
    };
    stack.run(&roles, &env)
}

/// The key of the tree a build's task layers start from: the tool, the
/// build's kind, what names the tree (`below`) and the build's
/// SOURCE_DATE_EPOCH (every task sees it).
pub(super) fn layers_key(plan: &Plan, below: &[&str]) -> String {
    let text = format!(
        "mkimage {} {}\n{}\n{}",
        env!("CARGO_PKG_VERSION"),
        plan.kind.name(),
        below.join("\n"),
        plan.source_date_epoch
    );
    crate::artifact::sha256_bytes(text.as_bytes())
}

/// Record the inputs in the entries of a build.
pub(super) fn stamp(entries: &mut [Entry], inputs: &Inputs) {
    for e in entries {
        e.inputs_hash = inputs.hash();
        e.inputs = inputs.parts().clone();
    }
}
