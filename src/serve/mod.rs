//! The boot server: HTTP (files, content-addressed artifacts, iPXE scripts,
//! status, metrics) and TFTP over the build output dir, read-only, until
//! SIGINT or SIGTERM.
//!
//! Everything runs on one tokio runtime with a fixed number of threads
//! (`workers` plus a small blocking pool for file reads and hashing), so
//! the thread count does not grow with the number of clients. `run` binds
//! every listener first, prints the bound addresses on stdout (`listening
//! http ADDR`, `listening tftp ADDR`, so callers can use port 0), then
//! spawns one task per listener — HTTP, TFTP, the proxyDHCP (UDP 67 and
//! 4011, with `--proxy-dhcp`), the content store's pruner — and waits for a
//! signal. They share `State`, the metrics and the stop signal.

pub mod adhoc;
pub mod admin;
pub mod cmdline;
pub mod dhcp;
mod download;
#[cfg(test)]
mod fuzz;
pub mod grub;
mod http;
mod http_boot;
pub mod identity;
pub mod ipxe;
mod live;
pub mod metrics;
pub mod next_boot;
pub mod nodes;
mod operator;
mod options;
mod pages;
pub mod profiles;
pub mod proxy;
mod prune;
pub mod publish;
mod publish_secure;
pub mod range;
mod reply;
mod router;
mod script;
mod secure_tftp;
pub mod served_dir;
pub mod servers;
mod state;
pub mod tftp;
pub mod tokens;
pub mod ukis;

pub use options::{
    boot_config_or_default, ServeOptions, UefiBoot, DEFAULT_BOOT_CONFIG, DEFAULT_HTTP,
    DEFAULT_IPXE_DIR, DEFAULT_RETRY_DELAY, DEFAULT_TFTP, DEFAULT_TIMEOUT, GRACE,
};

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::UsageError;

/// Threads for blocking work (file reads, hashing, script rendering).
const BLOCKING_THREADS: usize = 16;

/// Connections the kernel queues before `accept` (capped by net.core.somaxconn).
const BACKLOG: u32 = 4096;

