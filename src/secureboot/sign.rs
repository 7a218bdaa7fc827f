//! Signatures over node overlays, for a signed UKI's init to check
//! (docs/nodes.md, "Signed UKIs"): RSA PKCS#1 v1.5 over the SHA-256 of a
//! one-line statement naming the machine and the overlay's sha256
//! ([`node_statement`]), so an overlay signed for one machine is refused
//! by every other; what `openssl dgst -sha256 -sign` makes and the kernel's
//! `keyctl pkey_verify … enc=pkcs1 hash=sha256` checks. Made by openssl,
//! as `keys init` makes the keys: the key never passes through mkimage's
//! memory, logs or errors (only its path does).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::exec::Cmd;
use crate::UsageError;

/// What is signed for node overlay `sha256` of machine `mac` (lower-case,
/// colons): the init writes the same line from its own MAC and the file it
/// downloaded.
pub fn node_statement(mac: &str, sha256: &str) -> String {
    format!("mkimage node overlay {mac} {sha256}\n")
}

/// A private key node overlays are signed with (`serve --node-signing-key`).
#[derive(Debug, Clone)]
pub struct NodeSigner {
    key: PathBuf,
}

impl NodeSigner {
    /// The key at `key`: a 0600 file openssl reads as a private key.
    pub fn load(key: &Path) -> Result<NodeSigner, UsageError> {
        if !key.is_file() {
            return Err(UsageError(format!(
                "--node-signing-key {}: no such file: `mkimage keys init --dir DIR` writes DIR/{}",
                key.display(),
                super::keys::NODE_KEY
            )));
        }
        super::keys::private(key, "the node-signing key")
            .map_err(|e| UsageError(format!("--node-signing-key {}", e.0)))?;
        if !crate::exec::have("openssl") {
            return Err(UsageError(
                "--node-signing-key: `openssl` is missing: apt-get install -y openssl".into(),
            ));
        }
        // openssl's own error would quote nothing of the key, but say it plainly.
        Cmd::new("openssl")
            .args(["pkey", "-noout", "-in"])
            .arg(key)
            .run()
            .map_err(|_| {
                UsageError(format!(
                    "--node-signing-key {}: not a private key openssl can read (give the node.key `mkimage keys init` wrote)",
                    key.display()
                ))
            })?;
        Ok(NodeSigner {
            key: key.to_path_buf(),
        })
    }

    /// The signature of `data` (PKCS#1 v1.5 over its SHA-256).
    pub fn sign(&self, data: &[u8]) -> anyhow::Result<Vec<u8>> {
        let work = tempfile::tempdir().context("cannot make a temporary dir to sign in")?;
        let file = work.path().join("data");
        let sig = work.path().join("data.sig");
        fs::write(&file, data)?;
        Cmd::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .arg("-out")
            .arg(&sig)
            .arg(&file)
            .run()
            .context("openssl could not sign a node overlay with the node-signing key")?;
        Ok(fs::read(&sig)?)
    }
}

/// Does `sig` verify over `data` against the DER certificate `cert`?
/// (openssl, as a check of what [`NodeSigner::sign`] made; the init checks
/// with the kernel's keys.)
pub fn verifies(cert: &Path, data: &[u8], sig: &[u8]) -> anyhow::Result<bool> {
    let work = tempfile::tempdir()?;
    let (file, sig_file, pubkey) = (
        work.path().join("data"),
        work.path().join("data.sig"),
        work.path().join("pub.pem"),
    );
    fs::write(&file, data)?;
    fs::write(&sig_file, sig)?;
    Cmd::new("openssl")
        .args(["x509", "-inform", "DER", "-pubkey", "-noout", "-in"])
        .arg(cert)
        .arg("-out")
        .arg(&pubkey)
        .run()?;
    Ok(Cmd::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&pubkey)
        .arg("-signature")
        .arg(&sig_file)
        .arg(&file)
        .run()
        .is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn signs_what_the_certificate_verifies_and_nothing_else() {
        let t = tempfile::tempdir().unwrap();
        let keys = super::super::keys::init(&t.path().join("k")).unwrap();
        let signer = NodeSigner::load(&keys.node_key).unwrap();
        let sig = signer.sign(b"node overlay").unwrap();
        assert_eq!(sig.len(), 256, "RSA 2048: a 256-byte signature");
        assert!(verifies(&keys.node_der, b"node overlay", &sig).unwrap());
        assert!(!verifies(&keys.node_der, b"node overlaY", &sig).unwrap());
        assert!(!verifies(&keys.der, b"node overlay", &sig).unwrap());
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert!(!verifies(&keys.node_der, b"node overlay", &bad).unwrap());
    }

    #[test]
    fn refuses_a_key_others_can_read_or_that_is_no_key() {
        let t = tempfile::tempdir().unwrap();
        let keys = super::super::keys::init(&t.path().join("k")).unwrap();
        fs::set_permissions(&keys.node_key, fs::Permissions::from_mode(0o640)).unwrap();
        let err = NodeSigner::load(&keys.node_key).unwrap_err().0;
        assert!(
            err.contains("chmod 600") && err.contains("mode 640"),
            "{err}"
        );
        let junk = t.path().join("junk.key");
        fs::write(&junk, "not a key").unwrap();
        fs::set_permissions(&junk, fs::Permissions::from_mode(0o600)).unwrap();
        let err = NodeSigner::load(&junk).unwrap_err().0;
        assert!(err.contains("not a private key"), "{err}");
        assert!(NodeSigner::load(&t.path().join("none")).is_err());
    }
}
