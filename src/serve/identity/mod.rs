//! Per-node identity: each machine of the lab inventory (`nodes:` in the
//! boot config) boots with its own hostname, network, SSH keys and
//! variables. The node templates (`templates`) are rendered for the machine
//! at request time, packed as a small deterministic cpio.gz, kept in memory
//! by sha256 and named LAST in that machine's boot script, at a URL of its
//! own (`/node/MAC/SHA256/node.cpio.gz`) that only that machine may fetch
//! ([`node_overlay_allowed`]). The init checks its sha256 like any overlay.
//! With `serve --node-signing-key`, each is signed as it is made and the
//! signature served beside it (`…/node.cpio.gz.sig`, on the same token):
//! a signed UKI's init accepts the overlay only when the signature verifies
//! against the certificate inside the UKI (docs/nodes.md, "Signed UKIs").
//!
//! Variables, lowest precedence first: the boot config's `vars:` (the
//! server's), the profile's `vars:`, the node's `vars:` — merged into
//! `vars` and also given at the top level — then the node's own keys
//! (`name`, `hostname`, `mac`, `profile`, `tags`, `ssh_authorized_keys`,
//! `network`) and `server_url`, which no var overrides. An undefined
//! variable is an error, never an empty value; a template whose output is
//! blank is left out (so the networkd files exist only for a static network).

pub mod check;
pub mod route;
pub mod templates;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use http::request::Parts;
use minijinja::Value;
use serde_yaml_ng::Value as Yaml;

use super::profiles::{normalize_mac, Art, BootConfig, Profile, Resolved};
use crate::archive::cpio::{self, Entry, EntryKind};
use crate::inventory::Node;
use crate::secureboot::sign::NodeSigner;
use templates::Template;

/// The file name of every node overlay in its URL and on the init's console.
pub const FILE: &str = "node.cpio.gz";

/// Where node overlays are served: `/node/MAC/SHA256/node.cpio.gz`.
pub const PREFIX: &str = "/node/";

/// A template that could not be rendered for a node.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("node `{node}`: template {template}: {detail}")]
pub struct RenderError {
    pub node: String,
    pub template: String,
    pub detail: String,
}

/// The template context of node `name` booting `profile`.
pub fn context(
    config: &BootConfig,
    name: &str,
    node: &Node,
    profile: Option<&Profile>,
    server_url: &str,
) -> Value {
    let mut vars: BTreeMap<String, Yaml> = config.vars.clone();
    if let Some(p) = profile {
        vars.extend(p.vars.clone());
    }
    vars.extend(node.vars.clone());
    let mut top: BTreeMap<String, Value> = vars
        .iter()
        .map(|(k, v)| (k.clone(), Value::from_serialize(v)))
        .collect();
    let mac = normalize_mac(&node.mac).unwrap_or_else(|| node.mac.clone());
    let network = node.network.as_ref().map(|n| {
        let addresses = n.address.to_vec();
        let first = addresses.first().cloned().unwrap_or_default();
        let ip = first.split('/').next().unwrap_or_default().to_string();
        let bond: Vec<String> = n
            .bond
            .iter()
            .map(|m| normalize_mac(m).unwrap_or_else(|| m.clone()))
            .collect();
        minijinja::context! {
            addresses => addresses, address => first, ip => ip,
            gateway => n.gateway, dns => n.dns, vlan => n.vlan, bond => bond,
        }
    });
    let own = [
        ("name", Value::from(name)),
        (
            "hostname",
            Value::from(node.hostname.clone().unwrap_or_else(|| name.to_string())),
        ),
        ("mac", Value::from(mac)),
        ("profile", Value::from(profile.map(|p| p.name.clone()))),
        ("tags", Value::from_serialize(&node.tags)),
        (
            "ssh_authorized_keys",
            Value::from_serialize(&node.ssh_authorized_keys),
        ),
        ("network", network.unwrap_or(Value::from(()))),
        ("vars", Value::from_serialize(&vars)),
        ("server_url", Value::from(server_url)),
    ];
    top.extend(own.into_iter().map(|(k, v)| (k.to_string(), v)));
    Value::from_serialize(&top)
}

/// Render every template for node `name`: (target path, contents), blank
/// outputs left out.
pub fn render(
    name: &str,
    templates: &[Template],
    ctx: &Value,
) -> Result<Vec<(String, String)>, RenderError> {
    let mut env = crate::template::environment();
    env.add_filter("tojson", |v: Value| {
        serde_json::to_string_pretty(&v).map_err(|e| {
            minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
        })
    });
    let mut out = Vec::new();
    for t in templates {
        let fail = |detail: String| RenderError {
            node: name.to_string(),
            template: format!("/{}", t.path),
            detail,
        };
        let text = env
            .render_str(&t.source, ctx)
            .map_err(|e| fail(crate::template::TemplateError::from(e).detail))?;
        if !text.trim().is_empty() {
            let text = if text.ends_with('\n') {
                text
            } else {
                text + "\n"
            };
            out.push((t.path.clone(), text));
        }
    }
    Ok(out)
}

