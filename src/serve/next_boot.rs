//! A profile for a machine's next boot, set by an operator (`mkimage
//! reprovision --profile P`) rather than chosen by the boot config: one
//! small JSON file per MAC in `DIR/.state/next-boot/` (written whole, by
//! rename). `/boot.ipxe?mac=` looks here before the boot config's
//! selection; a one-shot entry (the default) is removed once a script was
//! served from it, so the boot after that is the boot config's again.
//!
//! Set through `POST /api/nodes/MAC/next-boot` (`{"profile": "P", "once":
//! true}`, or `{"profile": null}` to drop it; guarded by `serve::admin`) or
//! by writing the file directly (`mkimage reprovision --dir`, on the
//! server's host).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The overrides, relative to the served dir.
pub const NEXT_BOOT: &str = ".state/next-boot";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NextBoot {
    pub profile: String,
    /// Removed once a boot script was served from it.
    #[serde(default = "yes")]
    pub once: bool,
    /// When it was set (seconds since the epoch).
    #[serde(default)]
    pub set: u64,
}

fn yes() -> bool {
    true
}

fn path(served: &Path, mac: &str) -> PathBuf {
    served
        .join(NEXT_BOOT)
        .join(format!("{}.json", mac.replace(':', "-")))
}

/// The override for `mac` (normalized), if any. One that does not parse is
/// ignored with a warning.
pub fn get(served: &Path, mac: &str) -> Option<NextBoot> {
    let p = path(served, mac);
    let bytes = fs::read(&p).ok()?;
    serde_json::from_slice(&bytes)
        .map_err(|e| tracing::warn!("{}: {e}; ignored", p.display()))
        .ok()
}

/// Set (or with `None`, drop) the override for `mac`.
pub fn set(served: &Path, mac: &str, next: Option<&NextBoot>) -> std::io::Result<()> {
    let p = path(served, mac);
    let Some(next) = next else {
        return match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    };
    let dir = served.join(NEXT_BOOT);
    fs::create_dir_all(&dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".next.")
        .tempfile_in(&dir)?;
    tmp.write_all(&serde_json::to_vec(next).map_err(std::io::Error::other)?)?;
    tmp.persist(&p).map_err(|e| e.error)?;
    Ok(())
}

/// A script was served from `next`: a one-shot override is used up.
pub fn served(served: &Path, mac: &str, next: &NextBoot) {
    if next.once && get(served, mac).as_ref() == Some(next) {
        if let Err(e) = set(served, mac, None) {
            tracing::warn!("cannot remove the next-boot profile of {mac}: {e}");
        }
    }
}

/// The profile of the override for `mac`, when there is one and the boot
/// config still has that profile (else the boot config's selection, with a
/// warning).
pub fn pick<'a>(
    served: &Path,
    config: Option<&'a super::profiles::BootConfig>,
    mac: &str,
) -> Option<(&'a super::profiles::Profile, NextBoot)> {
    let next = get(served, mac)?;
    let found = config.and_then(|c| c.profiles.iter().find(|p| p.name == next.profile));
    if found.is_none() {
        tracing::warn!(mac, profile = %next.profile, "the next-boot profile is not in the boot config; selecting as usual");
    }
    found.map(|p| (p, next))
}

/// The body of `POST /api/nodes/MAC/next-boot`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub profile: Option<String>,
    #[serde(default = "yes")]
    pub once: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_overrides_are_used_up_and_persistent_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let mac = "52:54:00:00:00:01";
        assert_eq!(get(dir.path(), mac), None);
        let once = NextBoot {
            profile: "rescue".into(),
            once: true,
            set: 1,
        };
        set(dir.path(), mac, Some(&once)).unwrap();
        assert_eq!(get(dir.path(), mac), Some(once.clone()));
        served(dir.path(), mac, &once);
        assert_eq!(get(dir.path(), mac), None);
        let keep = NextBoot {
            once: false,
            ..once
        };
        set(dir.path(), mac, Some(&keep)).unwrap();
        served(dir.path(), mac, &keep);
        assert_eq!(get(dir.path(), mac), Some(keep));
        set(dir.path(), mac, None).unwrap();
        set(dir.path(), mac, None).unwrap();
        assert_eq!(get(dir.path(), mac), None);
    }
}
