//! Boot profiles: which kernel, initrd, basefs and overlays a machine boots,
//! chosen by MAC, by inventory facts (`match:`, once the machine has been
//! discovered) or by tag from the boot config (`vars/boot.yml`), and
//! resolved against `manifest.json` into file names and sha256s.
//!
//! An artifact reference is either a file name in the manifest
//! (`discovery.cpio.gz`) or a build name of the kind the slot expects
//! (`discovery` in `overlays:` means the overlay built with `name: discovery`);
//! an overlay may also live on another server (`{url: URL, sha256: HEX}`).
//! Without a boot config the default profile is the basefs alone (see
//! [`derive_default`]): no overlay reaches a machine no profile names it for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::artifact::{Entry, Manifest};

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read boot config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("boot config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("boot config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("profile `{profile}`: {message}")]
    Resolve { profile: String, message: String },
}

/// `vars/boot.yml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    /// The profile for machines no selector matches (default: the first).
    #[serde(default)]
    pub default: Option<String>,
    /// Console arguments put on every kernel command line.
    #[serde(default)]
    pub console: Option<String>,
    #[serde(default)]
    pub profiles: Vec<Profile>,
    /// MAC → tags, for profiles selected by tag.
    #[serde(default)]
    pub hosts: BTreeMap<String, Vec<String>>,
    /// Boot servers in the order machines try them (see `serve::servers`).
    #[serde(default)]
    pub servers: Vec<String>,
    /// Subnet (CIDR) → servers, for clients in it.
    #[serde(default)]
    pub servers_by_subnet: BTreeMap<String, Vec<String>>,
    /// The lab inventory (`crate::inventory`: read and checked there).
    #[serde(default)]
    pub nodes: BTreeMap<String, crate::inventory::Node>,
    /// Inventory files with more `nodes:` (read and checked by `crate::inventory`).
    #[serde(default)]
    pub include: Option<crate::yaml::OneOrMany>,
    /// The BMC credentials file the inventory's `bmc.credentials` name entries of.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// The server's variables for node templates (`serve::identity`).
    #[serde(default)]
    pub vars: BTreeMap<String, serde_yaml_ng::Value>,
    /// The node templates' folder (default: the built-in `nodes/templates/`).
    #[serde(default)]
    pub node_templates: Option<PathBuf>,
    /// What `mkimage boot-test` boots and asserts: its business, skipped here.
    #[serde(default)]
    pub boot_test: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub kernel: Option<String>,
    #[serde(default)]
    pub initrd: Option<String>,
    #[serde(default)]
    pub basefs: Option<String>,
    /// Applied in this order.
    #[serde(default)]
    pub overlays: Vec<OverlayRef>,
    /// Extra kernel arguments.
    #[serde(default)]
    pub args: String,
    #[serde(default)]
    pub macs: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Inventory facts (`vendor`, `model`, `serial`) → pattern; a machine
    /// whose recorded inventory matches every one is selected.
    #[serde(default, rename = "match")]
    pub facts: BTreeMap<String, String>,
    /// Variables for node templates (over the boot config's, under the node's).
    #[serde(default)]
    pub vars: BTreeMap<String, serde_yaml_ng::Value>,
}

/// The facts `match:` may name.
pub const FACTS: [&str; 3] = ["vendor", "model", "serial"];

/// What is known of a machine's hardware (from the node registry).
pub trait Facts {
    /// The value of a fact in [`FACTS`]; `None` or empty when unknown.
    fn fact(&self, name: &str) -> Option<&str>;
}

/// How a machine's profile was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected {
    Mac,
    Facts,
    Tag,
    /// No selector matched: the default profile (the machine is new).
    Default,
}

/// A `match:` pattern against a fact: case-insensitive, `*` and `?` globs.
fn fact_matches(pattern: &str, value: Option<&str>) -> bool {
    match value.map(str::trim) {
        Some(v) if !v.is_empty() => {
            crate::archive::walk::glob_match(&pattern.trim().to_lowercase(), &v.to_lowercase())
        }
        _ => false,
    }
}

