//! `mkimage check --boot-config FILE`: the boot config checked without
//! root and without a server — its keys (file:line:col), its profiles, the
//! lab inventory (`crate::inventory`: duplicate MAC, hostname or address,
//! bad CIDR), each node's profile, and every node's templates rendered, so
//! an undefined variable shows here and not when the machine boots.

use std::path::Path;

use super::super::profiles::BootConfig;
use super::{context, render, templates_of};
use crate::inventory::Lab;
use crate::yaml::locate;
use crate::ConfigError;

/// What a valid boot config holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub profiles: usize,
    pub nodes: usize,
    /// Files rendered for all nodes together.
    pub files: usize,
}

/// The server URL templates see at check time.
const CHECK_URL: &str = "http://boot-server:8080";

/// Check the boot config `path`.
pub fn boot_config(path: &Path) -> Result<Summary, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
    // Keys and types first, with their line and column.
    let _: BootConfig = crate::yaml::parse(path, &text)?;
    // The inventory (and the files it includes) before the rest, so its
    // errors name the file they are in.
    let lab = Lab::parse(path, &text)?;
    let config = BootConfig::load(path).map_err(|e| ConfigError(e.to_string()))?;
    let at = |keys: &[&str], message: String| {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let (line, col) = locate(&text, &keys);
        ConfigError(format!("{}:{line}:{col}: {message}", path.display()))
    };
    let templates = templates_of(&config, path).map_err(|e| at(&["node_templates"], e))?;
    let mut files = 0;
    for (name, node) in &lab.nodes {
        let profile =
            match &node.profile {
                Some(p) => Some(config.profiles.iter().find(|q| &q.name == p).ok_or_else(
                    || {
                        let known: Vec<&str> =
                            config.profiles.iter().map(|q| q.name.as_str()).collect();
                        at(
                            &["nodes", name, "profile"],
                            format!(
                                "nodes.{name}.profile: no profile `{p}` (the profiles are: {})",
                                known.join(", ")
                            ),
                        )
                    },
                )?),
                None => config.select(Some(&node.mac)),
            };
        let ctx = context(&config, name, node, profile, CHECK_URL);
        let rendered = render(name, &templates, &ctx).map_err(|e| {
            at(
                &["nodes", name],
                format!("nodes.{name}: template {}: {}", e.template, e.detail),
            )
        })?;
        files += rendered.len();
    }
    Ok(Summary {
        profiles: config.profiles.len(),
        nodes: lab.nodes.len(),
        files,
    })
}