pub fn run(opts: &ServeOptions) -> anyhow::Result<()> {
    let root = served_dir::Root::new(&opts.dir).map_err(|e| {
        UsageError(format!(
            "--dir {}: {e} (build something first, or pass --dir)",
            opts.dir.display()
        ))
    })?;
    if !root.dir().is_dir() {
        return Err(UsageError(format!("--dir {} is not a directory", opts.dir.display())).into());
    }
    let boot_config = boot_config_path(opts)?;
    if opts.proxy_dhcp.is_some() {
        dhcp::preflight(opts.tftp.is_some(), &[&opts.dir, &opts.ipxe_dir]).map_err(UsageError)?;
    }
    if opts.uefi_boot == UefiBoot::Shim {
        crate::secureboot::factory_chain()?;
        if opts.tftp.is_none() {
            return Err(UsageError(
                "--uefi-boot shim serves shim, GRUB and its configs over TFTP: drop --tftp off"
                    .into(),
            )
            .into());
        }
    }
    let trusted_proxies = opts
        .trusted_proxies
        .iter()
        .map(|c| proxy::Cidr::parse(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(UsageError)?;
    let (mut admin, admin_path) =
        admin::Admin::load(root.dir(), opts.admin_token_file.as_deref()).map_err(UsageError)?;
    admin.public_status = opts.public_status;
    tracing::info!(
        "admin token (for GET /api/nodes, next-boot, power and the status page's machines): {}",
        admin_path.display()
    );
    let node_signer = opts
        .node_signing_key
        .as_deref()
        .map(crate::secureboot::sign::NodeSigner::load)
        .transpose()?;
    if let Some(key) = &opts.node_signing_key {
        tracing::info!("node overlays signed with {}", key.display());
    }
    let trust = Trust {
        admin,
        trusted_proxies,
        node_signer,
    };
    let scripts =
        ipxe::Scripts::new(opts.ipxe_template.as_deref()).map_err(|e| UsageError(e.to_string()))?;
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.workers.max(1))
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_name("mkimage-serve")
        .enable_all()
        .build()
        .context("cannot start the server runtime")?;
    let result = runtime.block_on(serve(opts, root, boot_config, scripts, trust));
    // Downloads still in progress are cut here.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
}

async fn serve(
    opts: &ServeOptions,
    root: served_dir::Root,
    boot_config: Option<PathBuf>,
    scripts: ipxe::Scripts,
    trust: Trust,
) -> anyhow::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let (listener, tftp, proxy) = bind(opts).await?;
    let local_addr = listener.local_addr()?;
    let state = shared_state(opts, &root, boot_config.clone(), scripts, trust, local_addr);
    let ipxe = state.ipxe.clone();
    let metrics = state.metrics.clone();
    let (stop, stopped) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let router_state = state.clone();
    let router: Arc<http::Handler> = Arc::new(move |req, peer| {
        let client = proxy::client(peer, &req.headers, &router_state.trusted_proxies);
        router::route(&router_state, req, client)
    });
    tasks.spawn(http::serve(
        listener,
        router,
        metrics.clone(),
        opts.timeout,
        stopped.clone(),
    ));
    tasks.spawn(prune::run(
        root.dir().to_path_buf(),
        opts.grace,
        metrics.clone(),
        stopped.clone(),
    ));
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening http {local_addr}");
    if let Some(socket) = tftp {
        let roots = [Some(root.clone()), ipxe].into_iter().flatten().collect();
        let tftp = tftp_server(opts, &state, socket, roots, proxy.as_ref(), &stopped)?;
        tasks.spawn(tftp);
    }
    if let Some(proxy) = proxy {
        tasks.spawn(proxy_dhcp_server(
            opts, &state, local_addr, proxy, &metrics, &stopped,
        ));
    }
    let _ = out.flush();
    tracing::info!(
        dir = %root.dir().display(),
        boot_config = %boot_config.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "none (every machine boots the basefs alone)".into()),
        "serving http on {local_addr}{}",
        opts.tftp.as_deref().map(|a| format!(", tftp on {a}")).unwrap_or_default()
    );
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("signal received, stopping");
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// What every request handler shares: the served trees, the caches, the
/// node registry and the trust settings.
fn shared_state(
    opts: &ServeOptions,
    root: &served_dir::Root,
    boot_config: Option<PathBuf>,
    scripts: ipxe::Scripts,
    trust: Trust,
    local_addr: SocketAddr,
) -> Arc<state::State> {
    let ipxe = served_dir::Root::system(&opts.ipxe_dir)
        .map_err(|e| {
            tracing::warn!(
                "--ipxe-dir {}: {e}; only --dir is served",
                opts.ipxe_dir.display()
            )
        })
        .ok();
    Arc::new(state::State {
        root: root.clone(),
        sha: served_dir::ShaCache::default(),
        ipxe,
        metrics: Arc::new(metrics::Metrics::default()),
        scripts,
        boot_config,
        public_url: opts.public_url.clone(),
        local_addr,
        retry_delay: opts.retry_delay,
        nodes: Arc::new(nodes::Store::new(root.dir())),
        node_overlays: identity::Cache::signing_with(trust.node_signer),
        tokens: tokens::Tokens::default(),
        admin: trust.admin,
        trusted_proxies: trust.trusted_proxies,
    })
}

/// The HTTP listener, and the TFTP and proxyDHCP sockets the options ask for.
async fn bind(
    opts: &ServeOptions,
) -> anyhow::Result<(TcpListener, Option<UdpSocket>, Option<dhcp::Listener>)> {
    let listener = bind_http(&opts.http)?;
    let tftp =
        match &opts.tftp {
            Some(addr) => Some(UdpSocket::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} (TFTP; --tftp off disables it)")
            })?),
            None => None,
        };
    let proxy = match &opts.proxy_dhcp {
        Some(iface) => Some(dhcp::Listener::bind(iface).map_err(|e| UsageError(e.to_string()))?),
        None => None,
    };
    Ok((listener, tftp, proxy))
}

