//! mkimage: build, serve and boot-test RAM-resident Debian netboot images.
//!
//! The binary (`src/main.rs`) only parses the command line and prints errors;
//! everything it does lives in these modules, one job each.

pub mod archive;
pub mod artifact;
pub mod bootstrap;
pub mod build;
pub mod config;
pub mod debs;
pub mod exec;
pub mod inspect;
pub mod progress;
pub mod provision;
pub mod qemu;
pub mod sandbox;
pub mod serve;
pub mod template;

/// An error that is the user's to fix (bad flags, bad config, a missing
/// input): the CLI exits with code 2 instead of 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Exit code for an error chain: 2 for usage and config errors, 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    let usage = err.chain().any(|e| {
        e.downcast_ref::<UsageError>().is_some() || e.downcast_ref::<config::ConfigError>().is_some()
    });
    if usage {
        2
    } else {
        1
    }
}
