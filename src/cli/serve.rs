//! `mkimage serve`: the flags as the server's `ServeOptions`.

use std::path::PathBuf;
use std::time::Duration;

use super::paths::absolute;

/// `mkimage serve` (turned into `mkimage::serve::ServeOptions`).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The directory to serve (the build output dir).
    #[arg(long, default_value = "builds")]
    pub dir: PathBuf,
    /// HTTP listen address (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = mkimage::serve::DEFAULT_HTTP)]
    pub http: String,
    /// TFTP listen address ("off" to disable).
    #[arg(long, default_value = mkimage::serve::DEFAULT_TFTP)]
    pub tftp: String,
    /// Boot profiles (default: vars/boot.yml if it exists; without one every
    /// machine boots the basefs alone, no overlay).
    #[arg(long)]
    pub boot_config: Option<PathBuf>,
    /// Base URL put into boot scripts (default: http:// + the Host the client used).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Directory with the iPXE binaries served over TFTP and under /ipxe/ over
    /// HTTP (Debian's `ipxe` package).
    #[arg(long, default_value = mkimage::serve::DEFAULT_IPXE_DIR)]
    pub ipxe_dir: PathBuf,
    /// Answer PXE, UEFI HTTP boot and iPXE clients on this interface as a
    /// proxyDHCP, beside the site's DHCP server (which keeps handing out the
    /// addresses): UDP 67 and 4011.
    #[arg(long, value_name = "IFACE")]
    pub proxy_dhcp: Option<String>,
    /// iPXE script template (default: the built-in ipxe/boot.ipxe.j2).
    #[arg(long)]
    pub ipxe_template: Option<PathBuf>,
    /// What the proxyDHCP hands UEFI PXE clients: `ipxe` (ipxe.efi; Secure
    /// Boot must be off) or `shim` (shim → Debian's signed network GRUB →
    /// the signed kernel, for Secure Boot with factory keys; GRUB's configs,
    /// kernel and initrd over TFTP; and UEFI HTTP boot clients their
    /// profile's signed UKI when `mkimage keys sign-ukis` indexed one).
    /// BIOS machines keep iPXE either way.
    #[arg(long, default_value = "ipxe", value_parser = ["ipxe", "shim"])]
    pub uefi_boot: String,
    /// Threads running HTTP, TFTP and the pruner (default: one per CPU).
    /// Connections are tasks, not threads: any number share these.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Seconds a client may take to send its request head, or stall (take
    /// no response data) before it is dropped.
    #[arg(long, default_value_t = mkimage::serve::DEFAULT_TIMEOUT.as_secs())]
    pub timeout: u64,
    /// Seconds a superseded artifact stays servable at its content-addressed
    /// URL (/sha256/HEX/NAME) after a rebuild replaced it.
    #[arg(long, default_value_t = mkimage::serve::GRACE.as_secs())]
    pub grace: u64,
    /// Seconds a machine that asked before anything bootable existed waits
    /// before asking again.
    #[arg(long, default_value_t = mkimage::serve::DEFAULT_RETRY_DELAY.as_secs())]
    pub retry_delay: u64,
    /// File holding the admin token (mode 0600) that GET /api/nodes…,
    /// next-boot, power and the status page's machines need (default:
    /// DIR/.state/admin.token, made on first start).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Show the machines on the status page without the admin token.
    #[arg(long)]
    pub public_status: bool,
    /// Proxies (CIDR, e.g. 127.0.0.1/32) whose X-Forwarded-For or
    /// Forwarded header names the client; other peers' are ignored.
    #[arg(long, value_name = "CIDR", num_args = 1..)]
    pub trusted_proxy: Vec<String>,
    /// Sign every node overlay with this RSA key (mode 0600; the node.key
    /// `mkimage keys init` writes) and serve the signature at
    /// /node/MAC/SHA256/node.cpio.gz.sig, for signed UKIs, whose init
    /// refuses a node overlay without a valid one.
    #[arg(long, value_name = "FILE")]
    pub node_signing_key: Option<PathBuf>,
}

/// `mkimage serve`: the flags as the server's options, paths absolute.
pub fn serve(a: &ServeArgs) -> anyhow::Result<()> {
    let mut o = mkimage::serve::ServeOptions::new(&absolute(&a.dir)?);
    o.http = a.http.clone();
    o.tftp = (a.tftp != "off").then(|| a.tftp.clone());
    o.boot_config = a.boot_config.as_deref().map(absolute).transpose()?;
    o.public_url = a.public_url.clone();
    o.ipxe_dir = absolute(&a.ipxe_dir)?;
    o.proxy_dhcp = a.proxy_dhcp.clone();
    o.ipxe_template = a.ipxe_template.as_deref().map(absolute).transpose()?;
    o.uefi_boot = match a.uefi_boot.as_str() {
        "shim" => mkimage::serve::UefiBoot::Shim,
        _ => mkimage::serve::UefiBoot::Ipxe,
    };
    o.workers = a.workers.unwrap_or(o.workers);
    o.timeout = Duration::from_secs(a.timeout.max(1));
    o.grace = Duration::from_secs(a.grace);
    o.retry_delay = Duration::from_secs(a.retry_delay.max(1));
    o.admin_token_file = a.admin_token_file.as_deref().map(absolute).transpose()?;
    o.public_status = a.public_status;
    o.trusted_proxies = a.trusted_proxy.clone();
    o.node_signing_key = a.node_signing_key.as_deref().map(absolute).transpose()?;
    mkimage::serve::run(&o)
}
