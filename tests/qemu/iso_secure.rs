//! `mkimage iso` under UEFI Secure Boot with Microsoft's keys (OVMF's
//! Secure Boot build, q35 with SMM): the ISO's EFI system image holds shim
//! (Microsoft-signed) as BOOTX64.EFI and Debian's signed GRUB CD image
//! beside it; that GRUB finds the disc by `/.disk/info`, reads the menu and
//! boots the Debian-signed kernel, which shim verifies.
//!
//! CI boots the network ISO (`mkimage iso --server URL`): it covers more —
//! shim, GRUB and the kernel from the disc, then the init's DHCP, the
//! basefs and overlays from `mkimage serve` by content, the DNS assertion
//! and the node record. The offline ISO under Secure Boot is ignored by
//! default (`bench/secure-boot.sh` runs it).

use crate::common;
use common::*;

use std::path::Path;

fn played() -> &'static Project {
    static BUILT: std::sync::OnceLock<Project> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| play_shipped(&[]))
}

fn prerequisites() {
    require("qemu-system-x86_64", "qemu-system-x86");
    require("xorriso", "xorriso");
    for (file, package) in [
        ("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "ovmf"),
        ("/usr/share/OVMF/OVMF_VARS_4M.ms.fd", "ovmf"),
        ("/usr/lib/shim/shimx64.efi.signed", "shim-signed"),
        (
            "/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed",
            "grub-efi-amd64-signed",
        ),
    ] {
        assert!(
            Path::new(file).is_file(),
            "{file} is missing: apt-get install -y {package} (scripts/install-deps)"
        );
    }
}

/// `mkimage iso` of the played build with `how` (`--offline`, or
/// `--server URL`), then `boot-test --iso --secure-boot`; its stdout and
/// the console.
fn boot_iso(p: &Project, name: &str, how: &[&str]) -> (String, String) {
    let image = p.path().join(format!("{name}.iso"));
    let o = mkimage()
        .current_dir(repo())
        .args(["iso", "--dir"])
        .arg(p.out())
        .args(how)
        .arg("--output")
        .arg(&image)
        .output()
        .unwrap();
    assert!(o.status.success(), "mkimage iso failed: {}", stderr(&o));
    let serial = p.path().join(format!("{name}.serial.log"));
    let o = mkimage()
        .current_dir(repo())
        .args(["boot-test", "--secure-boot", "--iso"])
        .arg(&image)
        .arg("--dir")
        .arg(p.out())
        .arg("--serial-log")
        .arg(&serial)
        .output()
        .unwrap();
    // GRUB's menu puts non-UTF-8 bytes on the serial line.
    let console = String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "{name}: boot-test --iso --secure-boot failed:\n{out}\n{}\nconsole:\n{}",
        stderr(&o),
        mkimage::boottest::vm::tail(&console, 40)
    );
    for pass in [
        "PASS Secure Boot enabled in the booted system",
        "PASS kernel lockdown on:",
        "PASS `findmnt -n -o FSTYPE /` succeeds and prints /^overlay$/",
        "PASS console matches /mkimage-discovery: ",
        "assertions passed",
    ] {
        assert!(out.contains(pass), "{name}: no `{pass}` in:\n{out}");
    }
    assert!(!out.contains("FAIL"), "{out}");
    // shim → Debian's signed GRUB (from the disc's menu) → the signed kernel.
    for seen in [
        "Welcome to GRUB!",
        "mkimage: boot-test",
        "EFI stub: UEFI Secure Boot is enabled.",
        "Kernel is locked down from EFI Secure Boot",
    ] {
        assert!(
            console.contains(seen),
            "{name}: no `{seen}` on the console:\n{}",
            mkimage::boottest::vm::tail(&console, 40)
        );
    }
    (out, console)
}

#[test]
fn network_iso_boots_under_secure_boot_from_the_server() {
    let _vm = crate::one_at_a_time();
    prerequisites();
    let p = played();
    // boot-test points the test copy at its own server.
    let (out, console) = boot_iso(p, "net", &["--server", "http://192.0.2.1:8080"]);
    for pass in ["PASS `getent hosts ", "shows the booted stage"] {
        assert!(out.contains(pass), "no `{pass}` in:\n{out}");
    }
    assert!(
        console.contains("basefs=http://10.0.2.2:") && !console.contains("192.0.2.1"),
        "the test copy names the test's server:\n{}",
        mkimage::boottest::vm::tail(&console, 40)
    );
}

#[test]
#[ignore = "bench/secure-boot.sh: CI boots the network ISO under Secure Boot"]
fn offline_iso_boots_under_secure_boot_with_no_network() {
    let _vm = crate::one_at_a_time();
    prerequisites();
    let p = played();
    let (out, console) = boot_iso(p, "offline", &["--offline"]);
    assert!(!out.contains("getent hosts"), "no network: {out}");
    assert!(
        console.contains("mkimage-init: boot medium MKIMAGE_")
            && console.contains(" ok: /mkimage/basefs.squashfs"),
        "{}",
        mkimage::boottest::vm::tail(&console, 40)
    );
}
