//! Playbooks: an ordered list of builds (`kind` + vars file + overrides).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::keys::Kind;
use crate::{yaml, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlaybook {
    builds: Vec<RawBuild>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    kind: RawKind,
    vars: PathBuf,
    #[serde(default)]
    var: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    Basefs,
    Overlay,
    Initrd,
}

/// One build of a playbook.
#[derive(Debug, Clone)]
pub struct Build {
    pub kind: Kind,
    /// The vars file (relative paths are taken from the playbook's dir's parent,
    /// i.e. the project root for `playbooks/x.yml`).
    pub vars: PathBuf,
    pub overrides: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Playbook {
    pub builds: Vec<Build>,
}

pub fn load(path: &Path) -> Result<Playbook, ConfigError> {
    let raw: RawPlaybook = yaml::load(path)?;
    let root = path
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    let builds = raw
        .builds
        .into_iter()
        .map(|b| Build {
            kind: match b.kind {
                RawKind::Basefs => Kind::Basefs,
                RawKind::Overlay => Kind::Overlay,
                RawKind::Initrd => Kind::Initrd,
            },
            vars: if b.vars.is_absolute() || b.vars.exists() {
                b.vars.clone()
            } else {
                root.join(&b.vars)
            },
            overrides: b.var.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        })
        .collect::<Vec<_>>();
    if builds.is_empty() {
        return Err(ConfigError(format!(
            "{}: `builds:` is empty",
            path.display()
        )));
    }
    Ok(Playbook { builds })
}