/// An entry of a profile's `overlays:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "serde_yaml_ng::Value")]
pub enum OverlayRef {
    /// A build name or file name in the served dir's manifest.
    Artifact(String),
    /// An overlay another server serves, checked by the init against sha256.
    Remote { url: String, sha256: String },
}

impl From<&str> for OverlayRef {
    fn from(s: &str) -> OverlayRef {
        OverlayRef::Artifact(s.to_string())
    }
}

const OVERLAY_FORMS: &str =
    "an overlay is a build name, a file name, or {url: http://HOST/PATH, sha256: HEX}";

impl TryFrom<serde_yaml_ng::Value> for OverlayRef {
    type Error = String;

    fn try_from(value: serde_yaml_ng::Value) -> Result<OverlayRef, String> {
        use serde_yaml_ng::Value;
        let map = match value {
            Value::String(s) => return Ok(OverlayRef::Artifact(s)),
            Value::Mapping(m) => m,
            _ => return Err(OVERLAY_FORMS.into()),
        };
        let (mut url, mut sha256) = (None, None);
        for (k, v) in map {
            match (k.as_str(), v) {
                (Some("url"), Value::String(v)) => url = Some(v),
                (Some("sha256"), Value::String(v)) => sha256 = Some(v),
                (Some(k @ ("url" | "sha256")), _) => {
                    return Err(format!("overlay `{k}:` must be a string"))
                }
                (k, _) => {
                    return Err(format!(
                        "unknown overlay key `{}`: {OVERLAY_FORMS}",
                        k.unwrap_or("?")
                    ))
                }
            }
        }
        let (Some(url), Some(sha256)) = (url, sha256) else {
            return Err(format!(
                "a remote overlay needs both `url:` and `sha256:` ({OVERLAY_FORMS})"
            ));
        };
        let sha256 = sha256.to_ascii_lowercase();
        if !crate::artifact::objects::is_sha256(&sha256) {
            return Err(format!("overlay sha256 `{sha256}` is not 64 hex digits"));
        }
        check_remote_url(&url)?;
        Ok(OverlayRef::Remote { url, sha256 })
    }
}

/// A URL that goes onto the kernel command line as one word of a
/// comma-separated list, and through iPXE's script parser unchanged.
fn check_remote_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let bad = url.chars().find(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, ',' | '$' | '"' | '\'' | '\\' | '|')
    });
    match (rest, bad) {
        (None, _) | (Some(""), _) => Err(format!(
            "overlay url `{url}` must start with http:// or https:// and name a host"
        )),
        (_, Some(c)) => Err(format!(
            "overlay url `{url}` contains {c:?}: percent-encode it (%XX)"
        )),
        _ => Ok(()),
    }
}

/// An artifact picked for a boot: file name and sha256, and for an overlay
/// from another server its URL.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Art {
    pub file: String,
    pub sha256: String,
    /// A basefs's dm-verity `ROOT_HASH:HASH_OFFSET`, when it has a hash tree.
    #[serde(default)]
    pub verity: Option<String>,
    /// Served elsewhere (`None`: in the served dir).
    pub remote: Option<String>,
    /// Its size in bytes, when known (the manifest's; `mkimage.need=`).
    #[serde(default)]
    pub size: Option<u64>,
}

/// A profile resolved against one manifest snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub profile: String,
    pub kernel: Art,
    pub initrd: Art,
    pub basefs: Art,
    pub overlays: Vec<Art>,
    pub args: String,
}

pub use crate::inventory::normalize_mac;

