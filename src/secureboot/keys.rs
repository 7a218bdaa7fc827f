//! `mkimage keys init`: the site's Secure Boot signing key and its
//! certificate. The key is RSA 2048 (what UEFI firmware verifies), mode
//! 0600 in a 0700 directory, and never inside a served dir (one holding a
//! `manifest.json`, or below one). The certificate comes twice: PEM
//! (`db.crt`, for sbsign and virt-fw-vars) and DER (`db.cer`, for
//! `mokutil --import` and firmware setup screens).

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::exec::Cmd;
use crate::UsageError;

pub const KEY: &str = "db.key";
pub const CERT: &str = "db.crt";
pub const DER: &str = "db.cer";

/// The site's key and certificates, as `init` wrote them.
#[derive(Debug, Clone)]
pub struct Keys {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub der: PathBuf,
}

impl Keys {
    fn in_dir(dir: &Path) -> Keys {
        Keys {
            key: dir.join(KEY),
            cert: dir.join(CERT),
            der: dir.join(DER),
        }
    }

    /// The keys in `dir`; the key must be 0600.
    pub fn load(dir: &Path) -> Result<Keys, UsageError> {
        let keys = Keys::in_dir(dir);
        for f in [&keys.key, &keys.cert] {
            if !f.is_file() {
                return Err(UsageError(format!(
                    "{}: no such file: make the site key with `mkimage keys init --dir {}`",
                    f.display(),
                    dir.display()
                )));
            }
        }
        let mode = fs::metadata(&keys.key)
            .map_err(|e| UsageError(format!("{}: {e}", keys.key.display())))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(UsageError(format!(
                "{}: the site key is mode {:o}, readable by others: chmod 600 it (and consider it leaked)",
                keys.key.display(),
                mode & 0o777
            )));
        }
        Ok(keys)
    }
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
    // The key file exists at 0600 before openssl writes a byte into it.
    fs::File::create(&staged.key)?.set_permissions(fs::Permissions::from_mode(0o600))?;
    Cmd::new("openssl")
        .args([
            "req", "-new", "-x509", "-newkey", "rsa:2048", "-sha256", "-nodes",
        ])
        .args([
            "-days",
            "3650",
            "-subj",
            "/CN=mkimage site Secure Boot key/",
        ])
        .arg("-keyout")
        .arg(&staged.key)
        .arg("-out")
        .arg(&staged.cert)
        .run()
        .context("openssl could not make the site key")?;
    fs::set_permissions(&staged.key, fs::Permissions::from_mode(0o600))?;
    Cmd::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&staged.cert)
        .arg("-out")
        .arg(&staged.der)
        .run()
        .context("openssl could not write the DER certificate")?;
    for (from, to) in [
        (&staged.cert, &keys.cert),
        (&staged.der, &keys.der),
        (&staged.key, &keys.key),
    ] {
        fs::rename(from, to).with_context(|| format!("cannot write {}", to.display()))?;
    }
    Ok(keys)
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
        assert!(Keys::load(&dir).is_ok());
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
