//! The lab inventory: the machines a lab has, by name, as the boot config's
//! `nodes:` lists them (DESIGN.md, "The lab inventory"). One place used by
//! the server (identity, selection), by `power` and `reprovision` (each
//! node's BMC) and by `publish`.
//!
//! Plain typed data, checked on the way in: unknown keys, a MAC that is not
//! one, the same MAC, name or hostname twice, a BMC without an address, an
//! address that is not CIDR — each an error naming file:line:col. The BMC
//! passwords are not here: `credentials_file:` names a separate 0600 file
//! (`power::credentials`), and a node's `bmc.credentials` is a name in it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::yaml::{locate, OneOrMany};
use crate::ConfigError;

/// One machine of the lab.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub mac: String,
    /// Default: the node's name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Its profile (else the boot config's selection picks one).
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// A static network configuration (else DHCP).
    #[serde(default)]
    pub network: Option<Network>,
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// Free variables, for node templates.
    #[serde(default)]
    pub vars: BTreeMap<String, serde_yaml_ng::Value>,
    #[serde(default)]
    pub bmc: Option<Bmc>,
}

/// A static network configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Address(es) in CIDR notation (`10.0.1.7/24`).
    pub address: OneOrMany,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub vlan: Option<u16>,
    /// MACs of the NICs bonded together (empty: no bond).
    #[serde(default)]
    pub bond: Vec<String>,
}

/// How to reach a node's baseboard management controller.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bmc {
    /// Host name or IP address (for Redfish also `https://HOST[:PORT]`).
    pub address: String,
    /// Default: 623 for IPMI, 443 (https) or 80 (http) for Redfish.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub protocol: Protocol,
    /// A name in the credentials file.
    pub credentials: String,
    /// The node boots UEFI: IPMI's boot device then carries the EFI flag.
    #[serde(default)]
    pub uefi: bool,
    /// Redfish: the system's path (default: the service's only system).
    #[serde(default)]
    pub system: Option<String>,
    /// Redfish over https: check the BMC's certificate (default true).
    #[serde(default = "yes")]
    pub verify_tls: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Ipmi,
    Redfish,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Ipmi => "ipmi",
            Protocol::Redfish => "redfish",
        }
    }
}

/// The inventory of a boot config, checked.
#[derive(Debug, Clone, Default)]
pub struct Lab {
    /// By name.
    pub nodes: BTreeMap<String, Node>,
    /// Absolute (relative paths are taken from the boot config's directory).
    pub credentials_file: Option<PathBuf>,
    /// The boot config it came from.
    pub source: PathBuf,
}

/// The part of a boot config this module reads (the rest is the server's).
#[derive(Deserialize)]
struct LabFile {
    #[serde(default)]
    nodes: BTreeMap<String, Node>,
    #[serde(default)]
    credentials_file: Option<PathBuf>,
    /// Inventory files (relative to the boot config's folder), each with
    /// `nodes:` only.
    #[serde(default)]
    include: Option<OneOrMany>,
}

/// An inventory file a boot config `include:`s.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Included {
    #[serde(default)]
    nodes: BTreeMap<String, Node>,
}

/// One file's text, for error locations.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn at(&self, keys: &[&str], message: String) -> ConfigError {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let (line, col) = locate(self.text, &keys);
        ConfigError(format!("{}:{line}:{col}: {message}", self.path.display()))
    }
}

/// What the nodes seen so far hold, so a second one with the same name,
/// MAC, hostname or address is an error wherever it is defined.
#[derive(Default)]
struct Seen {
    nodes: BTreeMap<String, Node>,
    macs: BTreeMap<String, String>,
    hostnames: BTreeSet<String>,
    addresses: BTreeMap<IpAddr, String>,
}

impl Lab {
    /// Read the inventory of the boot config `path` (none: an empty lab).
    pub fn load(path: &Path) -> Result<Lab, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        Lab::parse(path, &text)
    }

    /// Parse and check the inventory in `text` (the contents of `path`),
    /// and in the files it `include:`s.
    pub fn parse(path: &Path, text: &str) -> Result<Lab, ConfigError> {
        let file: LabFile = crate::yaml::parse(path, text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let main = Source { path, text };
        let mut seen = Seen::default();
        for (name, node) in file.nodes {
            seen.add(&main, name, node)?;
        }
        for inc in file.include.map(|i| i.to_vec()).unwrap_or_default() {
            let inc_path = base.join(&inc);
            let inc_text = std::fs::read_to_string(&inc_path).map_err(|e| {
                main.at(
                    &["include"],
                    format!("include: cannot read {}: {e}", inc_path.display()),
                )
            })?;
            let included: Included = crate::yaml::parse(&inc_path, &inc_text)?;
            let source = Source {
                path: &inc_path,
                text: &inc_text,
            };
            for (name, node) in included.nodes {
                seen.add(&source, name, node)?;
            }
        }
        Ok(Lab {
            nodes: seen.nodes,
            credentials_file: file.credentials_file.map(|p| base.join(p)),
            source: path.to_path_buf(),
        })
    }

    /// The node whose MAC is `mac` (normalized), with its name.
    pub fn by_mac(&self, mac: &str) -> Option<(&str, &Node)> {
        self.nodes
            .iter()
            .find(|(_, n)| n.mac == mac)
            .map(|(name, n)| (name.as_str(), n))
    }
}

