//! `mkimage iso --node NAME`: one node of the lab inventory baked into an
//! ISO — its profile, `BOOTIF=` for its NIC, its static network as the
//! init's `ip=` (a machine on a network without DHCP boots from it), and
//! offline its node overlay on the medium. Online the node overlay is left
//! out: the server gives it only to the machine its boot script went to
//! (with boot tokens, to the token's holder), and an ISO boot fetches none.

use anyhow::Context;

use super::cmdline::Source;
use super::request::{resolve, Request};
use crate::artifact::Manifest;
use crate::inventory::Lab;
use crate::serve::identity::{self, Cache};
use crate::serve::profiles::{Art, BootConfig, Resolved};
use crate::{ConfigError, UsageError};

/// A node overlay for the medium (at `Art::file`) and its bytes.
pub type OnMedium = (Art, Vec<u8>);

/// The node's resolved profile, and offline its overlay.
pub fn personalize(
    req: &Request,
    config: Option<&BootConfig>,
    manifest: &Manifest,
    name: &str,
) -> anyhow::Result<(Resolved, Option<OnMedium>)> {
    let (Some(config), Some(path)) = (config, req.boot_config.as_deref()) else {
        return Err(UsageError(format!(
            "--node {name}: give --boot-config FILE, the boot config whose `nodes:` has it"
        ))
        .into());
    };
    let lab = Lab::load(path)?;
    let Some(node) = lab.nodes.get(name) else {
        let names: Vec<&str> = lab.nodes.keys().map(String::as_str).collect();
        return Err(UsageError(format!(
            "--node {name}: not in {}'s nodes: (it has: {})",
            path.display(),
            names.join(", ")
        ))
        .into());
    };
    let mac = node.mac.clone();
    let profile = req
        .profile
        .clone()
        .or_else(|| config.select(Some(&mac)).map(|p| p.name.clone()));
    let mut resolved = resolve(Some(config), profile.as_deref(), manifest)?;
    let base = match &req.source {
        Source::Server(url) => url.clone(),
        Source::Media => String::new(),
    };
    let cache = Cache::default();
    let made = identity::personalize(&mut resolved, &cache, config, path, &mac, &base)
        .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
    resolved.args = format!("BOOTIF=01-{} {}", mac.replace(':', "-"), resolved.args)
        .trim()
        .to_string();
    let Some(art) = made else {
        return Ok((resolved, None));
    };
    resolved.overlays.retain(|a| a.sha256 != art.sha256);
    if let Source::Server(_) = req.source {
        tracing::warn!("--node {name}: its node overlay is not on an online ISO (the server gives it only to the machine its boot script went to); build with --offline to carry it");
        return Ok((resolved, None));
    }
    let bytes = cache
        .get(&mac, &art.sha256)
        .context("the node overlay just made is gone")?
        .to_vec();
    let art = Art {
        remote: None,
        ..art
    };
    resolved.overlays.push(art.clone());
    Ok((resolved, Some((art, bytes))))
}
