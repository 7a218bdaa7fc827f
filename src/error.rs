//! The two kinds of error that are the user's to fix, and the exit code an
//! error chain maps to: 2 for a usage or config mistake, 1 for a failed build.
//! Every other layer reports through `anyhow` with context; these two types
//! are what the CLI looks for to pick the exit code.

/// An error that is the user's to fix (bad flags, a missing input, a tool
/// that is not installed): the CLI exits with code 2 instead of 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A config error (vars files, roles, playbooks, boot configs): always the
/// user's to fix; the message names the file, line, column and key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Exit code for an error chain: 2 for usage and config errors, 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    let usage = err.chain().any(|e| {
        e.downcast_ref::<UsageError>().is_some() || e.downcast_ref::<ConfigError>().is_some()
    });
    if usage {
        2
    } else {
        1
    }
}
