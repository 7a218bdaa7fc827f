//! `mkimage keys init`: the site's Secure Boot key (`secureboot::keys`).

use std::path::{Path, PathBuf};

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
}

/// `mkimage keys init`: the key, and how a site makes machines trust it.
pub fn keys_init(dir: &Path) -> anyhow::Result<()> {
    let keys = mkimage::secureboot::keys::init(dir)?;
    println!(
        "site key:    {} (mode 0600; keep it off the boot server's served dir)",
        keys.key.display()
    );
    println!(
        "certificate: {} (PEM), {} (DER)",
        keys.cert.display(),
        keys.der.display()
    );
    println!(
        "enroll it in each machine's db (firmware setup or BMC), or in MOK: mokutil --import {}",
        keys.der.display()
    );
    println!(
        "node-signing key: {} (mode 0600; for mkimage serve --node-signing-key; signed UKIs carry {})",
        keys.node_key.display(),
        keys.node_der.display()
    );
    Ok(())
}
