//! The arguments of every command, as clap parses them (raw: paths as
//! given, resolved by the caller).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mkimage",
    version,
    about = "Build, serve and boot-test RAM-resident Debian netboot images"
)]
pub struct Cli {
    /// More output (-v: debug, -vv: trace). RUST_LOG works too.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Build the squashfs base filesystem (bootstrap + roles + cleanup).
    Basefs(BasefsArgs),
    /// Build a gzipped-cpio overlay: what roles change on top of the basefs.
    Overlay(BuildArgs),
    /// Build the initrd and kernel that netboot base + overlays.
    Initrd(BuildArgs),
    /// Run a playbook: an ordered list of builds.
    Play(PlayArgs),
    /// Serve the built artifacts over HTTP (with iPXE scripts) and TFTP.
    Serve(ServeArgs),
    /// List the machines the server has seen: inventory, profile, boot stage, last failure.
    Nodes(NodesArgs),
    /// Write a static tree (artifacts by hash, boot scripts, nginx config)
    /// that any static web server can boot machines from.
    Publish(PublishArgs),
    /// Validate a vars file or playbook, its roles and --var names; or a
    /// boot config (--boot-config: profiles, lab inventory, node templates).
    /// Builds nothing, needs no root.
    Check(CheckCmd),
    /// List the entries of a squashfs, cpio.gz overlay or initrd.
    Inspect {
        /// The image to list.
        file: PathBuf,
        /// Sizes by top-level directory and by kernel subsystem instead.
        #[arg(long)]
        summary: bool,
    },
    /// Netboot the built artifacts in QEMU and assert they came up.
    BootTest(BootTestArgs),
    /// Write a hybrid ISO (BIOS + UEFI, CD or USB) that boots a profile without PXE.
    Iso(IsoArgs),
    /// Show what the build caches hold, and prune them by age or size.
    Cache(CacheArgs),
    /// The site's Secure Boot signing key: `keys init` writes it (0600) and its certificate; `keys sign-ukis` signs each profile's UKI for `mkimage serve`.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Pin every package version (and .deb sha256) the builds install in a lock file.
    Lock(LockArgs),
    /// Power nodes on, off or cycle them, or ask their state, through their BMCs (IPMI, Redfish).
    #[command(override_usage = "mkimage power [OPTIONS] NODE... on|off|cycle|status")]
    Power(super::power::PowerArgs),
    /// Boot nodes from the network into a profile through their BMCs, and follow them until a stage.
    Reprovision(super::power::ReprovisionArgs),
    /// Write a man page for mkimage and each of its commands (clap_mangen).
    Man(ManArgs),
    /// Regenerate docs/reference/cli.md and config.md's key table from the code.
    #[command(hide = true)]
    Docs(DocsArgs),
}

/// `mkimage keys …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Write a new signing key (db.key, mode 0600) and its certificate
    /// (db.crt PEM, db.cer DER) into DIR; never inside a served dir.
    Init {
        /// Where the key goes (made 0700).
        #[arg(long, default_value = "keys")]
        dir: PathBuf,
    },
    /// Sign every profile's UKI with the site key into the build dir's
    /// content store and index them (DIR/.state/ukis.json), for `mkimage
    /// serve --uefi-boot shim` to offer UEFI HTTP boot clients. Run it
    /// where the key is, after each build; the server never needs the key.
    SignUkis {
        /// The site key's dir (`mkimage keys init --dir DIR`).
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
        /// The build output dir `mkimage serve --dir` serves.
        #[arg(long, default_value = "builds")]
        dir: PathBuf,
        /// Boot profiles (default: vars/boot.yml if it exists).
        #[arg(long)]
        boot_config: Option<PathBuf>,
        /// The URL machines reach `mkimage serve` at (http://HOST:PORT),
        /// which the UKIs' signed command lines name.
        #[arg(long)]
        public_url: String,
    },
}