/// Pack rendered files as a deterministic cpio.gz: parents first, sorted,
/// time 0, root-owned; `/root` and `.ssh` directories 0700 and files in
/// them 0600, everything else 0755 / 0644.
pub fn pack(files: &[(String, String)]) -> std::io::Result<Vec<u8>> {
    let private = |p: &str| p == "root" || p.starts_with("root/") || p.contains(".ssh");
    let mut dirs = BTreeSet::new();
    for (path, _) in files {
        let mut at = path.as_str();
        while let Some((parent, _)) = at.rsplit_once('/') {
            dirs.insert(parent.to_string());
            at = parent;
        }
    }
    let mut entries: Vec<Entry> = dirs
        .into_iter()
        .map(|d| {
            let mode = if private(&d) { 0o700 } else { 0o755 };
            Entry::new(d, EntryKind::Dir, mode)
        })
        .collect();
    for (path, text) in files {
        let mode = if private(path) { 0o600 } else { 0o644 };
        entries.push(Entry::new(
            path.clone(),
            EntryKind::Data(text.as_bytes().to_vec()),
            mode,
        ));
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    cpio::write_newc_gz(entries, Vec::new(), cpio::DEFAULT_GZIP_LEVEL)
}

/// The templates a boot config renders nodes with: its `node_templates:`
/// folder (relative to the boot config's own folder), else the built-in set.
pub fn templates_of(
    config: &BootConfig,
    config_path: &std::path::Path,
) -> Result<Vec<Template>, String> {
    match &config.node_templates {
        Some(dir) => {
            let base = config_path.parent().unwrap_or(std::path::Path::new("."));
            templates::load(&base.join(dir))
        }
        None => Ok(templates::built_in()),
    }
}

/// The inventory's node for `mac` (normalized), with its name.
pub fn node_of<'a>(config: &'a BootConfig, mac: &str) -> Option<(&'a str, &'a Node)> {
    config
        .nodes
        .iter()
        .find(|(_, n)| normalize_mac(&n.mac).as_deref() == Some(mac))
        .map(|(name, n)| (name.as_str(), n))
}

/// The kernel's `ip=` for the init's own download on node `name`'s static
/// network (`ip=ADDRESS::GATEWAY:NETMASK:HOSTNAME::off:DNS0:DNS1`, on the
/// NIC that booted, as `BOOTIF=` names it); `None` for DHCP, and for an
/// IPv6, VLAN or bond setup, which the init does not make (it takes DHCP
/// there, and the booted system its static network).
pub fn kernel_ip(name: &str, node: &Node) -> Option<String> {
    let net = node.network.as_ref()?;
    if net.vlan.is_some() || !net.bond.is_empty() {
        return None;
    }
    let first = net.address.to_vec().into_iter().next()?;
    let (addr, prefix) = first.split_once('/')?;
    let addr: std::net::Ipv4Addr = addr.parse().ok()?;
    let prefix: u32 = prefix.parse().ok().filter(|p| *p <= 32)?;
    let mask = std::net::Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix).unwrap_or(0));
    let gateway = net.gateway.clone().unwrap_or_default();
    let dns: Vec<&str> = net.dns.iter().map(String::as_str).take(2).collect();
    let hostname = node.hostname.as_deref().unwrap_or(name);
    Some(format!(
        "ip={addr}::{gateway}:{mask}:{hostname}::off:{}:{}",
        dns.first().unwrap_or(&""),
        dns.get(1).unwrap_or(&"")
    ))
}

/// The file name of a node overlay's signature (`serve
/// --node-signing-key`), beside it: `/node/MAC/SHA256/node.cpio.gz.sig`.
pub const SIG_FILE: &str = "node.cpio.gz.sig";

/// A node overlay made for one machine, and its signature when the server
/// signs them.
struct Made {
    mac: String,
    bytes: Bytes,
    sig: Option<Bytes>,
}

/// Node overlays made lately, by sha256, each with the one MAC it is for;
/// with a node-signing key, each signed once as it is made.
#[derive(Default)]
pub struct Cache {
    made: Mutex<HashMap<String, Made>>,
    signer: Option<NodeSigner>,
}

/// More than this many overlays in memory: the cache starts over (a
/// machine whose overlay was dropped fetches its boot script again).
const MAX_CACHED: usize = 4096;

