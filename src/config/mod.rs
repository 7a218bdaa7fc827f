//! Vars files: YAML with includes and `--var` overrides, validated into a
//! build plan. Every error names file:line:col and the key path.

use std::path::PathBuf;

/// A config error: always the user's to fix (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// `mkimage check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// A vars file to validate.
    #[arg(long)]
    pub vars: Option<PathBuf>,
    /// A playbook to validate (every build it lists).
    pub playbook: Option<PathBuf>,
    /// Override a variable: key=value (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars_override: Vec<String>,
}

pub fn check(_args: &CheckArgs) -> anyhow::Result<()> {
    Err(crate::UsageError("`mkimage check` is not yet implemented".into()).into())
}
