//! The boot server: HTTP (files, iPXE scripts, status, metrics) and TFTP,
//! over the build output dir, read-only, until SIGINT or SIGTERM.
//!
//! `run` binds both listeners, prints the bound addresses on stdout
//! (`listening http ADDR`, `listening tftp ADDR`, so callers can use port 0),
//! starts the workers and waits for a signal.

pub mod files;
pub mod http;
pub mod ipxe;
pub mod metrics;
mod pages;
pub mod profiles;
pub mod range;
mod script;
pub mod sendfile;
pub mod tftp;

use std::io::Write;
use std::net::{TcpListener, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::UsageError;

/// `mkimage serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The directory to serve (the build output dir).
    #[arg(long, default_value = "builds")]
    pub dir: PathBuf,
    /// HTTP listen address (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub http: String,
    /// TFTP listen address ("off" to disable).
    #[arg(long, default_value = "0.0.0.0:69")]
    pub tftp: String,
    /// Boot profiles (default: vars/boot.yml if it exists, else a profile
    /// derived from manifest.json).
    #[arg(long)]
    pub boot_config: Option<PathBuf>,
    /// Base URL put into boot scripts (default: http:// + the Host the client used).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Directory with the iPXE binaries served over TFTP (Debian's `ipxe` package).
    #[arg(long, default_value = "/usr/lib/ipxe")]
    pub ipxe_dir: PathBuf,
    /// iPXE script template (default: the built-in ipxe/boot.ipxe.j2).
    #[arg(long)]
    pub ipxe_template: Option<PathBuf>,
    /// HTTP download workers: how many file downloads are streamed at once
    /// (more wait in a queue; a stalled client holds one until --timeout).
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    /// Seconds a connection may stall (no byte read or written) before it is dropped.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

/// The default boot config path, used only if it exists.
pub const DEFAULT_BOOT_CONFIG: &str = "vars/boot.yml";

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Relaxed);
}

fn install_signal_handlers() -> anyhow::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }.with_context(|| format!("cannot install a {sig} handler"))?;
    }
    Ok(())
}

/// A query parameter's percent-decoded value.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).and_then(|(_, v)| files::percent_decode(v).ok())
}

/// Bind a TCP listener whose accepted sockets inherit a send timeout (Linux
/// copies it from the listening socket on accept), so a write to a client
/// that stopped reading fails instead of holding a worker forever. (A
/// receive timeout would also make `accept` time out, so there is none.)
fn bind_http(addr: &str, timeout: Duration) -> anyhow::Result<TcpListener> {
    let addrs: Vec<_> = addr.to_socket_addrs().map_err(|e| UsageError(format!("--http {addr}: {e}")))?.collect();
    let listener = TcpListener::bind(&addrs[..]).with_context(|| format!("cannot listen on {addr} (HTTP)"))?;
    let tv = libc::timeval { tv_sec: timeout.as_secs() as libc::time_t, tv_usec: 0 };
    // SAFETY: setsockopt on a socket we own with a correctly sized timeval.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot set the socket send timeout");
    }
    Ok(listener)
}

/// Many clients mean many sockets: use the hard limit on open files.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn boot_config_path(args: &ServeArgs) -> anyhow::Result<Option<PathBuf>> {
    match &args.boot_config {
        Some(p) => {
            profiles::BootConfig::load(p).map_err(|e| UsageError(e.to_string()))?;
            Ok(Some(p.clone()))
        }
        None if Path::new(DEFAULT_BOOT_CONFIG).exists() => {
            let p = PathBuf::from(DEFAULT_BOOT_CONFIG);
            profiles::BootConfig::load(&p).map_err(|e| UsageError(e.to_string()))?;
            Ok(Some(p))
        }
        None => Ok(None),
    }
}

pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let root = files::Root::new(&args.dir)
        .map_err(|e| UsageError(format!("--dir {}: {e} (build something first, or pass --dir)", args.dir.display())))?;
    if !root.dir().is_dir() {
        return Err(UsageError(format!("--dir {} is not a directory", args.dir.display())).into());
    }
    let boot_config = boot_config_path(args)?;
    let scripts = ipxe::Scripts::new(args.ipxe_template.as_deref()).map_err(|e| UsageError(e.to_string()))?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let stop = Arc::new(AtomicBool::new(false));
    install_signal_handlers()?;

    let listener = bind_http(&args.http, timeout)?;
    let local_addr = listener.local_addr()?;
    raise_fd_limit();
    let metrics = Arc::new(metrics::Metrics::default());
    let state = Arc::new(http::State {
        root: root.clone(),
        sha: files::ShaCache::default(),
        metrics: metrics.clone(),
        scripts,
        boot_config: boot_config.clone(),
        public_url: args.public_url.clone(),
        local_addr,
        stop: stop.clone(),
        watchdog: sendfile::Watchdog::start(timeout),
    });
    let mut joins = Vec::new();
    let tftp_addr = if args.tftp == "off" {
        None
    } else {
        let mut roots = vec![root.clone()];
        match files::Root::new(&args.ipxe_dir) {
            Ok(r) => roots.push(r),
            Err(e) => tracing::warn!("--ipxe-dir {}: {e}; TFTP serves only {}", args.ipxe_dir.display(), root.dir().display()),
        }
        let (addr, handle) = tftp::start(&args.tftp, Arc::new(tftp::Sources { roots }), metrics, stop.clone())
            .with_context(|| format!("cannot listen on {} (TFTP; --tftp off disables it)", args.tftp))?;
        joins.push(handle);
        Some(addr)
    };
    let handles = http::start(listener, state, args.workers)?;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening http {local_addr}");
    if let Some(addr) = tftp_addr {
        let _ = writeln!(out, "listening tftp {addr}");
    }
    let _ = out.flush();
    tracing::info!(
        dir = %root.dir().display(),
        boot_config = %boot_config.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "none (default profile from manifest)".into()),
        "serving http on {local_addr}{}",
        tftp_addr.map(|a| format!(", tftp on {a}")).unwrap_or_default()
    );
    while !SIGNALLED.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("signal received, stopping");
    stop.store(true, Relaxed);
    // The dispatcher and the TFTP listener notice within 200 ms; downloads in
    // progress are cut when the process exits.
    for h in joins.into_iter().chain(handles.into_iter().filter(|h| h.thread().name() == Some("http-dispatch"))) {
        let _ = h.join();
    }
    Ok(())
}
