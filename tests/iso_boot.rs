//! The ISO boots: `mkimage play playbooks/all.yml`, `mkimage iso
//! --offline`, then `mkimage boot-test --iso --uefi` — UEFI firmware boots
//! the CD-ROM, the init finds the medium by its label, verifies and mounts
//! the images from it with no network, and the boot config's assertions
//! pass. One boot (CI time); BIOS, the USB-disk boots and a corrupt medium
//! are in bench/iso.sh.

mod common;
use common::*;

#[test]
fn offline_iso_boots_under_uefi_with_no_network() {
    require("qemu-system-x86_64", "qemu-system-x86");
    require("xorriso", "xorriso");
    let p = play_shipped(&[]);
    let image = p.path().join("lab.iso");
    let o = mkimage().current_dir(repo()).args(["iso", "--offline", "--dir"]).arg(p.out()).arg("--output").arg(&image).output().unwrap();
    assert!(o.status.success(), "mkimage iso failed: {}", stderr(&o));
    let serial = p.path().join("serial.log");
    let o = mkimage().current_dir(repo()).args(["boot-test", "--uefi", "--iso"]).arg(&image).arg("--serial-log").arg(&serial).output().unwrap();
    // GRUB's menu puts non-UTF-8 bytes on the serial line.
    let console = String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    assert!(o.status.success(), "boot-test --iso --uefi failed:\n{}\n{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("PASS console matches /mkimage-discovery: ") && out.contains("assertions passed"), "{out}");
    assert!(!out.contains("getent hosts"), "the DNS assertion needs a network: {out}");
    // The images came from the medium, verified; the init never asked for a network.
    assert!(console.contains("mkimage-init: boot medium MKIMAGE_") && console.contains(" ok: /mkimage/basefs.squashfs"), "{}", vm_tail(&console));
    assert!(!console.contains("by DHCP") && !console.contains("pick network interface"), "{}", vm_tail(&console));
}

fn vm_tail(console: &str) -> String {
    mkimage::boottest::vm::tail(console, 40)
}
