//! BMC credentials: a YAML file of `NAME: {username: …, password: …}` that
//! the inventory's `bmc.credentials` name entries of. It must be readable by
//! its owner alone (mode 0600 or stricter): a file others can read is
//! refused. A password is a [`Secret`], which prints as `***`: it goes to
//! the BMC and nowhere else — not to a log, a record, a page or an error.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ConfigError;

/// A value that must never be shown: `Debug` prints `***`, and there is no
/// `Display`; [`Secret::expose`] hands it to the one place that sends it.
#[derive(Clone)]
pub struct Secret(String);

/// Any scalar (a numeric password stays text); never echoed in an error,
/// as serde's `invalid type: integer `1234`` would.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        use serde_yaml_ng::Value;
        match Value::deserialize(d) {
            Ok(Value::String(s)) => Ok(Secret(s)),
            Ok(Value::Number(n)) => Ok(Secret(n.to_string())),
            Ok(Value::Bool(b)) => Ok(Secret(b.to_string())),
            _ => Err(serde::de::Error::custom(
                "the password must be a string (its value is not shown)",
            )),
        }
    }
}

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The value, for the BMC request that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// One entry of the credentials file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub username: String,
    pub password: Secret,
}

/// The credentials file, by name.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    entries: BTreeMap<String, Credential>,
    path: PathBuf,
}

impl Credentials {
    /// Read `path`, refusing a file that its group or others may read.
    pub fn load(path: &Path) -> Result<Credentials, ConfigError> {
        let meta = std::fs::metadata(path).map_err(|e| {
            ConfigError(format!(
                "credentials file {}: {e} (the boot config's `credentials_file:` names it)",
                path.display()
            ))
        })?;
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ConfigError(format!(
                "credentials file {}: mode {mode:04o} lets others read the BMC passwords; refusing it (chmod 600 {})",
                path.display(),
                path.display()
            )));
        }
        let entries: BTreeMap<String, Credential> = crate::yaml::load(path)?;
        Ok(Credentials {
            entries,
            path: path.to_path_buf(),
        })
    }

    /// The entry `name`, or an error saying where it is missing.
    pub fn get(&self, name: &str) -> Result<&Credential, String> {
        self.entries.get(name).ok_or_else(|| {
            format!(
                "no credentials `{name}` in {} (it has: {})",
                self.path.display(),
                self.entries.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn readable_files_are_refused_and_secrets_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bmc.yml");
        std::fs::write(&path, "lab: {username: admin, password: hunter2}\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Credentials::load(&path).unwrap_err().0;
        assert!(
            err.contains("mode 0644") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let creds = Credentials::load(&path).unwrap();
        let lab = creds.get("lab").unwrap();
        assert_eq!(
            (lab.username.as_str(), lab.password.expose()),
            ("admin", "hunter2")
        );
        assert!(!format!("{creds:?}").contains("hunter2"));
        let missing = creds.get("other").unwrap_err();
        assert!(
            missing.contains("`other`") && missing.contains("lab") && !missing.contains("hunter2")
        );
        std::fs::write(
            &path,
            "lab: {username: admin, password: 1234}\nb: {username: a, password: [s3cret]}\n",
        )
        .unwrap();
        let err = Credentials::load(&path).unwrap_err().0;
        assert!(
            err.contains("must be a string") && !err.contains("s3cret"),
            "{err}"
        );
        std::fs::write(&path, "lab: {username: admin, password: x, pasword: y}\n").unwrap();
        let err = Credentials::load(&path).unwrap_err().0;
        assert!(err.contains(":1:") && err.contains("pasword"), "{err}");
    }
}
