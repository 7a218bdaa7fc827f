//! `mkimage lock`: the builds as `check` takes them, run unlocked, then
//! written to the lock file (`image::lock_cmd`).

use std::path::PathBuf;

use super::check::{target, CheckArgs};
use super::paths::absolute;

/// `mkimage lock`: what to lock as `check` takes it, then where to write.
#[derive(Debug, clap::Args)]
pub struct LockArgs {
    #[command(flatten)]
    pub builds: CheckArgs,
    /// The lock file to write (default: the `lock:` the builds name).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Keep the build directory when a build fails (for debugging).
    #[arg(long)]
    pub keep_build_dir: bool,
}

pub fn lock(a: LockArgs) -> anyhow::Result<()> {
    let b = a.builds;
    let req = mkimage::image::lock_cmd::LockRequest {
        target: target(b.vars, b.playbook)?,
        overrides: b.vars_override,
        out: absolute(&b.out)?,
        output: a.output.as_deref().map(absolute).transpose()?,
        keep_build_dir: a.keep_build_dir,
    };
    mkimage::image::lock_cmd::run(&req)
}