/// Flags shared by `basefs`, `overlay` and `initrd`.
#[derive(Debug, Clone, clap::Args)]
pub struct BuildArgs {
    /// The vars file describing the build.
    #[arg(long)]
    pub vars: PathBuf,
    /// Override a variable: key=value (repeatable; wins over every file).
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars_override: Vec<String>,
    /// Where artifacts go (and where inputs such as the basefs are found).
    #[arg(long, default_value = "builds")]
    pub out: PathBuf,
    /// Keep the build directory when the build fails (for debugging).
    #[arg(long)]
    pub keep_build_dir: bool,
    #[command(flatten)]
    pub cache: CacheFlags,
}

/// How much of a build may come from earlier builds (build commands and play).
#[derive(Debug, Clone, clap::Args)]
pub struct CacheFlags {
    /// Build even when the artifact is up to date (task layers are still reused).
    #[arg(long)]
    pub force: bool,
    /// Run every task afresh: no cached task layer or bootstrapped tree is
    /// used or stored (implies --force).
    #[arg(long)]
    pub no_cache: bool,
}

/// `mkimage basefs`: the build flags plus stage archives.
#[derive(Debug, Clone, clap::Args)]
pub struct BasefsArgs {
    #[command(flatten)]
    pub build: BuildArgs,
    /// Keep the provisioned tree (after the roles, before cleanup and
    /// packing) as a stage archive: FILE.tar, .tar.gz or .tar.zst.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Start from a stage archive written by --save instead of bootstrapping.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
}

/// `mkimage play`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlayArgs {
    /// The playbook: an ordered list of builds.
    pub playbook: PathBuf,
    /// Override a variable for every build: key=value (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars_override: Vec<String>,
    /// Where artifacts go.
    #[arg(long, default_value = "builds")]
    pub out: PathBuf,
    /// Keep the build directory when a build fails (for debugging).
    #[arg(long)]
    pub keep_build_dir: bool,
    #[command(flatten)]
    pub cache: CacheFlags,
}

/// `mkimage check` (and the builds `mkimage lock` locks).
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// A vars file (its kind — basefs, overlay, initrd — is read off its keys).
    #[arg(long)]
    pub vars: Option<PathBuf>,
    /// A playbook (every build it lists).
    pub playbook: Option<PathBuf>,
    /// Override a variable: key=value (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars_override: Vec<String>,
    /// The output dir the builds use (and `cache_dir`'s default); `lock`
    /// builds there first.
    #[arg(long, default_value = "builds")]
    pub out: PathBuf,
}

/// `mkimage check`: builds (as `lock` takes them), or a boot config.
#[derive(Debug, clap::Args)]
pub struct CheckCmd {
    #[command(flatten)]
    pub builds: CheckArgs,
    /// A boot config (e.g. vars/boot.yml) instead: its keys, profiles, the
    /// lab inventory (`nodes:`) and every node's templates.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["vars", "playbook"])]
    pub boot_config: Option<PathBuf>,
}

/// `mkimage lock`: what to lock as `check` takes it, then where to write.
#[derive(Debug, clap::Args)]
pub struct LockArgs {
    #[command(flatten)]
    pub builds: CheckArgs,
    /// The lock file to write (default: the `lock:` the builds name).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Keep the build directory when a build fails (for debugging).
    #[arg(long)]
    pub keep_build_dir: bool,
}

