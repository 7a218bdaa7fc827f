//! Paths from the command line, made absolute once: what every verb's
//! module shares.

use std::path::{Path, PathBuf};

/// A path from the command line, made absolute against the current directory.
pub fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(mkimage::config::absolute(path)?)
}

/// The boot config given, else vars/boot.yml when it exists (as `serve` does).
pub fn boot_config_or_default(given: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    mkimage::serve::boot_config_or_default(given)
        .map(|p| absolute(&p))
        .transpose()
}
