//! Per-node identity in booted machines: the shipped playbook, then two
//! `mkimage boot-test` runs, two VMs with different MACs against one boot
//! config whose inventory names both. Each must come up with its own
//! hostname, authorized key and `node.json` vars (asserted inside the guest),
//! and the other node's values must not be there.

use crate::common;
use common::*;

const NODES: &str = r#"
vars: {site: lab1}
nodes:
  lab-node-07:
    mac: "52:54:00:e2:e0:07"
    ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyOfNodeSeven0000000000000000000000000 admin@lab"]
    vars: {rack: r12}
  lab-node-08:
    mac: "52:54:00:e2:e0:08"
    hostname: db08
    ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyOfNodeEight000000000000000000000000 admin@lab"]
    vars: {rack: r14}
"#;

/// The shipped boot config without its `boot_test:`, with `NODES` and a
/// `boot_test:` asserting one node's identity.
fn boot_config(p: &Project, file: &str, hostname: &str, key: &str, rack: &str) -> String {
    let shipped = std::fs::read_to_string(repo().join("vars/boot.yml")).unwrap();
    let head = &shipped[..shipped.find("\nboot_test:").unwrap()];
    let test = format!(
        "boot_test:\n  profile: discovery\n  timeout: 900\n  memory: 1536\n  expect:\n    - command: hostname\n      matches: '^{hostname}$'\n    - command: cat /root/.ssh/authorized_keys\n      matches: '{key}'\n    - command: cat /etc/mkimage/node.json\n      matches: '\"rack\": \"{rack}\"'\n    - command: cat /etc/mkimage/node.json\n      matches: '\"site\": \"lab1\"'\n    - console: 'mkimage-discovery: .*\"hostname\":\"{hostname}\"'\n"
    );
    p.write(file, &format!("{head}\n{NODES}{test}"))
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn two_vms_each_boot_with_their_own_identity() {
    let _vm = crate::one_at_a_time();
    require("qemu-system-x86_64", "qemu-system-x86");
    let p = play_shipped(&[]);
    for (mac, hostname, key, rack) in [
        ("52:54:00:e2:e0:07", "lab-node-07", "KeyOfNodeSeven", "r12"),
        ("52:54:00:e2:e0:08", "db08", "KeyOfNodeEight", "r14"),
    ] {
        let config = boot_config(&p, &format!("vars/{hostname}.yml"), hostname, key, rack);
        let check = mkimage()
            .args(["check", "--boot-config", &config])
            .output()
            .unwrap();
        assert!(check.status.success(), "{}", stderr(&check));
        let o = mkimage()
            .current_dir(repo())
            .args(["boot-test", "--dir"])
            .arg(p.out())
            .args(["--boot-config", &config, "--mac", mac])
            .output()
            .unwrap();
        let out = stdout(&o);
        assert!(
            o.status.success(),
            "boot-test of {hostname} ({mac}) failed:\n{out}\n{}",
            stderr(&o)
        );
        for want in [
            format!("PASS `hostname` succeeds and prints /^{hostname}$/"),
            format!("PASS `cat /root/.ssh/authorized_keys` succeeds and prints /{key}/"),
        ] {
            assert!(out.contains(&want), "{want} not in:\n{out}");
        }
    }
}