/// `mkimage boot-test`.
#[derive(Debug, Clone, clap::Args)]
pub struct BootTestArgs {
    /// Build this playbook first (into --dir), then boot its output.
    pub playbook: Option<PathBuf>,
    /// The directory holding the artifacts (what `mkimage serve` serves).
    #[arg(long, default_value = "builds")]
    pub dir: PathBuf,
    /// Boot config with profiles and `boot_test:` assertions.
    #[arg(long, default_value = mkimage::serve::DEFAULT_BOOT_CONFIG)]
    pub boot_config: PathBuf,
    /// Profile to boot (default: boot_test.profile, else the default profile).
    #[arg(long)]
    pub profile: Option<String>,
    /// The guest NIC's MAC (profiles may select by it).
    #[arg(long, default_value = "52:54:00:12:34:56")]
    pub mac: String,
    /// The guest NIC: virtio or e1000.
    #[arg(long, default_value = "virtio", value_parser = ["virtio", "e1000"])]
    pub nic: String,
    /// Guest memory in MiB (default: boot_test.memory, else 1536).
    #[arg(long)]
    pub memory: Option<u32>,
    /// Seconds to wait for the boot and the checks (default: boot_test.timeout, else 600).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Boot with UEFI firmware (OVMF) instead of the BIOS.
    #[arg(long)]
    pub uefi: bool,
    /// Boot on a real layer-2 network: a bridge, a site DHCP server (dnsmasq,
    /// addresses only) and `mkimage serve --proxy-dhcp`; BIOS through the
    /// NIC's iPXE ROM, UEFI through the firmware's own PXE client.
    #[arg(long)]
    pub proxy_dhcp: bool,
    /// Extra kernel arguments for this boot (e.g. `mkimage.bench=transfer`).
    #[arg(long, default_value = "")]
    pub append: String,
    /// Keep the serial console log here.
    #[arg(long)]
    pub serial_log: Option<PathBuf>,
    /// Boot through nginx run from this cache-tier config
    /// (nginx/mkimage-cache.conf), then boot again and check the basefs came
    /// from nginx's cache.
    #[arg(long)]
    pub via_nginx: Option<PathBuf>,
    /// Boot from a `mkimage publish`ed tree of the build served by nginx
    /// alone: no `mkimage serve` runs.
    #[arg(long, conflicts_with_all = ["proxy_dhcp", "via_nginx"])]
    pub published: bool,
    /// Boot this offline ISO (mkimage iso --offline) as a CD-ROM, with no network, instead of netbooting.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["playbook", "proxy_dhcp", "via_nginx", "published"])]
    pub iso: Option<PathBuf>,
    /// UEFI with Secure Boot enforced and Microsoft's keys (OVMF's Secure
    /// Boot build): shim → Debian's signed GRUB → the signed kernel; asserts
    /// Secure Boot and the kernel's lockdown in the booted system.
    /// With --proxy-dhcp: through `mkimage serve --uefi-boot shim` on the
    /// lab's network (the proxyDHCP hands the firmware shim, the server's
    /// TFTP the rest).
    #[arg(long, conflicts_with_all = ["via_nginx", "published", "iso", "uefi"])]
    pub secure_boot: bool,
    /// With --secure-boot: boot the profile's UKI signed with the site key in
    /// DIR (`mkimage keys init --dir DIR`), its certificate enrolled in db.
    /// With --proxy-dhcp, --http-boot too.
    #[arg(long, value_name = "DIR", requires = "secure_boot")]
    pub keys: Option<PathBuf>,
    /// With --keys: enroll the site certificate in shim's MokList (as
    /// `mokutil --import` does), not in db, and boot the UKI through shim
    /// (served as grubx64.efi beside it): firmware → shim (Microsoft's CA)
    /// → UKI (the site key, in MOK).
    #[arg(long, requires = "keys")]
    pub mok: bool,
    /// With --keys and --proxy-dhcp: the firmware's PXE off, so it boots by
    /// UEFI HTTP boot; `mkimage keys sign-ukis` signs every profile's UKI
    /// and the proxyDHCP (`serve --uefi-boot shim`) offers the machine its
    /// profile's UKI by content URL.
    #[arg(long, requires_all = ["keys", "proxy_dhcp"], conflicts_with = "mok")]
    pub http_boot: bool,
    /// Overrides for the playbook's builds.
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars_override: Vec<String>,
}

