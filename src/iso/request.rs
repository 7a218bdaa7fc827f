//! What `mkimage iso` is asked for, and the profile it resolves to.

use std::path::PathBuf;

use super::cmdline::Source;
use crate::artifact::Manifest;
use crate::serve::profiles::{self, BootConfig, Resolved};
use crate::UsageError;

/// `mkimage iso`, resolved by the CLI (paths absolute).
#[derive(Debug, Clone)]
pub struct Request {
    /// The directory holding the artifacts and `manifest.json`.
    pub dir: PathBuf,
    /// The boot config with the profiles (None: the basefs alone, no overlay).
    pub boot_config: Option<PathBuf>,
    pub profile: Option<String>,
    /// A node of the boot config's inventory to bake in (`node::personalize`).
    pub node: Option<String>,
    /// Where the init gets the basefs and overlays.
    pub source: Source,
    pub output: PathBuf,
}

/// The profile named (or the config's default), resolved against the manifest.
pub(super) fn resolve(
    config: Option<&BootConfig>,
    profile: Option<&str>,
    manifest: &Manifest,
) -> anyhow::Result<Resolved> {
    let chosen = match (config, profile) {
        (Some(c), Some(name)) => {
            Some(c.profiles.iter().find(|p| p.name == name).ok_or_else(|| {
                let names: Vec<&str> = c.profiles.iter().map(|p| p.name.as_str()).collect();
                UsageError(format!(
                    "--profile {name}: no such profile in the boot config (it has: {})",
                    names.join(", ")
                ))
            })?)
        }
        (Some(c), None) => c.select(None),
        (None, Some(name)) => {
            return Err(UsageError(format!(
                "--profile {name}: there is no boot config to find it in (give --boot-config FILE)"
            ))
            .into())
        }
        (None, None) => None,
    };
    Ok(match chosen {
        Some(p) => profiles::resolve(p, manifest)?,
        None => profiles::derive_default(manifest)?,
    })
}
