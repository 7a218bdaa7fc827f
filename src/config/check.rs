//! `mkimage check`: validate a vars file (or every build of a playbook) and
//! the roles it names — modules known, sources present, templates render —
//! without building anything or needing root.

use std::path::PathBuf;

use super::ConfigError;

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

pub fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let files: Vec<PathBuf> = match (&args.vars, &args.playbook) {
        (Some(v), None) => vec![v.clone()],
        (None, Some(p)) => crate::build::playbook::load(p)?.builds.into_iter().map(|b| b.vars).collect(),
        _ => return Err(crate::UsageError("give either --vars FILE or a PLAYBOOK".into()).into()),
    };
    for file in files {
        let cfg = check_vars(&file, &args.vars_override)?;
        println!("{}: ok ({} role{})", file.display(), cfg.provisioners.len(), if cfg.provisioners.len() == 1 { "" } else { "s" });
    }
    Ok(())
}

/// Load a vars file and check every role it names.
pub fn check_vars(file: &std::path::Path, overrides: &[String]) -> Result<super::Config, ConfigError> {
    let cfg = super::load(file, overrides)?;
    for name in &cfg.provisioners {
        let role = crate::provision::load_role(&cfg.provisioners_dir, name)
            .map_err(|e| ConfigError(format!("{}: {e}", file.display())))?;
        role.check(&cfg.context).map_err(|e| ConfigError(format!("{}: {e}", role.dir.join("tasks.yml").display())))?;
    }
    Ok(cfg)
}
