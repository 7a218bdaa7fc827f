//! The builds: basefs, overlay and initrd, and playbooks that chain them.
//! Each reads as named steps: validated plan → enter the sandbox →
//! bootstrap or mount inputs → run roles → clean → pack → publish.

pub mod basefs;
pub mod cleanup;
pub mod facts;
pub mod flatten;
pub mod initrd;
pub mod inputs;
pub mod kernel;
pub mod lock;
pub mod modules_xz;
pub mod never_ship;
pub mod overlay;
pub mod uptodate;
pub mod workdir;

use std::path::PathBuf;

use crate::artifact::inputs::Inputs;
use crate::artifact::{Entry, Manifest};
pub use crate::config::Kind;
use crate::config::Plan;
use crate::progress::Progress;
use crate::sys::Sys;

/// `mkimage basefs|overlay|initrd --vars FILE`, resolved by the CLI.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub kind: Kind,
    pub vars: PathBuf,
    /// `--var KEY=VALUE`, in order.
    pub overrides: Vec<String>,
    /// Where artifacts go (and where inputs such as the basefs are found).
    pub out: PathBuf,
    /// Keep the build directory when the build fails (for debugging).
    pub keep_build_dir: bool,
    pub options: BuildOptions,
}

/// `mkimage play PLAYBOOK`, resolved by the CLI.
#[derive(Debug, Clone)]
pub struct PlayRequest {
    pub playbook: PathBuf,
    pub overrides: Vec<String>,
    pub out: PathBuf,
    pub keep_build_dir: bool,
    pub options: BuildOptions,
}

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

/// `mkimage check`: every option, role and `--var` of the builds named,
/// and whether the bootstrapper takes the options given; builds nothing.
pub fn check(
    target: &crate::config::check::Target,
    overrides: &[String],
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let plans = crate::config::check::plans(target, overrides, out)?;
    if let (crate::config::check::Target::Vars(file), true) = (target, plans.is_empty()) {
        println!(
            "{}: ok (settings for other vars files to include; no `name:`, so no build)",
            file.display()
        );
    }
    preflight(&plans)?;
    for plan in plans {
        let n = plan.provisioners.len();
        println!(
            "{}: ok ({} build, {}, {n} role{})",
            plan.file.display(),
            plan.kind.name(),
            plan.suite,
            if n == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// What can be known wrong before the sandbox is entered.
fn preflight(plans: &[Plan]) -> anyhow::Result<()> {
    for plan in plans.iter().filter(|p| p.kind == Kind::Basefs) {
        crate::bootstrap::preflight(plan)?;
    }
    for plan in plans {
        if let Some(lock) = &plan.lock {
            crate::lockfile::Lock::load(lock, &plan.file)?.check_for(
                lock,
                &plan.suite,
                &plan.arch,
            )?;
        }
    }
    Ok(())
}

/// `mkimage basefs|overlay|initrd --vars FILE`.
pub fn run(req: &BuildRequest) -> anyhow::Result<()> {
    // Every option and role is checked before anything needs root.
    let plan = crate::config::check::validated(&req.vars, &req.overrides, req.kind, &req.out)?;
    preflight(std::slice::from_ref(&plan))?;
    if let Some(save) = &req.options.save {
        crate::stage::check_name(save)?;
    }
    if let Some(from) = &req.options.from {
        crate::stage::check_name(from)?;
        if !from.is_file() {
            return Err(crate::UsageError(format!(
                "--from {}: no such stage archive (write one with `mkimage basefs --save FILE`)",
                from.display()
            ))
            .into());
        }
    }
    crate::sys::sandbox::enter()?;
    let progress = Progress::new();
    let job = Job {
        plan: &plan,
        keep_build_dir: req.keep_build_dir,
        progress: &progress,
        sys: &crate::sys::REAL,
        options: &req.options,
    };
    build(&job)?;
    print_times();
    Ok(())
}

/// The time table of what was built (stderr: stdout holds the artifacts).
fn print_times() {
    if let Some(table) = crate::timings::table() {
        eprint!("{table}");
    }
}

/// Run one build inside the sandbox.
pub fn build(job: &Job) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let plan = job.plan;
    crate::timings::build(format!("{} `{}`", plan.kind.name(), plan.name));
    let published = match plan.kind {
        Kind::Basefs => basefs::build(job)?,
        Kind::Overlay => overlay::build(job)?,
        Kind::Initrd => initrd::build(job)?,
    };
    job.progress.finish();
    for entry in &published {
        println!(
            "{}  {}  {} bytes",
            entry.sha256,
            plan.out.join(&entry.file).display(),
            entry.size
        );
    }
    tracing::info!(
        "{} `{}` done in {:.1}s",
        plan.kind.name(),
        plan.name,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The entries of a build's artifacts `files` when the build is up to date
/// (logged as such), else `None`, with the reason logged: the inputs that
/// changed, a missing artifact, `--force`.
fn up_to_date(job: &Job, files: &[String], inputs: &Inputs) -> anyhow::Result<Option<Vec<Entry>>> {
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
fn pins(plan: &Plan) -> anyhow::Result<Option<crate::lockfile::Pinned>> {
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
fn run_roles(
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
        },
    };
    stack.run(&roles, &env)
}

/// The key of the tree a build's task layers start from: the tool, the
/// build's kind, what names the tree (`below`) and the build's
/// SOURCE_DATE_EPOCH (every task sees it).
fn layers_key(plan: &Plan, below: &[&str]) -> String {
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
fn stamp(entries: &mut [Entry], inputs: &Inputs) {
    for e in entries {
        e.inputs_hash = inputs.hash();
        e.inputs = inputs.parts().clone();
    }
}

/// `mkimage play PLAYBOOK`: every build in order, stopping at the first failure.
pub fn play(req: &PlayRequest) -> anyhow::Result<()> {
    let plans = crate::config::check::playbook_plans(&req.playbook, &req.overrides, &req.out)?;
    play_plans(&plans, &req.playbook, req.keep_build_dir, &req.options)
}

/// Every build of `plans` (from the file `source`) in order, in the
/// sandbox, stopping at the first failure.
fn play_plans(
    plans: &[Plan],
    source: &std::path::Path,
    keep_build_dir: bool,
    options: &BuildOptions,
) -> anyhow::Result<()> {
    preflight(plans)?;
    crate::sys::sandbox::enter()?;
    let progress = Progress::new();
    for (i, plan) in plans.iter().enumerate() {
        progress.step(format!(
            "play {}/{}: {} `{}`",
            i + 1,
            plans.len(),
            plan.kind.name(),
            plan.name
        ));
        let job = Job {
            plan,
            keep_build_dir,
            progress: &progress,
            sys: &crate::sys::REAL,
            options,
        };
        build(&job).map_err(|e| {
            e.context(format!(
                "{}: build {} ({} `{}`) failed",
                source.display(),
                i + 1,
                plan.kind.name(),
                plan.name
            ))
        })?;
    }
    progress.finish();
    print_times();
    Ok(())
}
