//! UEFI Secure Boot end to end, two boots (CI's budget for it): the shipped
//! playbook netbooted under OVMF's Secure Boot build with Microsoft's keys
//! through Debian's signed chain (shim → network GRUB → kernel → mkimage's
//! initrd), and the same build as a UKI signed with a site key from
//! `mkimage keys init`, its certificate enrolled in the firmware's db. Both
//! must pass every assertion of vars/boot.yml and show Secure Boot on and
//! the kernel locked down in the booted system. The UKI boot's boot config
//! also has a node entry for the VM: its node overlay, outside the signed
//! image, is taken only once its signature by the node-signing key verifies
//! (the certificate inside the UKI), and the node's hostname, authorized key
//! and `node.json` must be in the booted system. A third boot takes that UKI
//! the way a Secure Boot lab would by UEFI HTTP boot: on the lab network
//! (`--proxy-dhcp`), the firmware's PXE off, the proxyDHCP (`serve
//! --uefi-boot shim`) offers its HTTP boot client the profile's UKI that
//! `mkimage keys sign-ukis` signed and indexed. The boots run one at a time.
//!
//! What Secure Boot firmware must refuse is here too, ignored by default
//! (CI keeps to the three boots; `bench/secure-boot.sh` runs them with
//! `--include-ignored`): a UKI of the played build signed with one site key
//! while the firmware's db holds another's certificate, and Debian's
//! unsigned `ipxe.efi` (which is why Secure Boot clients get shim, never
//! iPXE). No OS boots: each ends at OVMF's "Access Denied".
//! Ignored too: the UKI through shim for a machine that trusts the site key
//! only in MOK (every assertion, and the key loaded from MokListRT), and a
//! basefs replaced on the server after its UKI was signed, refused by the
//! init with the reason on the console and in the node record.

use crate::common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use mkimage::boottest::vm::{Boot, Vm, VmSpec};
use mkimage::secureboot::{firmware, keys, uki};

/// The UKI boot's node (boot-test's MAC, a key and a var to find), put
/// before the shipped `boot_test:`.
const SIGNED_NODE: &str = r#"nodes:
  lab-node-07:
    mac: "52:54:00:12:34:56"
    ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyOfTheSignedNode000000000000000000000 admin@lab"]
    vars: {rack: r12}
"#;

/// Assertions on that node's identity, after the shipped ones (`expect:`
/// ends vars/boot.yml).
const SIGNED_NODE_EXPECT: &str = r#"    - command: hostname
      matches: '^lab-node-07$'
    - command: cat /root/.ssh/authorized_keys
      matches: 'KeyOfTheSignedNode'
    - command: cat /etc/mkimage/node.json
      matches: 'r12'
"#;

fn played() -> &'static Project {
    static BUILT: std::sync::OnceLock<Project> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| play_shipped(&[]))
}

/// One TCG boot at a time.
static BOOTS: Mutex<()> = Mutex::new(());

fn prerequisites() {
    require("qemu-system-x86_64", "qemu-system-x86");
    for (file, package) in [
        ("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "ovmf"),
        ("/usr/lib/shim/shimx64.efi.signed", "shim-signed"),
        (
            "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
            "grub-efi-amd64-signed",
        ),
        (
            "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
            "systemd-boot-efi",
        ),
        ("/usr/bin/sbsign", "sbsigntool"),
    ] {
        assert!(
            std::path::Path::new(file).is_file(),
            "{file} is missing: apt-get install -y {package} (scripts/install-deps)"
        );
    }
}

/// Run boot-test with `extra` flags; its stdout and the console.
fn boot(p: &Project, name: &str, extra: &[&str]) -> (String, String) {
    let _one = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
    let serial = p.path().join(format!("{name}.serial.log"));
    let o = mkimage()
        .current_dir(repo())
        .args(["boot-test", "--secure-boot", "--dir"])
        .arg(p.out())
        .arg("--serial-log")
        .arg(&serial)
        .args(extra)
        .output()
        .unwrap();
    let console = std::fs::read_to_string(&serial).unwrap_or_default();
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "{name} boot-test failed:\n{out}\n{}",
        stderr(&o)
    );
    for pass in [
        "PASS Secure Boot enabled in the booted system",
        "PASS kernel lockdown on:",
        "PASS `findmnt -n -o FSTYPE /` succeeds and prints /^overlay$/",
        "shows the booted stage",
    ] {
        assert!(out.contains(pass), "{name}: no `{pass}` in:\n{out}");
    }
    assert!(!out.contains("FAIL"), "{out}");
    (out, console)
}

