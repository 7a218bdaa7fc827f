//! OVMF's variable stores for boot-test under Secure Boot: Debian's store
//! with Microsoft's keys enrolled (what a server has from the factory),
//! copied per boot; with a site key, the copy gets the site's certificate
//! in `db` too, through PyPI's virt-firmware (`virt-fw-vars`), as a site
//! would enroll it through the firmware's setup or the BMC — or in shim's
//! `MokList` instead, as `mokutil --import` and MokManager would.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::exec::Cmd;
use crate::UsageError;

/// Debian's store with Microsoft's KEK and db (and no site key).
pub const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
/// Where scripts/install-deps puts virt-firmware (a venv of its own).
pub const VIRT_FW_VARS: &str = "/opt/mkimage-virtfw/bin/virt-fw-vars";
/// The owner GUID mkimage enrolls its certificates under.
pub const OWNER: &str = "a0c6f7b4-2c8e-4a4b-9e0d-6d6b696d6167";

fn virt_fw_vars() -> Option<String> {
    if Path::new(VIRT_FW_VARS).is_file() {
        Some(VIRT_FW_VARS.into())
    } else if crate::exec::have("virt-fw-vars") {
        Some("virt-fw-vars".into())
    } else {
        None
    }
}

/// Where the site certificate is enrolled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The firmware's `db`: the firmware itself verifies what the key signed.
    Db,
    /// shim's `MokList` (a boot-services-only variable, so only something
    /// that ran before the OS — MokManager — could have written it): shim
    /// verifies what the key signed; the firmware knows nothing of the key.
    Mok,
}

/// A copy of the factory store in `work`, with `enroll` (a PEM or DER
/// certificate) added to `db` when given.
pub fn vars(work: &Path, enroll: Option<&Path>) -> anyhow::Result<PathBuf> {
    vars_trusting(work, enroll.map(|cert| (cert, Trust::Db)))
}

/// A copy of the factory store in `work`, with `enroll`'s certificate
/// added to `db` or to `MokList`.
pub fn vars_trusting(work: &Path, enroll: Option<(&Path, Trust)>) -> anyhow::Result<PathBuf> {
    super::need(&[(OVMF_VARS_MS, "ovmf")])?;
    let out = work.join("OVMF_VARS.fd");
    match enroll {
        None => {
            std::fs::copy(OVMF_VARS_MS, &out)
                .with_context(|| format!("cannot copy {OVMF_VARS_MS}"))?;
        }
        Some((cert, trust)) => {
            let tool = virt_fw_vars().ok_or_else(|| {
                UsageError(format!("virt-fw-vars is missing: scripts/install-deps installs PyPI's virt-firmware into {}", VIRT_FW_VARS.trim_end_matches("/bin/virt-fw-vars")))
            })?;
            Cmd::new(tool)
                .args(["--input", OVMF_VARS_MS, "--output"])
                .arg(&out)
                .arg(match trust {
                    Trust::Db => "--add-db",
                    Trust::Mok => "--add-mok",
                })
                .arg(OWNER)
                .arg(cert)
                .run()
                .context("virt-fw-vars could not enroll the site certificate")?;
        }
    }
    Ok(out)
}
