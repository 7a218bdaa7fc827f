//! The ISO boots: `mkimage play playbooks/all.yml`, `mkimage iso
//! --offline`, then `mkimage boot-test --iso --uefi` — UEFI firmware boots
//! the CD-ROM, the init finds the medium by its label, verifies and mounts
//! the images from it with no network, and the boot config's assertions
//! pass, with nothing waiting for a network. One boot (CI time); BIOS, the USB-disk boots and a corrupt medium
//! are in bench/iso.sh.

use crate::common;
use common::*;

#[test]
fn offline_iso_boots_under_uefi_with_no_network() {
    let _vm = crate::one_at_a_time();
    require("qemu-system-x86_64", "qemu-system-x86");
    require("xorriso", "xorriso");
    let p = play_shipped(&[]);
    let image = p.path().join("lab.iso");
    let o = mkimage()
        .current_dir(repo())
        .args(["iso", "--offline", "--dir"])
        .arg(p.out())
        .arg("--output")
        .arg(&image)
        .output()
        .unwrap();
    assert!(o.status.success(), "mkimage iso failed: {}", stderr(&o));
    let serial = p.path().join("serial.log");
    // The shipped assertions (network-online.target reached among them),
    // and: nothing waited for a network the medium does not need
    // (systemd-networkd-wait-online skipped by its condition).
    let mut config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(repo().join("vars/boot.yml")).unwrap())
            .unwrap();
    let expect = config["boot_test"]["expect"]
        .as_sequence_mut()
        .expect("vars/boot.yml has boot_test.expect");
    let wait_online = "u=systemd-networkd-wait-online.service; test \"$(systemctl show -P ConditionTimestampMonotonic $u)\" -gt 0 && systemctl show -P ConditionResult $u";
    expect.push(
        serde_yaml_ng::from_str(&format!("{{command: '{wait_online}', matches: '^no$'}}")).unwrap(),
    );
    let boot_config = p.path().join("iso-boot.yml");
    std::fs::write(&boot_config, serde_yaml_ng::to_string(&config).unwrap()).unwrap();
    let o = mkimage()
        .current_dir(repo())
        .args(["boot-test", "--uefi", "--iso"])
        .arg(&image)
        .arg("--boot-config")
        .arg(&boot_config)
        .arg("--serial-log")
        .arg(&serial)
        .output()
        .unwrap();
    // GRUB's menu puts non-UTF-8 bytes on the serial line.
    let console = String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    assert!(
        o.status.success(),
        "boot-test --iso --uefi failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    let out = stdout(&o);
    assert!(
        out.contains("PASS console matches /mkimage-discovery: ")
            && out.contains("assertions passed"),
        "{out}"
    );
    assert!(
        out.contains("PASS `u=systemd-networkd-wait-online.service;"),
        "checked, and skipped: {out}"
    );
    assert!(
        !out.contains("getent hosts"),
        "the DNS assertion needs a network: {out}"
    );
    // The images came from the medium, verified; the init never asked for a network.
    assert!(
        console.contains("mkimage-init: boot medium MKIMAGE_")
            && console.contains(" ok: /mkimage/basefs.squashfs"),
        "{}",
        vm_tail(&console)
    );
    assert!(
        !console.contains("by DHCP") && !console.contains("pick network interface"),
        "{}",
        vm_tail(&console)
    );
}

fn vm_tail(console: &str) -> String {
    mkimage::boottest::vm::tail(console, 40)
}
