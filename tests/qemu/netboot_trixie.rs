//! Debian 13 (trixie), the current stable release, end to end as a lab
//! builds it: `mkimage play playbooks/all.yml --var suite=trixie`, then one
//! `mkimage boot-test` on the e1000 NIC (so CI covers that NIC too) that
//! asserts everything the shipped boot config asserts for bookworm, plus
//! what proves the machine really runs trixie: its os-release, the kernel the
//! initrd was built from, and the e1000 driver unpacked from the kernel's
//! compressed `.ko.xz`. One boot only: a TCG netboot costs minutes of CI.

use crate::common;
use common::*;

use serde_yaml_ng::Value as Yaml;

/// The shipped playbook for trixie, built once into a fresh output dir.
fn played() -> &'static Project {
    static BUILT: std::sync::OnceLock<Project> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| play_shipped(&["suite=trixie"]))
}

fn manifest(p: &Project) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p.out().join("manifest.json")).unwrap()).unwrap()
}

/// The basefs's kernel: a trixie one (Debian 13 kernels carry `+deb13`).
fn kernel_version(p: &Project) -> String {
    let m = manifest(p);
    let version = m["artifacts"]["basefs.squashfs"]["kernel_version"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        version.contains("+deb13"),
        "the basefs kernel is not trixie's: `{version}`"
    );
    assert_eq!(
        m["artifacts"]["initrd.initrd"]["kernel_version"].as_str(),
        Some(version.as_str()),
        "initrd and basefs kernels differ"
    );
    version
}

/// vars/boot.yml with its assertions, plus the trixie-specific ones; and
/// how many assertions it declares.
fn boot_config(p: &Project, kernel: &str) -> (std::path::PathBuf, usize) {
    let text = std::fs::read_to_string(repo().join("vars/boot.yml")).unwrap();
    let mut config: Yaml = serde_yaml_ng::from_str(&text).unwrap();
    let extra: Yaml = serde_yaml_ng::from_str(&format!(
        "- command: . /etc/os-release && echo \"$VERSION_ID $VERSION_CODENAME\"\n  matches: '^13 trixie$'\n\
         - command: uname -r\n  matches: '^{}$'\n\
         - module_loaded: e1000\n\
         - command: systemctl --failed --no-legend --plain\n  matches: '^$'\n",
        regex::escape(kernel)
    ))
    .unwrap();
    let expect = config["boot_test"]["expect"]
        .as_sequence_mut()
        .expect("vars/boot.yml has boot_test.expect");
    assert!(
        expect.len() >= 5,
        "vars/boot.yml asserts too little: {expect:?}"
    );
    expect.extend(extra.as_sequence().unwrap().iter().cloned());
    let declared = expect.len();
    (
        p.write("boot.yml", &serde_yaml_ng::to_string(&config).unwrap()),
        declared,
    )
}

#[test]
fn trixie_playbook_netboots_on_e1000_and_passes_every_assertion() {
    let _vm = crate::one_at_a_time();
    let p = played();
    require("qemu-system-x86_64", "qemu-system-x86");
    let kernel = kernel_version(p);
    let (config, declared) = boot_config(p, &kernel);
    let serial = p.path().join("serial.log");
    let o = mkimage()
        .current_dir(repo())
        .args(["boot-test", "--nic", "e1000", "--dir"])
        .arg(p.out())
        .arg("--boot-config")
        .arg(&config)
        .arg("--serial-log")
        .arg(&serial)
        .output()
        .unwrap();
    let console = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(
        o.status.success(),
        "trixie boot-test failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    let out = stdout(&o);
    for pass in [
        "PASS console matches /mkimage-discovery: ",
        "PASS `lshw -quiet -short -class network`",
        "PASS `findmnt -n -o FSTYPE /` succeeds and prints /^overlay$/",
        "PASS `. /etc/os-release",
        "PASS `uname -r`",
        "PASS module e1000 is loaded",
        "PASS `systemctl --failed",
    ] {
        assert!(out.contains(pass), "no `{pass}` in:\n{out}");
    }
    assert!(!out.contains("FAIL"), "{out}");
    // Every declared assertion was judged (boot-test adds its own on top).
    let judged: usize = out
        .split_once(" assertions passed")
        .and_then(|(head, _)| head.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(
        judged >= declared,
        "{judged} assertions judged, {declared} declared:\n{out}"
    );
    // The initrd ran the trixie kernel and brought the e1000 NIC up by DHCP.
    assert!(
        console.contains(&format!("kernel {kernel}: cmdline:")),
        "the initrd did not say its kernel {kernel}"
    );
    assert!(
        console.contains("mkimage-init: dhcp: "),
        "no DHCP lease in the initrd"
    );
    // The discovery line is JSON naming this VM's NIC and its e1000 driver.
    let json = discovery_json(&console);
    let nics = json["nics"].as_array().cloned().unwrap_or_default();
    assert!(
        nics.iter()
            .any(|n| n["mac"] == "52:54:00:12:34:56" && n["driver"] == "e1000"),
        "{json}"
    );
}

#[test]
fn trixie_initrd_holds_busybox_and_the_decompressed_module_closure() {
    let _vm = crate::one_at_a_time();
    let p = played();
    let kernel = kernel_version(p);
    let listing = inspect(&p.out().join("initrd.initrd"));
    let has = |suffix: &str| lists(&listing, suffix);
    assert!(has(" init"), "no init:\n{listing}");
    // trixie's busybox-static ships usr/bin/busybox; the initrd has it at /bin.
    assert!(has(" bin/busybox"), "no bin/busybox:\n{listing}");
    assert!(
        listing
            .lines()
            .any(|l| l.ends_with(" bin/sh -> ../bin/busybox")),
        "no sh applet link:\n{listing}"
    );
    // trixie's kernel ships .ko.xz; the initrd holds them decompressed (busybox insmod).
    assert!(
        !listing.contains(".ko.xz") && !listing.contains(".ko.zst"),
        "compressed modules in the initrd:\n{listing}"
    );
    for module in [
        "e1000.ko",
        "virtio_net.ko",
        "net_failover.ko",
        "failover.ko",
        "e1000e.ko",
        "squashfs.ko",
        "overlay.ko",
        "loop.ko",
        "ixgbe.ko",
        "mdio.ko",
    ] {
        assert!(
            listing.contains(&format!("lib/modules/{kernel}/"))
                && listing.contains(&format!("/{module}")),
            "initrd lacks {module}:\n{listing}"
        );
    }
    let m = manifest(p);
    let initrd = &m["artifacts"]["initrd.initrd"];
    let order: Vec<&str> = initrd["modules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    let pos = |name: &str| {
        order
            .iter()
            .position(|x| *x == name)
            .unwrap_or_else(|| panic!("{name} not in {order:?}"))
    };
    assert!(
        pos("failover") < pos("net_failover") && pos("net_failover") < pos("virtio_net"),
        "load order {order:?}"
    );
    assert!(
        initrd["packages"]["busybox-static"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{initrd}"
    );
}