impl BootConfig {
    /// Read and validate a boot config file.
    pub fn load(path: &Path) -> Result<BootConfig, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.into(),
            source,
        })?;
        let mut config: BootConfig =
            serde_yaml_ng::from_str(&text).map_err(|source| ProfileError::Parse {
                path: path.into(),
                source,
            })?;
        let invalid = |message: String| ProfileError::Invalid {
            path: path.into(),
            message,
        };
        let mut names = BTreeSet::new();
        for profile in &mut config.profiles {
            if !names.insert(profile.name.clone()) {
                return Err(invalid(format!(
                    "profile `{}` is defined twice",
                    profile.name
                )));
            }
            for mac in &mut profile.macs {
                *mac = normalize_mac(mac).ok_or_else(|| {
                    invalid(format!(
                        "profile `{}`: `{mac}` is not a MAC address",
                        profile.name
                    ))
                })?;
            }
            if let Some(key) = profile.facts.keys().find(|k| !FACTS.contains(&k.as_str())) {
                return Err(invalid(format!(
                    "profile `{}`: match: `{key}` is not a fact (use {})",
                    profile.name,
                    FACTS.join(", ")
                )));
            }
            if let Some((key, _)) = profile.facts.iter().find(|(_, v)| v.trim().is_empty()) {
                return Err(invalid(format!("profile `{}`: match: `{key}` is empty (give a value or a pattern such as `Dell*`)", profile.name)));
            }
        }
        if config.include.is_some() {
            let lab = crate::inventory::Lab::parse(path, &text).map_err(|e| invalid(e.0))?;
            config.nodes = lab.nodes;
        }
        let mut hosts = BTreeMap::new();
        for (mac, tags) in std::mem::take(&mut config.hosts) {
            let norm = normalize_mac(&mac)
                .ok_or_else(|| invalid(format!("hosts: `{mac}` is not a MAC address")))?;
            hosts.insert(norm, tags);
        }
        config.hosts = hosts;
        super::servers::check(&mut config.servers, &mut config.servers_by_subnet)
            .map_err(invalid)?;
        if let Some(default) = &config.default {
            if !names.contains(default) {
                return Err(invalid(format!(
                    "default profile `{default}` is not among the profiles"
                )));
            }
        }
        Ok(config)
    }

    /// The profile for a machine: one listing its MAC, else the first whose
    /// tags meet the MAC's tags in `hosts`, else `default`, else the first.
    pub fn select(&self, mac: Option<&str>) -> Option<&Profile> {
        self.select_for(mac, None).0
    }

    /// The profile for a machine, and how it was chosen: its inventory
    /// node's `profile:`, else one listing its MAC, else the first whose `match:` facts all match `facts`, else the
    /// first whose tags meet the MAC's tags in `hosts` or its node's
    /// `tags:`, else `default`, else the first.
    pub fn select_for(
        &self,
        mac: Option<&str>,
        facts: Option<&dyn Facts>,
    ) -> (Option<&Profile>, Selected) {
        let node = mac.and_then(|m| {
            self.nodes
                .values()
                .find(|n| normalize_mac(&n.mac).as_deref() == Some(m))
        });
        if let Some(p) = node.and_then(|n| n.profile.as_ref()) {
            if let Some(p) = self.profiles.iter().find(|q| &q.name == p) {
                return (Some(p), Selected::Mac);
            }
        }
        if let Some(mac) = mac {
            if let Some(p) = self
                .profiles
                .iter()
                .find(|p| p.macs.iter().any(|m| m == mac))
            {
                return (Some(p), Selected::Mac);
            }
        }
        if let Some(facts) = facts {
            let matches = |p: &&Profile| {
                !p.facts.is_empty()
                    && p.facts
                        .iter()
                        .all(|(k, pattern)| fact_matches(pattern, facts.fact(k)))
            };
            if let Some(p) = self.profiles.iter().find(matches) {
                return (Some(p), Selected::Facts);
            }
        }
        let tags: Vec<&String> = mac
            .and_then(|m| self.hosts.get(m))
            .into_iter()
            .flatten()
            .chain(node.into_iter().flat_map(|n| &n.tags))
            .collect();
        if !tags.is_empty() {
            if let Some(p) = self
                .profiles
                .iter()
                .find(|p| p.tags.iter().any(|t| tags.contains(&t)))
            {
                return (Some(p), Selected::Tag);
            }
        }
        let default = match &self.default {
            Some(name) => self.profiles.iter().find(|p| &p.name == name),
            None => self.profiles.first(),
        };
        (default, Selected::Default)
    }
}

fn art(e: &Entry) -> Art {
    Art {
        file: e.file.clone(),
        sha256: e.sha256.clone(),
        verity: e.verity.as_ref().map(|v| v.cmdline()),
        remote: None,
        size: Some(e.size),
    }
}