/// `mkimage iso`.
#[derive(Debug, Clone, clap::Args)]
pub struct IsoArgs {
    /// The directory holding the artifacts (a build output dir).
    #[arg(long, default_value = "builds")]
    pub dir: PathBuf,
    /// Boot config with the profiles (default: vars/boot.yml if it exists;
    /// without one the ISO boots the basefs alone, no overlay).
    #[arg(long)]
    pub boot_config: Option<PathBuf>,
    /// Profile to put on the ISO (default: the boot config's default profile).
    #[arg(long)]
    pub profile: Option<String>,
    /// Put the basefs and overlays on the ISO; the machine needs no network.
    #[arg(long, conflicts_with = "server")]
    pub offline: bool,
    /// Without --offline: the `mkimage serve` URL the init downloads from (http://HOST:PORT).
    #[arg(long)]
    pub server: Option<String>,
    /// Bake one node of the boot config's inventory into the ISO: its
    /// profile, its static network as the init's `ip=` (no DHCP needed),
    /// and with --offline its node overlay.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The ISO file to write.
    #[arg(long)]
    pub output: PathBuf,
}

/// `mkimage cache`.
#[derive(Debug, Clone, clap::Args)]
pub struct CacheArgs {
    /// The output dir whose cache (DIR/.cache) to show.
    #[arg(long, default_value = "builds")]
    pub dir: PathBuf,
    /// The cache dir itself (a build's `cache_dir:`), instead of DIR/.cache.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Remove what no build used for this long: 30d, 12h, 90m, 45s.
    #[arg(long, value_name = "AGE")]
    pub older_than: Option<String>,
    /// Then remove the least recently used until the cache is at most this big: 500M, 10G.
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

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
}

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

/// `mkimage publish OUT` (turned into `mkimage::serve::publish::Request`).
#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    /// Where the static tree goes (created; republishing over it is safe).
    pub out: PathBuf,
    /// The build output dir whose artifacts are published.
    #[arg(long, default_value = "builds")]
    pub dir: PathBuf,
    /// Boot profiles (default: vars/boot.yml if it exists).
    #[arg(long)]
    pub boot_config: Option<PathBuf>,
    /// The URL the tree will be served at, written into the boot scripts.
    #[arg(long)]
    pub public_url: String,
    /// iPXE script template (default: the built-in ipxe/boot.ipxe.j2).
    #[arg(long)]
    pub ipxe_template: Option<PathBuf>,
    /// Seconds an artifact that no script of the tree names any more stays
    /// in it (removed by the first publish after that).
    #[arg(long, default_value_t = mkimage::serve::GRACE.as_secs())]
    pub grace: u64,
    /// Also write the Secure Boot path with factory keys: shimx64.efi,
    /// Debian's signed GRUB as grubx64.efi, grub/grub.cfg and a GRUB config
    /// per machine (grub/grub.cfg-MAC), for a TFTP server rooted at OUT.
    #[arg(long)]
    pub secure_boot: bool,
    /// Sign each profile's UKI with the site key in DIR (`mkimage keys
    /// init`): sha256/HEX/PROFILE.efi, linked as uki/PROFILE.efi (HTTP boot)
    /// and uki/PROFILE/grubx64.efi beside shim (site key in MOK).
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,
}

/// `mkimage docs`: regenerate the generated references (hidden: a
/// maintainer's command, run from the repository root).
#[derive(Debug, Clone, clap::Args)]
pub struct DocsArgs {
    /// The docs dir (its reference/cli.md and reference/config.md).
    #[arg(long, default_value = "docs")]
    pub dir: PathBuf,
    /// Write nothing; fail when a generated part differs from the code.
    #[arg(long)]
    pub check: bool,
}

/// `mkimage man --dir DIR`.
#[derive(Debug, Clone, clap::Args)]
pub struct ManArgs {
    /// Where the pages go (created), e.g. /usr/local/share/man/man1.
    #[arg(long)]
    pub dir: PathBuf,
}
