//! `mkimage nodes`: the node registry of a served dir, as a table, JSON, or
//! one machine (`power::node`).

use std::path::PathBuf;

use super::paths::{absolute, boot_config_or_default};
use super::power;

/// `mkimage nodes`: the node registry of a served dir.
#[derive(Debug, Clone, clap::Args)]
pub struct NodesArgs {
    /// The served dir (its records are in DIR/.state/nodes).
    #[arg(long, default_value = "builds")]
    pub dir: PathBuf,
    /// JSON (`{"nodes": [...]}`, as GET /api/nodes) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// One machine (a MAC, or a node name of the boot config's inventory):
    /// its record, power, and last boot as a timeline.
    pub node: Option<String>,
    /// The boot config whose inventory names nodes (default: vars/boot.yml if it exists).
    #[arg(long)]
    pub boot_config: Option<PathBuf>,
}

/// `mkimage nodes`: the registry's summaries, as a table or JSON.
pub fn nodes(a: &NodesArgs) -> anyhow::Result<()> {
    let dir = absolute(&a.dir)?;
    if !dir.is_dir() {
        return Err(mkimage::UsageError(format!(
            "--dir {}: not a directory (the dir `mkimage serve --dir` serves)",
            dir.display()
        ))
        .into());
    }
    if let Some(node) = &a.node {
        return power::node(
            &dir,
            node,
            boot_config_or_default(a.boot_config.as_deref())?.as_deref(),
        );
    }
    let nodes = mkimage::serve::nodes::list(&dir)?;
    match a.json {
        true => println!("{}", mkimage::serve::nodes::show::json(&nodes)),
        false if nodes.is_empty() => eprintln!(
            "no machine recorded in {} yet",
            dir.join(mkimage::serve::nodes::NODES).display()
        ),
        false => print!("{}", mkimage::serve::nodes::show::table(&nodes)),
    }
    Ok(())
}