fn overlay(
    manifest: &Manifest,
    reference: &OverlayRef,
    profile: &str,
) -> Result<Art, ProfileError> {
    match reference {
        OverlayRef::Artifact(name) => lookup(manifest, "overlay", Some(name), profile),
        OverlayRef::Remote { url, sha256 } => {
            let file = url
                .rsplit('/')
                .next()
                .filter(|f| !f.is_empty())
                .unwrap_or("overlay.cpio.gz");
            Ok(Art {
                file: file.to_string(),
                sha256: sha256.clone(),
                verity: None,
                remote: Some(url.clone()),
                size: None,
            })
        }
    }
}

/// The newest entry of a kind (by build time, then file name).
fn newest<'a>(manifest: &'a Manifest, kind: &str) -> Option<&'a Entry> {
    manifest
        .artifacts
        .values()
        .filter(|e| e.kind == kind)
        .max_by(|a, b| (a.build_time, &a.file).cmp(&(b.build_time, &b.file)))
}

/// Find what a reference names: a file name in the manifest, else the newest
/// build of that name and kind; `None` means the newest of the kind.
fn lookup(
    manifest: &Manifest,
    kind: &str,
    reference: Option<&str>,
    profile: &str,
) -> Result<Art, ProfileError> {
    let err = |message: String| ProfileError::Resolve {
        profile: profile.into(),
        message,
    };
    let found = match reference {
        Some(r) => manifest.artifacts.get(r).or_else(|| {
            manifest
                .artifacts
                .values()
                .filter(|e| e.kind == kind && e.name == r)
                .max_by_key(|e| (e.build_time, e.file.clone()))
        }),
        None => newest(manifest, kind),
    };
    match (found, reference) {
        (Some(e), _) => Ok(art(e)),
        (None, Some(r)) => Err(err(format!(
            "no {kind} `{r}` in manifest.json (not a file name, nor the name of a {kind} build)"
        ))),
        (None, None) => Err(err(format!("manifest.json has no {kind}; build one first"))),
    }
}

/// Resolve a configured profile against the manifest.
pub fn resolve(profile: &Profile, manifest: &Manifest) -> Result<Resolved, ProfileError> {
    let name = profile.name.as_str();
    Ok(Resolved {
        profile: name.to_string(),
        kernel: lookup(manifest, "kernel", profile.kernel.as_deref(), name)?,
        initrd: lookup(manifest, "initrd", profile.initrd.as_deref(), name)?,
        basefs: lookup(manifest, "basefs", profile.basefs.as_deref(), name)?,
        overlays: profile
            .overlays
            .iter()
            .map(|o| overlay(manifest, o, name))
            .collect::<Result<_, _>>()?,
        args: profile.args.clone(),
    })
}

/// What a machine (`mac`, or an unnamed one) boots: its profile from the
/// boot config, or the basefs alone without one.
pub fn for_machine(
    config: Option<&BootConfig>,
    mac: Option<&str>,
    manifest: &Manifest,
) -> Result<Resolved, ProfileError> {
    for_known_machine(config, mac, None, manifest).map(|(resolved, _)| resolved)
}

/// What a machine boots, given what is known of its hardware, and how its
/// profile was chosen.
pub fn for_known_machine(
    config: Option<&BootConfig>,
    mac: Option<&str>,
    facts: Option<&dyn Facts>,
    manifest: &Manifest,
) -> Result<(Resolved, Selected), ProfileError> {
    match config.map(|c| c.select_for(mac, facts)) {
        Some((Some(profile), how)) => Ok((resolve(profile, manifest)?, how)),
        _ => Ok((derive_default(manifest)?, Selected::Default)),
    }
}

/// The profile used when there is no boot config: the newest kernel, initrd
/// and basefs, and no overlay — an overlay (secure erase, firmware flash…)
/// reaches only machines a boot config names it for.
pub fn derive_default(manifest: &Manifest) -> Result<Resolved, ProfileError> {
    resolve(
        &Profile {
            name: "default".into(),
            ..Default::default()
        },
        manifest,
    )
}

#[cfg(test)]
#[path = "profiles_tests.rs"]
mod tests;