#[test]
fn factory_keys_boot_through_shim_and_debians_signed_grub_and_kernel() {
    let _vm = crate::one_at_a_time();
    prerequisites();
    let p = played();
    let (_, console) = boot(p, "factory", &[]);
    for seen in [
        "Welcome to GRUB!",
        "mkimage: booting profile",
        "EFI stub: UEFI Secure Boot is enabled.",
        "Kernel is locked down from EFI Secure Boot",
    ] {
        assert!(console.contains(seen), "no `{seen}` on the console");
    }
}

/// `keys init` into `keys`: the key 0600; refused into the served dir and
/// over a key that exists.
fn keys_init_checked(p: &Project, keys: &Path) {
    let o = mkimage()
        .arg("keys")
        .arg("init")
        .arg("--dir")
        .arg(keys)
        .output()
        .unwrap();
    assert!(o.status.success(), "keys init: {}", stderr(&o));
    let mode = std::fs::metadata(keys.join("db.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Not into the served dir, and never twice over a key machines trust.
    let o = mkimage()
        .args(["keys", "init", "--dir"])
        .arg(p.out().join("keys"))
        .output()
        .unwrap();
    assert!(
        !o.status.success() && stderr(&o).contains("served dir"),
        "{}",
        stderr(&o)
    );
    let o = mkimage()
        .args(["keys", "init", "--dir"])
        .arg(keys)
        .output()
        .unwrap();
    assert!(!o.status.success() && stderr(&o).contains("already exists"));
}

/// vars/boot.yml with a node entry for the VM (boot-test's MAC) and
/// assertions on its identity, written beside `keys`.
fn boot_config_with_the_node(keys: &Path) -> PathBuf {
    let shipped = std::fs::read_to_string(repo().join("vars/boot.yml")).unwrap();
    let at = shipped.find("\nboot_test:").unwrap();
    assert!(
        shipped.trim_end().ends_with("module_loaded: overlay"),
        "vars/boot.yml no longer ends with boot_test.expect"
    );
    let config = keys.with_file_name("boot-node.yml");
    std::fs::write(
        &config,
        format!(
            "{}\n{SIGNED_NODE}{}\n{SIGNED_NODE_EXPECT}",
            &shipped[..at],
            shipped[at..].trim_end()
        ),
    )
    .unwrap();
    config
}

#[test]
fn site_signed_uki_boots_with_the_site_key_in_db() {
    let _vm = crate::one_at_a_time();
    prerequisites();
    let p = played();
    let keys = p.path().join("site-keys");
    keys_init_checked(p, &keys);
    let config = boot_config_with_the_node(&keys);
    let (out, console) = boot(
        p,
        "uki",
        &[
            "--keys",
            keys.to_str().unwrap(),
            "--boot-config",
            config.to_str().unwrap(),
        ],
    );
    for pass in [
        "PASS `hostname` succeeds and prints /^lab-node-07$/",
        "PASS `cat /root/.ssh/authorized_keys` succeeds and prints /KeyOfTheSignedNode/",
        "PASS `cat /etc/mkimage/node.json` succeeds and prints /r12/",
    ] {
        assert!(out.contains(pass), "no `{pass}` in:\n{out}");
    }
    assert!(
        console
            .contains("signature verified against the node-signing certificate in the signed UKI"),
        "the init did not check the node overlay's signature"
    );
    // No GRUB: the firmware started the UKI itself, and its command line
    // (signed with it) carried the basefs's verity root hash.
    assert!(!console.contains("Welcome to GRUB!"));
    assert!(console.contains("EFI stub: UEFI Secure Boot is enabled."));
    assert!(
        console.contains("basefs.verity="),
        "the UKI's command line has no verity root hash"
    );
    assert!(
        !console.contains("BOOTIF="),
        "a machine's BOOTIF went into the signed UKI"
    );
}

#[test]
fn site_signed_uki_by_uefi_http_boot_from_the_proxy_dhcps_offer() {
    let _vm = crate::one_at_a_time();
    prerequisites();
    require("dnsmasq", "dnsmasq-base");
    let p = played();
    let keys = p.path().join("http-boot-keys");
    keys::init(&keys).unwrap();
    let (out, console) = boot(
        p,
        "uki-http",
        &[
            "--keys",
            keys.to_str().unwrap(),
            "--proxy-dhcp",
            "--http-boot",
        ],
    );
    // The firmware's PXE was off: its first network boot was HTTP boot,
    // and the URI it got is the proxy's offer, a UKI by content.
    assert!(console.contains("Start HTTP Boot over IPv4"), "{console}");
    assert!(!console.contains("Start PXE over IPv4"));
    let uri = console
        .lines()
        .find_map(|l| l.trim().strip_prefix("URI: "))
        .unwrap_or_else(|| panic!("the firmware printed no boot URI:\n{console}"));
    let index = mkimage::serve::ukis::Index::load(&p.out()).unwrap();
    let entry = &index.profiles["discovery-debug"];
    assert!(
        uri.ends_with(&format!("/sha256/{}/{}", entry.sha256, entry.name)),
        "{uri} is not the indexed UKI of the VM's profile"
    );
    assert!(console.contains("EFI stub: UEFI Secure Boot is enabled."));
    assert!(console.contains("basefs.verity="));
    assert!(!console.contains("BOOTIF="));
    for pass in [
        "PASS proxyDHCP offered the firmware's UEFI HTTP boot client its profile's signed UKI",
        "PASS the firmware fetched the UKI over HTTP",
        "PASS nothing went over TFTP",
        "holds its inventory",
    ] {
        assert!(out.contains(pass), "no `{pass}` in:\n{out}");
    }
}

#[test]
#[ignore = "bench/secure-boot.sh runs it (CI keeps to two Secure Boot boots)"]
fn site_signed_uki_boots_through_shim_with_the_site_key_only_in_mok() {
    prerequisites();
    let p = played();
    let keys = p.path().join("mok-keys");
    keys::init(&keys).unwrap();
    let (_, console) = boot(p, "uki-mok", &["--keys", keys.to_str().unwrap(), "--mok"]);
    // The firmware ran shim (Microsoft's CA in db); shim verified the UKI
    // against MokList: the site certificate is in MokListRT, not in db.
    assert!(console.contains("NBP filename is uki/discovery-debug/shimx64.efi"));
    assert!(!console.contains("Welcome to GRUB!"));
    assert!(console.contains("EFI stub: UEFI Secure Boot is enabled."));
    let site = "Loaded X.509 cert 'mkimage site Secure Boot key";
    let loaded: Vec<&str> = console.lines().collect();
    let at = loaded
        .iter()
        .position(|l| l.contains(site))
        .unwrap_or_else(|| panic!("the kernel loaded no site certificate:\n{console}"));
    assert!(
        loaded[..at]
            .iter()
            .rev()
            .find(|l| l.contains("integrity: Loading X.509 certificate: UEFI:"))
            .is_some_and(|l| l.contains("UEFI:MokListRT")),
        "the site certificate came from somewhere else than MokListRT"
    );
    assert!(console.contains("basefs.verity="));
}

#[test]
#[ignore = "bench/secure-boot.sh runs it (CI keeps to two Secure Boot boots)"]
fn a_basefs_replaced_after_signing_is_refused_by_the_init() {
    prerequisites();
    let p = played();
    // A copy of the build (cp -a keeps the content store's hard links),
    // whose basefs then changes on the server: manifest.json, and so the
    // UKI's signed command line, still name the genuine one.
    let tampered = Project::new();
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(p.out())
        .arg(tampered.out())
        .status()
        .unwrap();
    assert!(copy.success());
    let keys = tampered.path().join("keys");
    keys::init(&keys).unwrap();
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        // One byte of block 0, rewritten in place (the content store's
        // object is the same inode): what the server now sends.
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(tampered.out().join("basefs.squashfs"))
            .unwrap();
        let mut byte = [0u8];
        f.seek(SeekFrom::Start(1000)).unwrap();
        f.read_exact(&mut byte).unwrap();
        f.seek(SeekFrom::Start(1000)).unwrap();
        f.write_all(&[byte[0] ^ 0xff]).unwrap();
    }
    let serial = tampered.path().join("serial.log");
    let o = {
        let _one = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
        mkimage()
            .current_dir(repo())
            .args(["boot-test", "--secure-boot", "--timeout", "500", "--dir"])
            .arg(tampered.out())
            .arg("--keys")
            .arg(&keys)
            .arg("--serial-log")
            .arg(&serial)
            .output()
            .unwrap()
    };
    let console = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(
        !o.status.success(),
        "boot-test passed with a replaced basefs:\n{}",
        stdout(&o)
    );
    assert!(console.contains("EFI stub: UEFI Secure Boot is enabled."));
    let why = "dm-verity: the basefs does not match the root hash";
    assert!(console.contains(why), "no `{why}` on the console");
    assert!(
        !console.contains("login:"),
        "the system came up on a replaced basefs"
    );
    let o = mkimage()
        .args(["nodes", "--json", "--dir"])
        .arg(tampered.out())
        .output()
        .unwrap();
    let nodes: serde_json::Value =
        serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    let vm = &nodes["nodes"][0];
    assert_eq!(vm["stage"], "failed", "{nodes}");
    let failure = vm["last_failure"].as_str().unwrap_or_default();
    assert!(failure.contains(why), "{nodes}");
    println!("refused: {failure}");
}

/// Boot `nbp` from QEMU's TFTP server under Secure Boot (with `enroll` in
/// db), in a network namespace of its own; the console once the firmware
/// refused it, or what it showed instead.
fn firmware_refuses(work: &Path, nbp: &Path, enroll: Option<&Path>) -> String {
    let tftp = work.join("tftp");
    std::fs::create_dir_all(&tftp).unwrap();
    std::fs::copy(nbp, tftp.join("boot.efi")).unwrap();
    let serial = work.join("serial.log");
    let mut spec = VmSpec::netboot(&serial, "boot.efi");
    spec.uefi = true;
    spec.secure_boot = Some(firmware::vars(work, enroll).unwrap());
    spec.tftp = Some(tftp);
    spec.boot = Boot::Network { rom: false };
    spec.memory_mib = 512;
    spec.wrapper = ["unshare", "-n"].map(Into::into).to_vec();
    let _one = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
    let mut vm = Vm::start(&spec).unwrap();
    let refused = vm.wait_for("Access Denied", Duration::from_secs(600));
    let console = vm.log();
    assert!(
        refused,
        "the firmware did not refuse {}:\n{}",
        nbp.display(),
        vm.tail(30)
    );
    assert!(
        !console.contains("EFI stub:") && !console.contains("Linux version"),
        "a kernel started"
    );
    console
}

#[test]
#[ignore = "bench/secure-boot.sh runs it (CI keeps to two Secure Boot boots)"]
fn a_uki_signed_by_another_key_is_refused_by_the_firmware() {
    let _vm = crate::one_at_a_time();
    require_root();
    let p = played();
    let keys = tempfile::tempdir().unwrap();
    let signer = keys::init(&keys.path().join("signer")).unwrap();
    let enrolled = keys::init(&keys.path().join("enrolled")).unwrap();
    let out = keys.path().join("uki.efi");
    uki::build(
        &uki::Parts {
            kernel: &p.out().join("initrd.vmlinuz"),
            initrd: &p.out().join("initrd.initrd"),
            cmdline: "console=ttyS0,115200",
            name: "refusal",
            node_signer: None,
        },
        &signer,
        &out,
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let console = firmware_refuses(work.path(), &out, Some(&enrolled.cert));
    assert!(
        console.contains("boot.efi"),
        "the firmware never fetched the UKI"
    );
}

#[test]
#[ignore = "bench/secure-boot.sh runs it (CI keeps to two Secure Boot boots)"]
fn unsigned_ipxe_efi_is_refused_under_secure_boot() {
    let _vm = crate::one_at_a_time();
    require_root();
    let ipxe = Path::new("/usr/lib/ipxe/ipxe.efi");
    assert!(
        ipxe.is_file(),
        "{} is missing: apt-get install -y ipxe",
        ipxe.display()
    );
    let work = tempfile::tempdir().unwrap();
    firmware_refuses(work.path(), ipxe, None);
}
