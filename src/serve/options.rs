//! What `mkimage serve` is asked to do, as plain data: the CLI layer (or a
//! test, or `mkimage boot-test`) fills it in; nothing here knows about flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default boot config path, used only if it exists.
pub const DEFAULT_BOOT_CONFIG: &str = "vars/boot.yml";

/// The boot config given, else [`DEFAULT_BOOT_CONFIG`] when that file
/// exists (relative to the current directory); `None` for neither. Every
/// command that reads a boot config (serve, publish, iso, nodes) picks it
/// so.
pub fn boot_config_or_default(given: Option<&Path>) -> Option<PathBuf> {
    match given {
        Some(p) => Some(p.to_path_buf()),
        None if Path::new(DEFAULT_BOOT_CONFIG).is_file() => {
            Some(PathBuf::from(DEFAULT_BOOT_CONFIG))
        }
        None => None,
    }
}

/// `serve --http`: where HTTP listens.
pub const DEFAULT_HTTP: &str = "0.0.0.0:8080";
/// `serve --tftp`: where TFTP listens.
pub const DEFAULT_TFTP: &str = "0.0.0.0:69";
/// `serve --ipxe-dir`: Debian's `ipxe` package's binaries.
pub const DEFAULT_IPXE_DIR: &str = "/usr/lib/ipxe";
/// `serve --timeout`: how long a client may take to send its head, or stall.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// `serve --retry-delay`: how long a machine that came too early waits.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(20);

/// Everything `serve::run` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The directory served (the build output dir).
    pub dir: PathBuf,
    /// HTTP listen address (`host:port`; port 0 picks a free one).
    pub http: String,
    /// TFTP listen address; `None` disables TFTP.
    pub tftp: Option<String>,
    /// Boot profiles; `None` uses [`DEFAULT_BOOT_CONFIG`] if it exists.
    pub boot_config: Option<PathBuf>,
    /// Base URL written into boot scripts (default: from the request's Host).
    pub public_url: Option<String>,
    /// iPXE binaries offered over TFTP and, under `/ipxe/`, HTTP.
    pub ipxe_dir: PathBuf,
    /// Answer PXE clients as a proxyDHCP on this interface (`None`: off).
    pub proxy_dhcp: Option<String>,
    /// Boot script template (default: the built-in `ipxe/boot.ipxe.j2`).
    pub ipxe_template: Option<PathBuf>,
    /// What UEFI PXE clients chain-load (see `UefiBoot`).
    pub uefi_boot: UefiBoot,
    /// Threads of the async runtime that runs HTTP, TFTP and the pruner
    /// (file reads and hashing run on a small blocking pool beside them).
    pub workers: usize,
    /// Whole request head within this, and a client that takes no response
    /// data (HTTP) or sends no ACK (TFTP, retransmits aside) for this long
    /// is dropped.
    pub timeout: Duration,
    /// How long a superseded artifact stays servable at its
    /// content-addressed URL.
    pub grace: Duration,
    /// How long a machine that asked before anything bootable existed waits
    /// before it asks again.
    pub retry_delay: Duration,
    /// The admin token's file (0600); `None`: `DIR/.state/admin.token`,
    /// made on first start.
    pub admin_token_file: Option<PathBuf>,
    /// The status page shows the machines without the admin token.
    pub public_status: bool,
    /// Peers whose `X-Forwarded-For`/`Forwarded` names the client
    /// (`CIDR` strings, checked when the server starts).
    pub trusted_proxies: Vec<String>,
    /// Sign each node overlay with this key (0600; `keys init`'s
    /// `node.key`), for signed UKIs' inits (`identity`).
    pub node_signing_key: Option<PathBuf>,
}

/// What the proxyDHCP hands UEFI PXE clients: one choice per server (a
/// machine's DHCP request does not say whether Secure Boot is on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UefiBoot {
    /// `ipxe.efi`: Secure Boot off (the default; Secure Boot refuses it).
    Ipxe,
    /// shim → Debian's signed network GRUB → the signed kernel, with GRUB
    /// configs and the kernel and initrd over TFTP (`secure_tftp`); boots
    /// with Secure Boot on or off.
    Shim,
}

/// How long a superseded artifact stays servable at its content address
/// (`serve --grace`, `publish --grace`).
pub const GRACE: Duration = Duration::from_secs(3600);

impl ServeOptions {
    /// The defaults for serving `dir`, as the CLI documents them.
    pub fn new(dir: impl Into<PathBuf>) -> ServeOptions {
        ServeOptions {
            dir: dir.into(),
            http: DEFAULT_HTTP.into(),
            tftp: Some(DEFAULT_TFTP.into()),
            boot_config: None,
            public_url: None,
            ipxe_dir: PathBuf::from(DEFAULT_IPXE_DIR),
            proxy_dhcp: None,
            ipxe_template: None,
            uefi_boot: UefiBoot::Ipxe,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            timeout: DEFAULT_TIMEOUT,
            grace: GRACE,
            retry_delay: DEFAULT_RETRY_DELAY,
            admin_token_file: None,
            public_status: false,
            trusted_proxies: Vec::new(),
            node_signing_key: None,
        }
    }
}
