//! `mkimage keys init`: the site's Secure Boot key (`secureboot::keys`);
//! `mkimage keys sign-ukis`: every profile's UKI signed for the server
//! (`serve::ukis`).

use std::path::{Path, PathBuf};

use super::paths::{absolute, boot_config_or_default};

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

/// `mkimage keys …`.
pub fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Init { dir } => keys_init(&absolute(&dir)?),
        KeysCommand::SignUkis {
            keys,
            dir,
            boot_config,
            public_url,
        } => sign_ukis(&mkimage::serve::ukis::SignRequest {
            dir: absolute(&dir)?,
            boot_config: boot_config_or_default(boot_config.as_deref())?,
            keys: absolute(&keys)?,
            public_url,
        }),
    }
}

/// `mkimage keys sign-ukis`: each profile's UKI, and where the index is.
fn sign_ukis(req: &mkimage::serve::ukis::SignRequest) -> anyhow::Result<()> {
    for u in mkimage::serve::ukis::sign(req)? {
        println!(
            "UKI of profile {}: /sha256/{}/{}",
            u.profile, u.sha256, u.name
        );
    }
    println!(
        "index: {} (mkimage serve --uefi-boot shim offers these to UEFI HTTP boot clients)",
        req.dir.join(mkimage::serve::ukis::INDEX).display()
    );
    Ok(())
}

/// `mkimage keys init`: the key, and how a site makes machines trust it.
fn keys_init(dir: &Path) -> anyhow::Result<()> {
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
