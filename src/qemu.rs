//! `mkimage boot-test`: netboot the artifacts in QEMU and assert on the
//! serial console that the machine came up.

use std::path::PathBuf;

/// `mkimage boot-test`.
#[derive(Debug, Clone, clap::Args)]
pub struct BootTestArgs {
    /// A playbook whose output to boot.
    pub playbook: Option<PathBuf>,
    /// The directory holding the artifacts.
    #[arg(long, default_value = "builds")]
    pub dir: PathBuf,
}

pub fn run(_args: &BootTestArgs) -> anyhow::Result<()> {
    Err(crate::UsageError("`mkimage boot-test` is not yet implemented".into()).into())
}
