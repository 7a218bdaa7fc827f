//! The command line's shape: the global flags and the verbs, each verb's
//! flags in its own module (raw: paths as given, resolved there).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::boot_test::BootTestArgs;
use super::build::{BasefsArgs, BuildArgs, PlayArgs};
use super::cache::CacheArgs;
use super::check::CheckCmd;
use super::docs::{DocsArgs, ManArgs};
use super::iso::IsoArgs;
use super::keys::KeysCommand;
use super::lock::LockArgs;
use super::nodes::NodesArgs;
use super::publish::PublishArgs;
use super::serve::ServeArgs;

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
