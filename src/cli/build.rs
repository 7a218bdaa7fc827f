//! `mkimage basefs|overlay|initrd|play`: the build flags, resolved into a
//! `BuildRequest` or `PlayRequest` for `image::run` / `image::play`.

use std::path::PathBuf;

use mkimage::image::{BuildOptions, BuildRequest, Kind, PlayRequest};

use super::paths::absolute;

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
    #[command(flatten)]
    pub cache: CacheFlags,
}

/// How much of a build may come from earlier builds (build commands and play).
#[derive(Debug, Clone, clap::Args)]
pub struct CacheFlags {
    /// Build even when the artifact is up to date (task layers are still reused).
    #[arg(long)]
    pub force: bool,
    /// Run every task afresh: no cached task layer or bootstrapped tree is
    /// used or stored (implies --force).
    #[arg(long)]
    pub no_cache: bool,
}

/// `mkimage basefs`: the build flags plus stage archives.
#[derive(Debug, Clone, clap::Args)]
pub struct BasefsArgs {
    #[command(flatten)]
    pub build: BuildArgs,
    /// Keep the provisioned tree (after the roles, before cleanup and
    /// packing) as a stage archive: FILE.tar, .tar.gz or .tar.zst.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Start from a stage archive written by --save instead of bootstrapping.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
}

/// `mkimage play`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlayArgs {
    /// The playbook: an ordered list of builds.
    pub playbook: PathBuf,
    /// Override a variable for every build: key=value (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars_override: Vec<String>,
    /// Where artifacts go.
    #[arg(long, default_value = "builds")]
    pub out: PathBuf,
    /// Keep the build directory when a build fails (for debugging).
    #[arg(long)]
    pub keep_build_dir: bool,
    #[command(flatten)]
    pub cache: CacheFlags,
}

pub fn build(
    kind: Kind,
    a: BuildArgs,
    stages: (Option<PathBuf>, Option<PathBuf>),
) -> anyhow::Result<()> {
    let mut options = build_options(&a.cache);
    options.save = stages.0.as_deref().map(absolute).transpose()?;
    options.from = stages.1.as_deref().map(absolute).transpose()?;
    let req = BuildRequest {
        kind,
        vars: absolute(&a.vars)?,
        overrides: a.vars_override,
        out: absolute(&a.out)?,
        keep_build_dir: a.keep_build_dir,
        options,
    };
    mkimage::image::run(&req)
}

fn build_options(f: &CacheFlags) -> BuildOptions {
    BuildOptions {
        force: f.force || f.no_cache,
        no_cache: f.no_cache,
        ..Default::default()
    }
}

/// `mkimage play PLAYBOOK`.
pub fn play(a: PlayArgs) -> anyhow::Result<()> {
    let req = PlayRequest {
        playbook: absolute(&a.playbook)?,
        overrides: a.vars_override,
        out: absolute(&a.out)?,
        keep_build_dir: a.keep_build_dir,
        options: build_options(&a.cache),
    };
    mkimage::image::play(&req)
}