impl Seen {
    /// Check node `name` (from `src`) against itself and the nodes before it.
    fn add(&mut self, src: &Source, name: String, mut node: Node) -> Result<(), ConfigError> {
        let at = |keys: &[&str], message: String| src.at(keys, message);
        if !valid_name(&name) {
            return Err(at(&["nodes", &name], format!("node name `{name}`: use letters, digits, `-`, `_` and `.` (it is also the default hostname)")));
        }
        if self.nodes.contains_key(&name) {
            return Err(at(
                &["nodes", &name],
                format!("nodes.{name}: a node of that name is defined before (in the boot config or a file it includes)"),
            ));
        }
        node.mac = normalize_mac(&node.mac).ok_or_else(|| {
            at(
                &["nodes", &name, "mac"],
                format!("nodes.{name}.mac: `{}` is not a MAC address", node.mac),
            )
        })?;
        if let Some(other) = self.macs.insert(node.mac.clone(), name.clone()) {
            return Err(at(
                &["nodes", &name, "mac"],
                format!("nodes.{name}.mac: {} is node `{other}`'s MAC too", node.mac),
            ));
        }
        let hostname = node.hostname.clone().unwrap_or_else(|| name.clone());
        if !valid_name(&hostname) {
            return Err(at(
                &["nodes", &name, "hostname"],
                format!("nodes.{name}.hostname: `{hostname}` is not a host name"),
            ));
        }
        if !self.hostnames.insert(hostname.clone()) {
            return Err(at(
                &["nodes", &name],
                format!("nodes.{name}: hostname `{hostname}` is another node's too"),
            ));
        }
        if let Some(net) = &node.network {
            self.network(&at, &name, net)?;
        }
        if let Some(bmc) = &node.bmc {
            if bmc.address.trim().is_empty() || bmc.address.chars().any(char::is_whitespace) {
                return Err(at(
                    &["nodes", &name, "bmc"],
                    format!("nodes.{name}.bmc.address: give the BMC's host name or IP address"),
                ));
            }
            if bmc.credentials.trim().is_empty() {
                return Err(at(
                    &["nodes", &name, "bmc"],
                    format!("nodes.{name}.bmc.credentials: name an entry of the credentials file"),
                ));
            }
        }
        self.nodes.insert(name, node);
        Ok(())
    }

    /// A node's static network: CIDR addresses no other node has, IP
    /// gateway and DNS, bond MACs.
    fn network(
        &mut self,
        at: &dyn Fn(&[&str], String) -> ConfigError,
        name: &str,
        net: &Network,
    ) -> Result<(), ConfigError> {
        for cidr in net.address.to_vec() {
            let ip = check_cidr(&cidr).map_err(|e| {
                at(
                    &["nodes", name, "network", "address"],
                    format!("nodes.{name}.network.address: {e}"),
                )
            })?;
            if let Some(other) = self.addresses.insert(ip, name.to_string()) {
                return Err(at(
                    &["nodes", name, "network", "address"],
                    format!("nodes.{name}.network.address: {ip} is node `{other}`'s address too"),
                ));
            }
        }
        for (key, value) in net
            .gateway
            .iter()
            .map(|g| ("gateway", g))
            .chain(net.dns.iter().map(|d| ("dns", d)))
        {
            if value.parse::<IpAddr>().is_err() {
                return Err(at(
                    &["nodes", name, "network", key],
                    format!("nodes.{name}.network.{key}: `{value}` is not an IP address"),
                ));
            }
        }
        for mac in &net.bond {
            if normalize_mac(mac).is_none() {
                return Err(at(
                    &["nodes", name, "network", "bond"],
                    format!("nodes.{name}.network.bond: `{mac}` is not a MAC address"),
                ));
            }
        }
        Ok(())
    }
}

