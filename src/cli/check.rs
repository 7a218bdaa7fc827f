//! `mkimage check`: a vars file or playbook (`image::check`), or a boot
//! config (`serve::identity::check`); `CheckArgs` is also what `lock` locks.

use std::path::PathBuf;

use mkimage::image::check::Target;

use super::paths::absolute;

/// `mkimage check` (and the builds `mkimage lock` locks).
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// A vars file (its kind — basefs, overlay, initrd — is read off its keys).
    #[arg(long)]
    pub vars: Option<PathBuf>,
    /// A playbook (every build it lists).
    pub playbook: Option<PathBuf>,
    /// Override a variable: key=value (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars_override: Vec<String>,
    /// The output dir the builds use (and `cache_dir`'s default); `lock`
    /// builds there first.
    #[arg(long, default_value = "builds")]
    pub out: PathBuf,
}

/// `mkimage check`: builds (as `lock` takes them), or a boot config.
#[derive(Debug, clap::Args)]
pub struct CheckCmd {
    #[command(flatten)]
    pub builds: CheckArgs,
    /// A boot config (e.g. vars/boot.yml) instead: its keys, profiles, the
    /// lab inventory (`nodes:`) and every node's templates.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["vars", "playbook"])]
    pub boot_config: Option<PathBuf>,
}

pub fn check(a: CheckCmd) -> anyhow::Result<()> {
    if let Some(file) = a.boot_config {
        let s = mkimage::serve::identity::check::boot_config(&file)?;
        println!(
            "{}: ok ({} profiles, {} nodes, {} node files rendered)",
            file.display(),
            s.profiles,
            s.nodes,
            s.files
        );
        return Ok(());
    }
    let a = a.builds;
    let target = target(a.vars, a.playbook)?;
    mkimage::image::check(&target, &a.vars_override, &absolute(&a.out)?)
}

/// `--vars FILE` or `PLAYBOOK`, exactly one.
pub fn target(vars: Option<PathBuf>, playbook: Option<PathBuf>) -> anyhow::Result<Target> {
    match (vars, playbook) {
        (Some(v), None) => Ok(Target::Vars(absolute(&v)?)),
        (None, Some(p)) => Ok(Target::Playbook(absolute(&p)?)),
        _ => Err(mkimage::UsageError("give either --vars FILE or a PLAYBOOK".into()).into()),
    }
}