/// The TFTP server on `socket` (announced on stdout): `roots`, and with
/// `--uefi-boot shim` the Secure Boot chain's files made per request.
fn tftp_server(
    opts: &ServeOptions,
    state: &Arc<state::State>,
    socket: UdpSocket,
    roots: Vec<served_dir::Root>,
    proxy: Option<&dhcp::Listener>,
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let addr = socket.local_addr()?;
    let _ = writeln!(std::io::stdout(), "listening tftp {addr}");
    let dynamic = (opts.uefi_boot == UefiBoot::Shim).then(|| {
        let ip = match (proxy, addr.ip()) {
            (Some(p), _) => p.server(),
            (None, std::net::IpAddr::V4(ip)) => ip,
            (None, _) => std::net::Ipv4Addr::UNSPECIFIED,
        };
        let base = dhcp::base_url(opts.public_url.as_deref(), state.local_addr, ip);
        secure_tftp::files(state.clone(), base)
    });
    Ok(tftp::serve(
        socket,
        Arc::new(tftp::Sources { roots, dynamic }),
        state.metrics.clone(),
        stopped.clone(),
    ))
}

/// The proxyDHCP on its interface (announced on stdout): iPXE, or with
/// `--uefi-boot shim` shim for UEFI PXE clients.
fn proxy_dhcp_server(
    opts: &ServeOptions,
    state: &Arc<state::State>,
    local_addr: std::net::SocketAddr,
    proxy: dhcp::Listener,
    metrics: &Arc<metrics::Metrics>,
    stopped: &watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> {
    let (iface, server) = (proxy.iface(), proxy.server());
    let _ = writeln!(std::io::stdout(), "listening proxy-dhcp {iface} {server}");
    let base = dhcp::base_url(opts.public_url.as_deref(), local_addr, proxy.server());
    // The Secure Boot path: shim for UEFI PXE, the profile's signed UKI
    // for UEFI HTTP boot.
    let offers = match opts.uefi_boot {
        UefiBoot::Ipxe => dhcp::Offers {
            base_url: base,
            efi_file: dhcp::EFI_FILE.into(),
            uki: None,
        },
        UefiBoot::Shim => dhcp::Offers {
            base_url: base,
            efi_file: crate::secureboot::SHIM_NAME.into(),
            uki: Some(http_boot::lookup(state.clone())),
        },
    };
    dhcp::serve(proxy, offers, metrics.clone(), stopped.clone())
}

/// Who the server trusts: the admin token, the proxies.
struct Trust {
    admin: admin::Admin,
    trusted_proxies: Vec<proxy::Cidr>,
    node_signer: Option<crate::secureboot::sign::NodeSigner>,
}

/// The HTTP listening socket, with a backlog deep enough for a boot storm.
fn bind_http(addr: &str) -> anyhow::Result<TcpListener> {
    let resolved: Option<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| {
            UsageError(format!(
                "--http {addr}: {e} (use HOST:PORT, e.g. 0.0.0.0:8080)"
            ))
        })?
        .next();
    let resolved =
        resolved.ok_or_else(|| UsageError(format!("--http {addr}: resolves to no address")))?;
    let socket = if resolved.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    socket
        .bind(resolved)
        .with_context(|| format!("cannot listen on {addr} (HTTP)"))?;
    socket
        .listen(BACKLOG)
        .with_context(|| format!("cannot listen on {addr} (HTTP)"))
}

/// Many clients mean many sockets: use the hard limit on open files.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn boot_config_path(opts: &ServeOptions) -> anyhow::Result<Option<PathBuf>> {
    let Some(path) = boot_config_or_default(opts.boot_config.as_deref()) else {
        return Ok(None);
    };
    profiles::BootConfig::load(&path).map_err(|e| UsageError(e.to_string()))?;
    // The lab inventory, checked with file:line:col (`mkimage check --boot-config`).
    crate::inventory::Lab::load(&path).map_err(|e| UsageError(e.0))?;
    Ok(Some(path))
}
