//! The lock file's format: a [`Lock`] of [`Locked`] packages, read with
//! its errors placed and written atomically.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// One locked package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locked {
    pub version: String,
    /// sha256 of the `.deb`, as the archive's index lists it.
    pub sha256: String,
    /// Its path in the archive (`pool/main/…/NAME_VERSION_ARCH.deb`).
    pub filename: String,
}

/// A lock file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub suite: String,
    pub arch: String,
    pub packages: BTreeMap<String, Locked>,
}

const HEADER: &str =
    "# Written by `mkimage lock`: the exact package versions (and .deb sha256) the\n\
# builds install. Builds whose vars set `lock:` to this file install exactly\n\
# these; run `mkimage lock` again to move to the mirror's current versions.\n";

impl Lock {
    /// Read and check a lock file; `file` is the vars file that names it.
    pub fn load(path: &Path, named_in: &Path) -> Result<Lock, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError(format!(
                "{}: lock: {} does not exist; write it with `mkimage lock PLAYBOOK` (or `--vars FILE`), or remove `lock:`",
                named_in.display(),
                path.display()
            )));
        }
        let lock: Lock = crate::yaml::load(path)?;
        for (name, p) in &lock.packages {
            if !crate::artifact::objects::is_sha256(&p.sha256)
                || p.version.is_empty()
                || !p.filename.ends_with(".deb")
            {
                let (line, col) = crate::yaml::locate(
                    &std::fs::read_to_string(path).unwrap_or_default(),
                    &["packages".into(), name.clone()],
                );
                return Err(ConfigError(format!(
                    "{}:{line}:{col}: packages.{name}: needs `version`, `sha256` (64 hex digits) and `filename` (…/NAME_VERSION_ARCH.deb); write the file with `mkimage lock`",
                    path.display()
                )));
            }
        }
        Ok(lock)
    }

    /// The lock must be for the build's suite and architecture.
    pub fn check_for(&self, path: &Path, suite: &str, arch: &str) -> Result<(), ConfigError> {
        if self.suite != suite || self.arch != arch {
            return Err(ConfigError(format!(
                "{}: locks {}/{}, but the build installs from {suite}/{arch}; run `mkimage lock` again",
                path.display(),
                self.suite,
                self.arch
            )));
        }
        Ok(())
    }

    /// Write the lock file (atomically).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = format!("{HEADER}{}", serde_yaml_ng::to_string(self)?);
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        crate::artifact::write_atomic(dir, &name, |f| {
            std::io::Write::write_all(f, text.as_bytes())
        })?;
        Ok(())
    }

    /// apt preferences that pin every locked package to its version.
    pub fn preferences(&self) -> String {
        let mut out = String::from("# mkimage: the lock file's versions, while building\n");
        for (name, p) in &self.packages {
            out.push_str(&format!(
                "\nPackage: {name}\nPin: version {}\nPin-Priority: 1001\n",
                p.version
            ));
        }
        out
    }

    /// Packages installed (name → version) that the lock does not have at
    /// that version, as `NAME VERSION (locked: V)` phrases; empty when all
    /// match.
    pub fn mismatches(&self, installed: &BTreeMap<String, String>) -> Vec<String> {
        installed
            .iter()
            .filter(|(name, version)| {
                self.packages
                    .get(*name)
                    .is_none_or(|p| &p.version != *version)
            })
            .map(|(name, version)| match self.packages.get(name) {
                Some(p) => format!("{name} {version} (locked: {})", p.version),
                None => format!("{name} {version} (not in the lock)"),
            })
            .collect()
    }
}
