//! The `mkimage` command line: parse, call the library, print the error once.

use std::path::PathBuf;
use std::process::ExitCode;

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
    Serve(mkimage::serve::ServeArgs),
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
        Command::Serve(args) => mkimage::serve::run(&args),
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
