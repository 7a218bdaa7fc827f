//! `mkimage keys init`: the site's Secure Boot signing key and its
//! certificate. The key is RSA 2048 (what UEFI firmware verifies), mode
//! 0600 in a 0700 directory, and never inside a served dir (one holding a
//! `manifest.json`, or below one). The certificate comes twice: PEM
//! (`db.crt`, for sbsign and virt-fw-vars) and DER (`db.cer`, for
//! `mokutil --import` and firmware setup screens).
//!
//! Beside it, the node-signing key (`node.key`, 0600, and `node.cer`): the
//! key `mkimage serve --node-signing-key` signs each node overlay with, and
//! whose certificate every UKI carries for its init to check those
//! signatures (docs/nodes.md, "Signed UKIs"). A server holds only that key,
//! never the site key, so a stolen server cannot sign a kernel.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::exec::Cmd;
use crate::UsageError;

pub const KEY: &str = "db.key";
pub const CERT: &str = "db.crt";
pub const DER: &str = "db.cer";
pub const NODE_KEY: &str = "node.key";
pub const NODE_DER: &str = "node.cer";

/// The site's key and certificates, as `init` wrote them.
#[derive(Debug, Clone)]
pub struct Keys {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub der: PathBuf,
    /// The node-signing key and its DER certificate (`keys init` writes
    /// them; a dir made before they existed has none: see [`Keys::node_signer`]).
    pub node_key: PathBuf,
    pub node_der: PathBuf,
}

impl Keys {
    fn in_dir(dir: &Path) -> Keys {
        Keys {
            key: dir.join(KEY),
            cert: dir.join(CERT),
            der: dir.join(DER),
            node_key: dir.join(NODE_KEY),
            node_der: dir.join(NODE_DER),
        }
    }

    /// The key node overlays are signed with and the DER certificate a
    /// UKI carries for it: `node.key` and `node.cer`, or in a key dir made
    /// before `keys init` wrote them, the site key itself (`db.key`, `db.cer`).
    pub fn node_signer(&self) -> (&Path, &Path) {
        if self.node_key.is_file() && self.node_der.is_file() {
            (&self.node_key, &self.node_der)
        } else {
            (&self.key, &self.der)
        }
    }

    /// The keys in `dir`; the key must be 0600.
    pub fn load(dir: &Path) -> Result<Keys, UsageError> {
        let keys = Keys::in_dir(dir);
        for f in [&keys.key, &keys.cert, &keys.der] {
            if !f.is_file() {
                return Err(UsageError(format!(
                    "{}: no such file: make the site key with `mkimage keys init --dir {}`",
                    f.display(),
                    dir.display()
                )));
            }
        }
        private(&keys.key, "the site key")?;
        if keys.node_key.exists() {
            private(&keys.node_key, "the node-signing key")?;
        }
        Ok(keys)
    }
}

/// A key file must be 0600 (no bits for group or others).
pub fn private(key: &Path, what: &str) -> Result<(), UsageError> {
    let mode = fs::metadata(key)
        .map_err(|e| UsageError(format!("{}: {e}", key.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(UsageError(format!(
            "{}: {what} is mode {:o}, readable by others: chmod 600 it (and consider it leaked)",
            key.display(),
            mode & 0o777
        )));
    }
    Ok(())
}

/// The served dir `dir` is in, if any (a dir holding `manifest.json`).
fn served_dir(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join("manifest.json").is_file())
        .map(Path::to_path_buf)
}

/// Write a new key and certificate into `dir` (made 0700 if missing).
pub fn init(dir: &Path) -> anyhow::Result<Keys> {
    if let Some(served) = served_dir(dir) {
        return Err(UsageError(format!(
            "{}: inside {}, which holds a manifest.json (a served dir): keep the site key out of anything a server serves",
            dir.display(),
            served.display()
        ))
        .into());
    }
    let keys = Keys::in_dir(dir);
    if keys.key.exists() {
        return Err(UsageError(format!(
            "{} already exists: machines may trust it; remove it yourself to make a new one",
            keys.key.display()
        ))
        .into());
    }
    if !crate::exec::have("openssl") {
        return Err(UsageError("`openssl` is missing: apt-get install -y openssl".into()).into());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".keys.")
        .tempdir_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let staged = Keys::in_dir(staging.path());
    let node_cert = staging.path().join("node.crt");
    make_key(
        &staged.key,
        &staged.cert,
        &staged.der,
        "mkimage site Secure Boot key",
    )
    .context("openssl could not make the site key")?;
    make_key(
        &staged.node_key,
        &node_cert,
        &staged.node_der,
        "mkimage node overlay signer",
    )
    .context("openssl could not make the node-signing key")?;
    for (from, to) in [
        (&staged.cert, &keys.cert),
        (&staged.der, &keys.der),
        (&staged.node_der, &keys.node_der),
        (&staged.node_key, &keys.node_key),
        (&staged.key, &keys.key),
    ] {
        fs::rename(from, to).with_context(|| format!("cannot write {}", to.display()))?;
    }
    Ok(keys)
}

/// An RSA 2048 key (0600 before openssl writes a byte into it) and its
/// self-signed certificate, PEM and DER.
fn make_key(key: &Path, cert: &Path, der: &Path, name: &str) -> anyhow::Result<()> {
    fs::File::create(key)?.set_permissions(fs::Permissions::from_mode(0o600))?;
    Cmd::new("openssl")
        .args([
            "req", "-new", "-x509", "-newkey", "rsa:2048", "-sha256", "-nodes",
        ])
        .args(["-days", "3650", "-subj", &format!("/CN={name}/")])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .run()?;
    fs::set_permissions(key, fs::Permissions::from_mode(0o600))?;
    Cmd::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(cert)
        .arg("-out")
        .arg(der)
        .run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_a_private_key_and_refuses_a_served_dir() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("keys");
        let keys = init(&dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&keys.key), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert!(keys.cert.is_file() && keys.der.is_file());
        assert_eq!(mode(&keys.node_key), 0o600);
        let loaded = Keys::load(&dir).unwrap();
        assert_eq!(
            loaded.node_signer(),
            (keys.node_key.as_path(), keys.node_der.as_path())
        );
        assert!(init(&dir)
            .unwrap_err()
            .to_string()
            .contains("already exists"));
        fs::set_permissions(&keys.key, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Keys::load(&dir).unwrap_err().0.contains("chmod 600"));
        fs::write(t.path().join("manifest.json"), "{}").unwrap();
        let err = init(&t.path().join("k2")).unwrap_err().to_string();
        assert!(err.contains("served dir"), "{err}");
    }
}
