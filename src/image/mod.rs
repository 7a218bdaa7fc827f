//! The builds: basefs, overlay and initrd, and playbooks that chain them.
//! Each reads as named steps: validated plan → enter the sandbox →
//! bootstrap or mount inputs → run roles → clean → pack → publish.

pub mod basefs;
pub mod cleanup;
pub mod facts;
pub mod initrd;
pub mod kernel;
pub mod modules_xz;
pub mod never_ship;
pub mod overlay;
pub mod workdir;

use std::path::PathBuf;

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
}

/// `mkimage play PLAYBOOK`, resolved by the CLI.
#[derive(Debug, Clone)]
pub struct PlayRequest {
    pub playbook: PathBuf,
    pub overrides: Vec<String>,
    pub out: PathBuf,
    pub keep_build_dir: bool,
}

/// Everything a build step needs.
pub struct Job<'a> {
    pub plan: &'a Plan,
    pub keep_build_dir: bool,
    pub progress: &'a Progress,
    /// Where mounts go (the kernel, or a recorder in tests).
    pub sys: &'a dyn Sys,
}

/// `mkimage check`: every option, role and `--var` of the builds named,
/// and whether the bootstrapper takes the options given; builds nothing.
pub fn check(target: &crate::config::check::Target, overrides: &[String], out: &std::path::Path) -> anyhow::Result<()> {
    let plans = crate::config::check::plans(target, overrides, out)?;
    if let (crate::config::check::Target::Vars(file), true) = (target, plans.is_empty()) {
        println!("{}: ok (settings for other vars files to include; no `name:`, so no build)", file.display());
    }
    preflight(&plans)?;
    for plan in plans {
        let n = plan.provisioners.len();
        println!("{}: ok ({} build, {}, {n} role{})", plan.file.display(), plan.kind.name(), plan.suite, if n == 1 { "" } else { "s" });
    }
    Ok(())
}

/// What can be known wrong before the sandbox is entered.
fn preflight(plans: &[Plan]) -> anyhow::Result<()> {
    for plan in plans.iter().filter(|p| p.kind == Kind::Basefs) {
        crate::bootstrap::preflight(plan)?;
    }
    Ok(())
}

/// `mkimage basefs|overlay|initrd --vars FILE`.
pub fn run(req: &BuildRequest) -> anyhow::Result<()> {
    // Every option and role is checked before anything needs root.
    let plan = crate::config::check::validated(&req.vars, &req.overrides, req.kind, &req.out)?;
    preflight(std::slice::from_ref(&plan))?;
    crate::sys::sandbox::enter()?;
    let progress = Progress::new();
    let job = Job { plan: &plan, keep_build_dir: req.keep_build_dir, progress: &progress, sys: &crate::sys::REAL };
    build(&job)
}

/// Run one build inside the sandbox.
pub fn build(job: &Job) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let plan = job.plan;
    let published = match plan.kind {
        Kind::Basefs => basefs::build(job)?,
        Kind::Overlay => overlay::build(job)?,
        Kind::Initrd => initrd::build(job)?,
    };
    job.progress.finish();
    for entry in &published {
        println!("{}  {}  {} bytes", entry.sha256, plan.out.join(&entry.file).display(), entry.size);
    }
    tracing::info!("{} `{}` built in {:.1}s", plan.kind.name(), plan.name, started.elapsed().as_secs_f64());
    Ok(())
}

/// `mkimage play PLAYBOOK`: every build in order, stopping at the first failure.
pub fn play(req: &PlayRequest) -> anyhow::Result<()> {
    let plans = crate::config::check::playbook_plans(&req.playbook, &req.overrides, &req.out)?;
    preflight(&plans)?;
    crate::sys::sandbox::enter()?;
    let progress = Progress::new();
    for (i, plan) in plans.iter().enumerate() {
        progress.step(format!("play {}/{}: {} `{}`", i + 1, plans.len(), plan.kind.name(), plan.name));
        let job = Job { plan, keep_build_dir: req.keep_build_dir, progress: &progress, sys: &crate::sys::REAL };
        build(&job).map_err(|e| e.context(format!("{}: build {} ({} `{}`) failed", req.playbook.display(), i + 1, plan.kind.name(), plan.name)))?;
    }
    Ok(())
}
