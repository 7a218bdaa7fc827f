use std::path::{Path, PathBuf};

use super::*;
use crate::archive::cpio::read_newc;

const LAB: &str = "vars: {site: lab1, rack: r0}\nprofiles:\n  - name: discovery\n    vars: {rack: r1, role: compute}\n  - name: storage\nnodes:\n  node07:\n    mac: \"52-54-00-12-34-56\"\n    profile: discovery\n    tags: [rack12]\n    network:\n      address: 10.0.1.7/24\n      gateway: 10.0.1.1\n      dns: [10.0.1.1]\n    ssh_authorized_keys: [\"ssh-ed25519 AAAA admin@lab\"]\n    vars: {rack: r12}\n  node08:\n    mac: 52:54:00:12:34:57\n    tags: [storage]\n";

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("boot.yml");
    std::fs::write(&path, text).unwrap();
    path
}

fn files(bytes: &[u8]) -> BTreeMap<String, (u32, String)> {
    let gz = flate2::read::GzDecoder::new(bytes);
    read_newc(gz)
        .unwrap()
        .into_iter()
        .map(|e| {
            let text = String::from_utf8_lossy(&e.data).to_string();
            (e.path.clone(), (e.mode & 0o7777, text))
        })
        .collect()
}

/// node07's overlay: its hostname and hosts line, root's keys, the vars
/// merged node over profile over server, and its networkd file.
fn node07_has_its_hostname_keys_network_and_vars(f: &BTreeMap<String, (u32, String)>) {
    assert_eq!(f["etc/hostname"].1, "node07\n");
    assert!(
        f["etc/hosts"].1.contains("10.0.1.7\tnode07"),
        "{:?}",
        f["etc/hosts"]
    );
    assert_eq!(
        f["root/.ssh/authorized_keys"],
        (0o600, "ssh-ed25519 AAAA admin@lab\n".into())
    );
    assert_eq!(f["root/.ssh"].0, 0o700);
    let node: serde_json::Value = serde_json::from_str(&f["etc/mkimage/node.json"].1).unwrap();
    assert_eq!(node["vars"]["rack"], "r12", "the node's vars win: {node}");
    assert_eq!(
        node["vars"]["role"], "compute",
        "then the profile's: {node}"
    );
    assert_eq!(node["vars"]["site"], "lab1", "then the server's: {node}");
    assert_eq!(node["profile"], "discovery");
    let net = &f["etc/systemd/network/10-mkimage-node.network"].1;
    for want in [
        "MACAddress=52:54:00:12:34:56",
        "Address=10.0.1.7/24",
        "Gateway=10.0.1.1",
        "DNS=10.0.1.1",
    ] {
        assert!(net.contains(want), "{want} not in {net}");
    }
    assert!(!f.contains_key("etc/systemd/network/10-mkimage-node-vlan.netdev"));
}

#[test]
fn a_node_gets_its_hostname_keys_network_and_vars() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), LAB);
    let config = BootConfig::load(&path).unwrap();
    let cache = Cache::default();
    let mac = "52:54:00:12:34:56";
    let art = overlay_for(&cache, &config, &path, mac, "discovery", "http://s:1")
        .unwrap()
        .unwrap();
    assert_eq!(
        art.remote.as_deref(),
        Some(format!("http://s:1/node/{mac}/{}/node.cpio.gz", art.sha256).as_str())
    );
    let bytes = cache.get(mac, &art.sha256).unwrap();
    assert!(cache.get("52:54:00:12:34:57", &art.sha256).is_none());
    assert_eq!(crate::artifact::sha256_bytes(&bytes), art.sha256);
    node07_has_its_hostname_keys_network_and_vars(&files(&bytes));
    // Deterministic: the same inputs, the same bytes.
    let again = overlay_for(&cache, &config, &path, mac, "discovery", "http://s:1")
        .unwrap()
        .unwrap();
    assert_eq!(again.sha256, art.sha256);
    // A node without network or keys: no networkd file, no authorized_keys.
    let other = overlay_for(
        &cache,
        &config,
        &path,
        "52:54:00:12:34:57",
        "storage",
        "http://s:1",
    )
    .unwrap()
    .unwrap();
    let f = files(&cache.get("52:54:00:12:34:57", &other.sha256).unwrap());
    assert_eq!(f["etc/hostname"].1, "node08\n");
    assert!(
        !f.contains_key("root/.ssh/authorized_keys") && !f.keys().any(|k| k.ends_with(".network")),
        "{:?}",
        f.keys()
    );
    // Not in the inventory: no node overlay.
    assert!(overlay_for(
        &cache,
        &config,
        &path,
        "52:54:00:00:00:99",
        "discovery",
        "http://s:1"
    )
    .unwrap()
    .is_none());
}

