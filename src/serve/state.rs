//! What every request handler shares: the served dir, the sha256 cache, the
//! counters, the compiled script templates, the boot settings and the node
//! registry. Handlers
//! read it; only the counters and caches inside change.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::admin::Admin;
use super::ipxe::Scripts;
use super::metrics::Metrics;
use super::nodes::Store;
use super::proxy::Cidr;
use super::served_dir::{Root, ShaCache};
use super::tokens::Tokens;

pub struct State {
    pub root: Root,
    pub sha: ShaCache,
    /// `--ipxe-dir`, served under `/ipxe/` (UEFI HTTP boot loads ipxe.efi there).
    pub ipxe: Option<Root>,
    pub metrics: Arc<Metrics>,
    pub scripts: Scripts,
    /// The boot config, re-read on every script request (`None`: none).
    pub boot_config: Option<PathBuf>,
    pub public_url: Option<String>,
    /// The HTTP listener's address (the base URL of last resort).
    pub local_addr: SocketAddr,
    pub retry_delay: Duration,
    /// The node registry (`DIR/.state/nodes`).
    pub nodes: Arc<Store>,
    /// Node overlays made for boot scripts (`identity`).
    pub node_overlays: super::identity::Cache,
    /// Boot tokens issued with boot scripts (`tokens`).
    pub tokens: Tokens,
    /// The admin token and `--public-status`.
    pub admin: Admin,
    /// `--trusted-proxy`: peers whose forwarded client address counts.
    pub trusted_proxies: Vec<Cidr>,
}
