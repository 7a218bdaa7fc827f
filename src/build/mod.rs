//! The builds: basefs, overlay, initrd, and playbooks that chain them.
//! Each reads as named steps: load config → enter sandbox → bootstrap or
//! mount inputs → run roles → clean → pack → publish.

pub mod basefs;
pub mod cleanup;
pub mod initrd;
pub mod overlay;
pub mod playbook;
pub mod tree;
pub mod workdir;

use std::path::{Path, PathBuf};

use crate::config::Config;

/// Which image a build makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Basefs,
    Overlay,
    Initrd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Basefs => "basefs",
            Kind::Overlay => "overlay",
            Kind::Initrd => "initrd",
        }
    }
}

/// Flags shared by `basefs`, `overlay` and `initrd`.
#[derive(Debug, Clone, clap::Args)]
pub struct BuildArgs {
    /// The vars file describing the build.
    #[arg(long)]
    pub vars: PathBuf,
    /// Override a variable: key=value (repeatable; wins over every file).
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars_override: Vec<String>,
    /// Where artifacts go (and where inputs such as the basefs are found).
    #[arg(long, default_value = "builds")]
    pub out: PathBuf,
    /// Keep the build directory when the build fails (for debugging).
    #[arg(long)]
    pub keep_build_dir: bool,
}

/// `mkimage play`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlayArgs {
    /// The playbook: an ordered list of builds.
    pub playbook: PathBuf,
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars_override: Vec<String>,
    #[arg(long, default_value = "builds")]
    pub out: PathBuf,
    #[arg(long)]
    pub keep_build_dir: bool,
}

/// Everything a build step needs.
pub struct Job<'a> {
    pub cfg: &'a Config,
    pub out: &'a Path,
    pub keep_build_dir: bool,
    pub progress: &'a crate::progress::Progress,
    /// Where mounts go (the kernel, or a recorder in tests).
    pub sys: &'a dyn crate::sys::Sys,
}

impl Job<'_> {
    /// Caches shared by every build: `cache_dir:` or OUT/.cache.
    pub fn cache_root(&self) -> PathBuf {
        self.cfg.cache_dir.clone().unwrap_or_else(|| self.out.join(".cache"))
    }

    /// The shared .deb cache.
    pub fn package_cache(&self) -> PathBuf {
        self.cache_root().join("debs")
    }
}

/// `mkimage basefs|overlay|initrd --vars FILE`.
pub fn run(kind: Kind, args: &BuildArgs) -> anyhow::Result<()> {
    // Config errors are reported before anything needs root.
    let cfg = crate::config::check::check_vars(&args.vars, &args.vars_override)?;
    crate::sys::sandbox::enter()?;
    let progress = crate::progress::Progress::new();
    let job = Job { cfg: &cfg, out: &args.out, keep_build_dir: args.keep_build_dir, progress: &progress, sys: &crate::sys::REAL };
    build(kind, &job)
}

/// Run one build inside the sandbox.
pub fn build(kind: Kind, job: &Job) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let published = match kind {
        Kind::Basefs => basefs::build(job)?,
        Kind::Overlay => overlay::build(job)?,
        Kind::Initrd => initrd::job::build(job)?,
    };
    job.progress.finish();
    for entry in &published {
        println!("{}  {}  {} bytes", entry.sha256, job.out.join(&entry.file).display(), entry.size);
    }
    tracing::info!("{} `{}` built in {:.1}s", kind.name(), job.cfg.name, started.elapsed().as_secs_f64());
    Ok(())
}

/// `mkimage play PLAYBOOK`: every build in order, stopping at the first failure.
pub fn play(args: &PlayArgs) -> anyhow::Result<()> {
    let book = playbook::load(&args.playbook)?;
    let mut configs = Vec::new();
    for b in &book.builds {
        let cfg = crate::config::check::check_vars(&b.vars, &[b.overrides.clone(), args.vars_override.clone()].concat())?;
        configs.push((b.kind, cfg));
    }
    crate::sys::sandbox::enter()?;
    let progress = crate::progress::Progress::new();
    for (i, (kind, cfg)) in configs.iter().enumerate() {
        progress.step(format!("play {}/{}: {} `{}`", i + 1, configs.len(), kind.name(), cfg.name));
        let job = Job { cfg, out: &args.out, keep_build_dir: args.keep_build_dir, progress: &progress, sys: &crate::sys::REAL };
        build(*kind, &job).map_err(|e| e.context(format!("{}: build {} ({} `{}`) failed", args.playbook.display(), i + 1, kind.name(), cfg.name)))?;
    }
    Ok(())
}
