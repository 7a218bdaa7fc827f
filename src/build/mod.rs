//! The builds: basefs, overlay, initrd, and playbooks that chain them.

pub mod initrd;

use std::path::PathBuf;

/// Which image a build makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Basefs,
    Overlay,
    Initrd,
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

pub fn run(kind: Kind, _args: &BuildArgs) -> anyhow::Result<()> {
    Err(crate::UsageError(format!("`mkimage {kind:?}` is not yet implemented").to_lowercase()).into())
}

pub fn play(_args: &PlayArgs) -> anyhow::Result<()> {
    Err(crate::UsageError("`mkimage play` is not yet implemented".into()).into())
}
