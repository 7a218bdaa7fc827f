//! The boot server: HTTP (files, iPXE scripts, status, metrics) and TFTP.

use std::path::PathBuf;

/// `mkimage serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The directory to serve (the build output dir).
    #[arg(long, default_value = "builds")]
    pub dir: PathBuf,
    /// HTTP listen address.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub http: String,
    /// TFTP listen address ("off" to disable).
    #[arg(long, default_value = "0.0.0.0:69")]
    pub tftp: String,
}

pub fn run(_args: &ServeArgs) -> anyhow::Result<()> {
    Err(crate::UsageError("`mkimage serve` is not yet implemented".into()).into())
}
