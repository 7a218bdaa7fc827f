//! The `mkimage` command line: parse, call the library, print the error once.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use mkimage::build::BuildArgs;

#[derive(Parser)]
#[command(name = "mkimage", version, about = "Build, serve and boot-test RAM-resident Debian netboot images")]
struct Cli {
    /// More output (-v: debug, -vv: trace). RUST_LOG works too.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the squashfs base filesystem (bootstrap + roles + cleanup).
    Basefs(BuildArgs),
    /// Build a gzipped-cpio overlay: what roles change on top of the basefs.
    Overlay(BuildArgs),
    /// Build the initrd and kernel that netboot base + overlays.
    Initrd(BuildArgs),
    /// Run a playbook: an ordered list of builds.
    Play(mkimage::build::PlayArgs),
    /// Serve the built artifacts over HTTP (with iPXE scripts) and TFTP.
    Serve(ServeArgs),
    /// Validate a vars file or playbook and its roles; build nothing.
    Check(mkimage::config::CheckArgs),
    /// List the entries of a squashfs, cpio.gz overlay or initrd.
    Inspect {
        /// The image to list.
        file: PathBuf,
    },
    /// Netboot the built artifacts in QEMU and assert they came up.
    BootTest(mkimage::qemu::BootTestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    mkimage::progress::init_logging(cli.verbose);
    let result = match cli.command {
        Command::Basefs(args) => mkimage::build::run(mkimage::build::Kind::Basefs, &args),
        Command::Overlay(args) => mkimage::build::run(mkimage::build::Kind::Overlay, &args),
        Command::Initrd(args) => mkimage::build::run(mkimage::build::Kind::Initrd, &args),
        Command::Play(args) => mkimage::build::play(&args),
        Command::Serve(args) => mkimage::serve::run(&args.options()),
        Command::Check(args) => mkimage::config::check(&args),
        Command::Inspect { file } => mkimage::inspect::run(&file),
        Command::BootTest(args) => mkimage::qemu::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mkimage: {}", mkimage::progress::format_error(&err));
            ExitCode::from(mkimage::exit_code(&err) as u8)
        }
    }
}

/// `mkimage serve` (turned into `mkimage::serve::ServeOptions`).
#[derive(Debug, Clone, clap::Args)]
struct ServeArgs {
    /// The directory to serve (the build output dir).
    #[arg(long, default_value = "builds")]
    dir: PathBuf,
    /// HTTP listen address (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "0.0.0.0:8080")]
    http: String,
    /// TFTP listen address ("off" to disable).
    #[arg(long, default_value = "0.0.0.0:69")]
    tftp: String,
    /// Boot profiles (default: vars/boot.yml if it exists; without one every
    /// machine boots the basefs alone, no overlay).
    #[arg(long)]
    boot_config: Option<PathBuf>,
    /// Base URL put into boot scripts (default: http:// + the Host the client used).
    #[arg(long)]
    public_url: Option<String>,
    /// Directory with the iPXE binaries served over TFTP (Debian's `ipxe` package).
    #[arg(long, default_value = "/usr/lib/ipxe")]
    ipxe_dir: PathBuf,
    /// iPXE script template (default: the built-in ipxe/boot.ipxe.j2).
    #[arg(long)]
    ipxe_template: Option<PathBuf>,
    /// Threads running HTTP, TFTP and the pruner (default: one per CPU).
    /// Connections are tasks, not threads: any number share these.
    #[arg(long)]
    workers: Option<usize>,
    /// Seconds a client may take to send its request head, or stall (take
    /// no response data) before it is dropped.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Seconds a superseded artifact stays servable at its content-addressed
    /// URL (/sha256/HEX/NAME) after a rebuild replaced it.
    #[arg(long, default_value_t = 3600)]
    grace: u64,
    /// Seconds a machine that asked before anything bootable existed waits
    /// before asking again.
    #[arg(long, default_value_t = 20)]
    retry_delay: u64,
}

impl ServeArgs {
    fn options(&self) -> mkimage::serve::ServeOptions {
        let mut o = mkimage::serve::ServeOptions::new(&self.dir);
        o.http = self.http.clone();
        o.tftp = (self.tftp != "off").then(|| self.tftp.clone());
        o.boot_config = self.boot_config.clone();
        o.public_url = self.public_url.clone();
        o.ipxe_dir = self.ipxe_dir.clone();
        o.ipxe_template = self.ipxe_template.clone();
        o.workers = self.workers.unwrap_or(o.workers);
        o.timeout = Duration::from_secs(self.timeout.max(1));
        o.grace = Duration::from_secs(self.grace);
        o.retry_delay = Duration::from_secs(self.retry_delay.max(1));
        o
    }
}