#[test]
fn the_inventory_joins_the_selection() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), LAB);
    let config = BootConfig::load(&path).unwrap();
    let mut storage = config.clone();
    storage.profiles[1].tags = vec!["storage".into()];
    assert_eq!(
        storage.select(Some("52:54:00:12:34:57")).unwrap().name,
        "storage",
        "node tags select"
    );
    let mut moved = config.clone();
    moved.nodes.get_mut("node07").unwrap().profile = Some("storage".into());
    assert_eq!(
        moved.select(Some("52:54:00:12:34:56")).unwrap().name,
        "storage",
        "node profile selects"
    );
}

#[test]
fn an_undefined_variable_names_node_and_template() {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("t");
    std::fs::create_dir_all(templates.join("etc")).unwrap();
    std::fs::write(
        templates.join("etc/motd"),
        "rack {{ vars.rack }} row {{ row }}\n",
    )
    .unwrap();
    let path = write(dir.path(), &format!("node_templates: t\n{LAB}"));
    let config = BootConfig::load(&path).unwrap();
    let err = overlay_for(
        &Cache::default(),
        &config,
        &path,
        "52:54:00:12:34:56",
        "discovery",
        "http://s:1",
    )
    .unwrap_err();
    assert_eq!(
        (err.node.as_str(), err.template.as_str()),
        ("node07", "/etc/motd")
    );
    assert!(err.detail.contains("undefined"), "{err}");
    let err = check::boot_config(&path).unwrap_err().0;
    assert!(
        err.starts_with(&format!(
            "{}:8:3: nodes.node07: template /etc/motd: undefined",
            path.display()
        )),
        "{err}"
    );
}

#[test]
fn check_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let ok = write(dir.path(), LAB);
    let s = check::boot_config(&ok).unwrap();
    assert_eq!((s.profiles, s.nodes), (2, 2));
    for (bad, line, why) in [
        (
            LAB.replace("52:54:00:12:34:57", "52:54:00:12:34:56"),
            18,
            "node `node07`'s MAC too",
        ),
        (
            LAB.replace("    tags: [storage]", "    hostname: node07"),
            17,
            "hostname `node07`",
        ),
        (LAB.replace("10.0.1.7/24", "10.0.1.7/40"), 12, "prefix"),
        (
            LAB.replace("    profile: discovery", "    profile: nope"),
            9,
            "no profile `nope`",
        ),
        (
            LAB.replace("    tags: [storage]", "    tagz: [storage]"),
            19,
            "unknown field `tagz`",
        ),
        (
            LAB.replace("vars: {site", "varz: {site"),
            1,
            "unknown field `varz`",
        ),
    ] {
        let path = write(dir.path(), &bad);
        let err = check::boot_config(&path).unwrap_err().0;
        let at = format!("{}:{line}:", path.display());
        assert!(
            err.starts_with(&at) && err.contains(why),
            "want {at} … {why}: {err}"
        );
    }
}

#[test]
fn a_static_network_is_the_init_s_ip_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = BootConfig::load(&write(dir.path(), LAB)).unwrap();
    let (name, node) = node_of(&config, "52:54:00:12:34:56").unwrap();
    assert_eq!(
        kernel_ip(name, node).as_deref(),
        Some("ip=10.0.1.7::10.0.1.1:255.255.255.0:node07::off:10.0.1.1:")
    );
    let (name, node) = node_of(&config, "52:54:00:12:34:57").unwrap();
    assert_eq!(kernel_ip(name, node), None, "DHCP");
}