/// `aa:bb:cc:dd:ee:ff` from any common spelling (colons, hyphens, none).
pub fn normalize_mac(s: &str) -> Option<String> {
    let hex: String = s.chars().filter(|c| *c != ':' && *c != '-').collect();
    if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(
        (0..6)
            .map(|i| &hex[2 * i..2 * i + 2])
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// A node name or hostname: a DNS label-ish word.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with(['-', '.'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// `ADDRESS/PREFIX`, the prefix within the address family's width.
fn check_cidr(cidr: &str) -> Result<IpAddr, String> {
    let (addr, prefix) = cidr
        .split_once('/')
        .ok_or_else(|| format!("`{cidr}` is not CIDR (ADDRESS/PREFIX, e.g. 10.0.1.7/24)"))?;
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{cidr}`: `{addr}` is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match prefix.parse::<u8>() {
        Ok(p) if p <= max => Ok(ip),
        _ => Err(format!("`{cidr}`: the prefix must be 0..={max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Lab, String> {
        Lab::parse(Path::new("/lab/boot.yml"), text).map_err(|e| e.0)
    }

    const GOOD: &str = "profiles:\n  - name: discovery\nnodes:\n  node07:\n    mac: \"52-54-00-12-34-56\"\n    profile: discovery\n    tags: [rack12]\n    network:\n      address: 10.0.1.7/24\n      gateway: 10.0.1.1\n      dns: [10.0.1.1]\n    ssh_authorized_keys: [\"ssh-ed25519 AAAA admin@lab\"]\n    vars: {rack: r12}\n    bmc: {address: 10.0.0.107, protocol: ipmi, credentials: lab}\n  node08:\n    mac: 52:54:00:12:34:57\n    bmc: {address: 'https://10.0.0.108', protocol: redfish, credentials: lab, verify_tls: false}\ncredentials_file: bmc.yml\n";

    #[test]
    fn reads_every_key_of_the_sketch() {
        let lab = parse(GOOD).unwrap();
        let n = &lab.nodes["node07"];
        assert_eq!(n.mac, "52:54:00:12:34:56");
        assert_eq!(n.tags, ["rack12"]);
        assert_eq!(
            n.network.as_ref().unwrap().address.to_vec(),
            ["10.0.1.7/24"]
        );
        let bmc = n.bmc.as_ref().unwrap();
        assert_eq!(
            (bmc.protocol, bmc.port, bmc.verify_tls),
            (Protocol::Ipmi, None, true)
        );
        assert_eq!(
            lab.nodes["node08"].bmc.as_ref().unwrap().protocol,
            Protocol::Redfish
        );
        assert_eq!(
            lab.credentials_file.as_deref(),
            Some(Path::new("/lab/bmc.yml"))
        );
        assert_eq!(lab.by_mac("52:54:00:12:34:57").unwrap().0, "node08");
        assert!(parse("profiles: []\n").unwrap().nodes.is_empty());
    }

    #[test]
    fn included_files_add_nodes_and_their_mistakes_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot.yml");
        let one = "nodes:\n  a:\n    mac: 52:54:00:00:00:01\ninclude: [lab.yml]\n";
        std::fs::write(
            dir.path().join("lab.yml"),
            "nodes:\n  b:\n    mac: 52:54:00:00:00:02\n",
        )
        .unwrap();
        let lab = Lab::parse(&boot, one).unwrap();
        assert_eq!(lab.nodes.keys().collect::<Vec<_>>(), ["a", "b"]);
        for (text, line, why) in [
            (
                "nodes:\n  c:\n    mac: 52:54:00:00:00:01\n",
                3,
                "node `a`'s MAC too",
            ),
            (
                "nodes:\n  a:\n    mac: 52:54:00:00:00:03\n",
                2,
                "defined before",
            ),
            ("nodes: {}\nprofiles: []\n", 2, "unknown field `profiles`"),
        ] {
            std::fs::write(dir.path().join("lab.yml"), text).unwrap();
            let err = Lab::parse(&boot, one).unwrap_err().0;
            let want = format!("{}:{line}:", dir.path().join("lab.yml").display());
            assert!(err.starts_with(&want) && err.contains(why), "{text}: {err}");
        }
        let err = Lab::parse(&boot, "include: nowhere.yml\n").unwrap_err().0;
        assert!(
            err.contains("boot.yml:1:") && err.contains("cannot read"),
            "{err}"
        );
    }

    #[test]
    fn mistakes_name_file_line_and_column() {
        for (bad, line, why) in [
            ("nodes:\n  a:\n    mac: 52:54:00:00:00:01\n    macc: x\n", 4, "unknown field `macc`"),
            ("nodes:\n  a:\n    mac: nope\n", 3, "not a MAC"),
            ("nodes:\n  a:\n    mac: 52:54:00:00:00:01\n  b:\n    mac: 52-54-00-00-00-01\n", 5, "node `a`'s MAC too"),
            ("nodes:\n  a:\n    mac: 52:54:00:00:00:01\n    network: {address: 10.0.0.1}\n", 4, "not CIDR"),
            ("nodes:\n  a:\n    mac: 52:54:00:00:00:01\n    network: {address: 10.0.0.1/33}\n", 4, "prefix"),
            ("nodes:\n  a:\n    mac: 52:54:00:00:00:01\n    bmc: {address: x, protocol: snmp, credentials: c}\n", 4, "unknown variant `snmp`"),
            ("nodes:\n  a:\n    mac: 52:54:00:00:00:01\n    bmc: {address: x}\n", 4, "missing field `credentials`"),
            ("nodes:\n  a:\n    mac: 52:54:00:00:00:01\n    network: {address: 10.0.0.1/24}\n  b:\n    mac: 52:54:00:00:00:02\n    network: {address: 10.0.0.1/16}\n", 7, "node `a`'s address too"),
            ("nodes:\n  a:\n    mac: 52:54:00:00:00:01\n  b:\n    mac: 52:54:00:00:00:02\n    hostname: a\n", 4, "hostname `a`"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(
                err.starts_with(&format!("/lab/boot.yml:{line}:")) && err.contains(why),
                "{bad}: {err}"
            );
        }
    }
}
