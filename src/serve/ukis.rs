//! The signed UKIs `mkimage serve` hands UEFI HTTP boot clients, and the
//! command that makes them (`mkimage keys sign-ukis`).
//!
//! The server never holds the site key, so the UKIs are signed elsewhere —
//! on a host that has the key and the build dir — into the build dir's
//! content store, and named in an index, `DIR/.state/ukis.json`: profile →
//! the UKI's sha256 and file name, and what it was built from (the sha256 of
//! the profile's kernel, initrd, basefs and overlays, and its extra
//! arguments). The proxyDHCP (`serve --uefi-boot shim`) answers an HTTP boot
//! client with `BASE/sha256/HEX/PROFILE.efi` for the profile its MAC
//! selects, only while the profile still resolves to what its UKI was built
//! from (`http_boot`); the pruner keeps every object the index names.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::ipxe::DEFAULT_CONSOLE;
use super::profiles::{for_machine, BootConfig, Resolved};
use super::publish_secure::{self as secure, Signing, Uki};
use crate::artifact::{write_atomic, Manifest};
use crate::secureboot::keys::Keys;

/// The index, relative to the served dir.
pub const INDEX: &str = ".state/ukis.json";

/// `ukis.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// Profile name → its signed UKI.
    pub profiles: BTreeMap<String, Entry>,
}

/// One profile's signed UKI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub sha256: String,
    /// `PROFILE.efi`: the last part of its content URL.
    pub name: String,
    /// What it was built from ([`inputs`]): a UKI whose profile resolves to
    /// other artifacts now is stale and not handed out.
    pub inputs: Vec<String>,
    /// The server URL its command line names.
    pub base_url: String,
}

/// What a UKI of `resolved` is built from: the sha256 of its kernel,
/// initrd, basefs and overlays in order, then its extra arguments.
pub fn inputs(resolved: &Resolved) -> Vec<String> {
    [&resolved.kernel, &resolved.initrd, &resolved.basefs]
        .into_iter()
        .chain(&resolved.overlays)
        .map(|a| a.sha256.clone())
        .chain([format!("args={}", resolved.args)])
        .collect()
}

impl Index {
    /// The index of `dir`; empty when there is none.
    pub fn load(dir: &Path) -> anyhow::Result<Index> {
        let path = dir.join(INDEX);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{}: not an index of UKIs (run `mkimage keys sign-ukis` again)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Write it whole (temp file + rename).
    pub fn save(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join(INDEX);
        let (parent, name) = (path.parent().unwrap_or(dir), "ukis.json");
        let json = serde_json::to_vec_pretty(self)?;
        write_atomic(parent, name, |f| f.write_all(&json))
    }

    /// The sha256 of every UKI it names (the pruner keeps them).
    pub fn objects(&self) -> HashSet<String> {
        self.profiles.values().map(|e| e.sha256.clone()).collect()
    }
}

/// `mkimage keys sign-ukis`, paths absolute.
#[derive(Debug, Clone)]
pub struct SignRequest {
    /// The served dir (its manifest, and its content store gets the UKIs).
    pub dir: PathBuf,
    pub boot_config: Option<PathBuf>,
    /// The site key's dir (`mkimage keys init`).
    pub keys: PathBuf,
    /// The URL machines reach `mkimage serve` at (the UKIs' command lines
    /// name it: downloads and reports).
    pub public_url: String,
}

/// Sign every profile's UKI into `dir`'s content store and write the index
/// (profiles gone from the boot config leave it).
pub fn sign(req: &SignRequest) -> anyhow::Result<Vec<Uki>> {
    let base = &super::servers::check_public_url(&req.public_url)?;
    // `uki::build` names any missing tool (stub, objcopy, sbsign) itself.
    let keys = Keys::load(&req.keys)?;
    let manifest = Manifest::load(&req.dir)?;
    let config = req
        .boot_config
        .as_deref()
        .map(BootConfig::load)
        .transpose()?;
    let default = for_machine(config.as_ref(), None, &manifest).context("the default profile")?;
    let profiles = secure::every_profile(config.as_ref(), &default, &manifest)?;
    let servers = config
        .as_ref()
        .map(|c| c.servers.clone())
        .unwrap_or_default();
    let console = config
        .as_ref()
        .and_then(|c| c.console.clone())
        .unwrap_or_else(|| DEFAULT_CONSOLE.to_string());
    let signing = Signing {
        dir: &req.dir,
        base,
        servers: &servers,
        console: &console,
        reports: true,
    };
    let ukis = secure::build_ukis(&signing, &keys, &profiles.iter().collect::<Vec<_>>())?;
    let mut index = Index::default();
    for u in &ukis {
        let Some(resolved) = profiles.iter().find(|r| r.profile == u.profile) else {
            continue;
        };
        index.profiles.insert(
            u.profile.clone(),
            Entry {
                sha256: u.sha256.clone(),
                name: u.name.clone(),
                inputs: inputs(resolved),
                base_url: base.to_string(),
            },
        );
    }
    index.save(&req.dir)?;
    Ok(ukis)
}