impl Cache {
    /// A cache whose overlays are signed with `signer` (none: unsigned).
    pub fn signing_with(signer: Option<NodeSigner>) -> Cache {
        Cache {
            made: Mutex::default(),
            signer,
        }
    }

    /// Does this server sign node overlays?
    pub fn signs(&self) -> bool {
        self.signer.is_some()
    }

    /// Keep `bytes` for `mac`, signed (once per content and machine) when
    /// there is a key.
    fn keep(&self, sha: &str, mac: &str, bytes: Bytes) -> anyhow::Result<()> {
        let known = {
            let made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
            made.get(sha)
                .filter(|m| m.mac == mac)
                .and_then(|m| m.sig.clone())
        };
        let sig = match (&self.signer, known) {
            (Some(_), Some(sig)) => Some(sig),
            (Some(signer), None) => {
                let statement = crate::secureboot::sign::node_statement(mac, sha);
                Some(Bytes::from(signer.sign(statement.as_bytes())?))
            }
            (None, _) => None,
        };
        let mut made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        if made.len() >= MAX_CACHED && !made.contains_key(sha) {
            made.clear();
        }
        let mac = mac.to_string();
        made.insert(sha.to_string(), Made { mac, bytes, sig });
        Ok(())
    }

    /// The overlay `sha` if it was made for `mac`.
    pub fn get(&self, mac: &str, sha: &str) -> Option<Bytes> {
        let made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        made.get(sha)
            .filter(|m| m.mac == mac)
            .map(|m| m.bytes.clone())
    }

    /// The signature of overlay `sha` if it was made (and signed) for `mac`.
    pub fn signature(&self, mac: &str, sha: &str) -> Option<Bytes> {
        let made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        made.get(sha)
            .filter(|m| m.mac == mac)
            .and_then(|m| m.sig.clone())
    }
}

/// The node overlay of machine `mac` booting `profile`, as the artifact its
/// boot script names last (`Ok(None)`: the inventory has no such node).
pub fn overlay_for(
    cache: &Cache,
    config: &BootConfig,
    config_path: &std::path::Path,
    mac: &str,
    profile: &str,
    base_url: &str,
) -> Result<Option<Art>, RenderError> {
    let Some((name, node)) = node_of(config, mac) else {
        return Ok(None);
    };
    let fail = |template: &str, detail: String| RenderError {
        node: name.to_string(),
        template: template.to_string(),
        detail,
    };
    let templates = templates_of(config, config_path).map_err(|e| fail("(folder)", e))?;
    let profile = config.profiles.iter().find(|p| p.name == profile);
    let ctx = context(config, name, node, profile, base_url);
    let files = render(name, &templates, &ctx)?;
    let bytes = pack(&files).map_err(|e| fail("(packing)", e.to_string()))?;
    let sha256 = crate::artifact::sha256_bytes(&bytes);
    let size = Some(bytes.len() as u64);
    cache
        .keep(&sha256, mac, Bytes::from(bytes))
        .map_err(|e| fail("(signing)", format!("{e:#}")))?;
    Ok(Some(Art {
        file: FILE.to_string(),
        remote: Some(format!("{base_url}{PREFIX}{mac}/{sha256}/{FILE}")),
        sha256,
        verity: None,
        size,
    }))
}

/// Make `resolved` machine `mac`'s own: its static `ip=` for the init, and
/// its node overlay as the last overlay (`Ok(None)`: not in the inventory).
pub fn personalize(
    resolved: &mut Resolved,
    cache: &Cache,
    config: &BootConfig,
    config_path: &std::path::Path,
    mac: &str,
    base_url: &str,
) -> Result<Option<Art>, RenderError> {
    if let Some(ip) = node_of(config, mac).and_then(|(n, node)| kernel_ip(n, node)) {
        resolved.args = format!("{} {ip}", resolved.args).trim().to_string();
    }
    let made = overlay_for(cache, config, config_path, mac, &resolved.profile, base_url)?;
    if let Some(art) = &made {
        resolved.overlays.push(art.clone());
    }
    Ok(made)
}

/// May this request have machine `mac`'s node overlay?
///
/// The one access decision for node overlays (`/node/MAC/…`): the request
/// carries a boot token issued to `mac` (`Authorization: Bearer TOKEN`,
/// which the init sends from the `mkimage.token=` of its command line; see
/// `serve::tokens`). Another host — or the machine in a boot long past —
/// gets nothing, whatever its address.
pub fn node_overlay_allowed(tokens: &super::tokens::Tokens, mac: &str, req: &Parts) -> bool {
    super::tokens::bearer(&req.headers).is_some_and(|t| tokens.verify(mac, t))
}

#[cfg(test)]
mod tests;
