//! The initrd boots for real: QEMU (TCG) with the fixture basefs's own
//! kernel and our initrd, user-mode networking to a busybox httpd on
//! loopback, all inside a private network namespace. Checks the good path
//! (dm-verity basefs, union root, overlay applied, systemd runs the
//! overlay's units, names resolve after switch_root through the DNS server
//! from DHCP or `ip=`) and the failure paths (wrong sha256, wrong verity
//! root hash, malformed `basefs.verity=`, unreachable server) end in the
//! fail action with the reason.

use crate::initrd_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use initrd_support::Vm;
use mkimage::archive::cpio::{write_newc_gz, Entry, EntryKind};
use mkimage::initramfs as initrd;

/// One VM at a time: the machine has two shared cores.
static VM_LOCK: Mutex<()> = Mutex::new(());

const MARKER: &str = "overlay-marker-7c1e: the overlay is in the root";
/// The name dnsmasq answers inside the test's namespace, and its address.
const DNS_NAME: &str = "boot-dns.test";
const DNS_ADDR: &str = "10.0.2.77";

/// Built once per test binary: the served dir (basefs, overlay) and the
/// kernel + initrd, with their digests.
struct Boot {
    serve: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    basefs_sha: String,
    /// `ROOT_HASH:HASH_OFFSET` of the basefs's dm-verity tree.
    verity: String,
    overlay_sha: String,
}

fn boot() -> &'static Boot {
    static BOOT: OnceLock<Boot> = OnceLock::new();
    BOOT.get_or_init(|| {
        let (_tree, image) = initrd_support::basefs_fixture();
        // A fixed scratch dir, emptied per run (a static is never dropped, so
        // a TempDir here would leak one dir per run).
        let dir = initrd_support::fixtures_root().join("initrd-boot");
        let _ = fs::remove_dir_all(&dir);
        let serve = dir.join("serve");
        let out = dir.join("out");
        fs::create_dir_all(&serve).unwrap();
        // The image the kernel came from is the one the VM boots.
        let basefs = serve.join("basefs.squashfs");
        if fs::hard_link(&image, &basefs).is_err() {
            fs::copy(&image, &basefs).expect("copy basefs");
        }
        let overlay = serve.join("overlay.cpio.gz");
        write_newc_gz(overlay_entries(), fs::File::create(&overlay).unwrap(), 6)
            .expect("write overlay");
        let entries = initrd::build(&initrd_support::options(&image, &out)).expect("initrd build");
        let sha = |p: &Path| mkimage::artifact::sha256_file(p).unwrap().1;
        Boot {
            basefs_sha: sha(&basefs),
            verity: initrd_support::fixture_verity(&image),
            overlay_sha: sha(&overlay),
            kernel: out.join(&entries[0].file),
            initrd: out.join(&entries[1].file),
            serve,
        }
    })
}

/// An overlay with a marker file and a unit that prints it at boot, and a
/// unit that prints what DNS_NAME resolves to in the booted system.
fn overlay_entries() -> Vec<Entry> {
    let unit = "[Unit]\nDescription=mkimage test overlay marker\n\n[Service]\nType=oneshot\nExecStart=/bin/cat /etc/overlay-marker\nStandardOutput=journal+console\n\n[Install]\nWantedBy=multi-user.target\n";
    let dns_unit = "[Unit]\nDescription=mkimage test name resolution\n\n[Service]\nType=oneshot\nExecStart=/usr/local/bin/dns-check\nStandardOutput=journal+console\n";
    let dns_check =
        format!("#!/bin/sh\necho \"dns-check: $(getent hosts {DNS_NAME} || echo unresolved)\"\n");
    let dir = |p: &str| Entry::new(p, EntryKind::Dir, 0o755);
    let wants = "etc/systemd/system/multi-user.target.wants";
    vec![
        dir("etc"),
        Entry::new(
            "etc/overlay-marker",
            EntryKind::Data(format!("{MARKER}\n").into_bytes()),
            0o644,
        ),
        dir("etc/systemd"),
        dir("etc/systemd/system"),
        dir("etc/systemd/system/multi-user.target.wants"),
        Entry::new(
            "etc/systemd/system/multi-user.target.wants/overlay-marker.service",
            EntryKind::Symlink("/etc/systemd/system/overlay-marker.service".into()),
            0o777,
        ),
        Entry::new(
            "etc/systemd/system/overlay-marker.service",
            EntryKind::Data(unit.as_bytes().to_vec()),
            0o644,
        ),
        Entry::new(
            format!("{wants}/dns-check.service"),
            EntryKind::Symlink("/etc/systemd/system/dns-check.service".into()),
            0o777,
        ),
        Entry::new(
            "etc/systemd/system/dns-check.service",
            EntryKind::Data(dns_unit.as_bytes().to_vec()),
            0o644,
        ),
        dir("usr"),
        dir("usr/local"),
        dir("usr/local/bin"),
        Entry::new(
            "usr/local/bin/dns-check",
            EntryKind::Data(dns_check.into_bytes()),
            0o755,
        ),
    ]
}

fn start(b: &Boot, port: u16, args: &str, name: &str) -> Vm {
    let serial = b.serve.parent().unwrap().join(format!("{name}.serial.log"));
    let onfail = if args.contains("mkimage.onfail=") {
        ""
    } else {
        "mkimage.onfail=reboot"
    };
    // no_timer_check: under a loaded host, TCG can fail the kernel's early
    // IO-APIC timer check and panic before anything of ours runs.
    let append = format!("console=ttyS0 panic=-1 no_timer_check {onfail} mkimage.retries=2 mkimage.backoff=1 rootsize=256m {args}");
    Vm::start_with_dns(
        &b.serve,
        port,
        &b.kernel,
        &b.initrd,
        &append,
        &serial,
        &format!("{DNS_NAME}={DNS_ADDR}"),
    )
}

/// Boot until the overlay's units ran; check the log has every `want`,
/// systemd started, nothing failed, and DNS_NAME resolved in the booted system.
fn boot_to_systemd(vm: &mut Vm, wants: &[&str]) {
    let ok = vm.wait_for(MARKER, Duration::from_secs(480));
    assert!(
        ok,
        "the overlay's unit never printed its marker; serial log tail:\n{}",
        vm.tail()
    );
    let resolved = vm.wait_for("dns-check: ", Duration::from_secs(120));
    let log = vm.log();
    assert!(
        resolved,
        "the name-resolution unit never ran; tail:\n{}",
        vm.tail()
    );
    for want in wants {
        assert!(
            log.contains(want),
            "serial log lacks `{want}`; tail:\n{}",
            vm.tail()
        );
    }
    let answer = format!("dns-check: {DNS_ADDR}");
    assert!(
        log.contains(&answer) && log.contains(DNS_NAME),
        "{DNS_NAME} did not resolve to {DNS_ADDR} after switch_root:\n{}",
        vm.tail()
    );
    assert!(
        log.contains("systemd[1]") || log.contains("Welcome to"),
        "systemd did not start; tail:\n{}",
        vm.tail()
    );
    assert!(
        !log.contains("FAILED at step") && !log.contains("mkimage-init: warning:"),
        "{}",
        vm.tail()
    );
}

#[test]
fn boots_verity_basefs_plus_overlay_until_systemd_with_dns_from_dhcp() {
    let _vm = crate::one_at_a_time();
    let b = boot();
    let _one = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let port = initrd_support::free_port();
    let url = format!("http://10.0.2.2:{port}");
    // Nothing receives syslog in the namespace; forwarding must not hinder the boot.
    let args = format!(
        "BASEFS={url}/basefs.squashfs basefs.sha256={} basefs.verity={} overlayfs={url}/overlay.cpio.gz overlayfs.sha256={} SYSLOGSERVER=10.0.2.2:5514",
        b.basefs_sha, b.verity, b.overlay_sha
    );
    let mut vm = start(b, port, &args, "good");
    let root = b.verity.split(':').next().unwrap_or_default();
    boot_to_systemd(
        &mut vm,
        &[
            "mkimage-init: step: load kernel modules",
            "mkimage-init: step: forward log to syslog server 10.0.2.2:5514",
            &format!("mkimage-init: dm-verity ok: {url}/basefs.squashfs (root hash {root}"),
            &format!("mkimage-init: sha256 ok: {url}/overlay.cpio.gz"),
            "mkimage-init: overlay 1 applied",
            "mkimage-init: root: overlay /newroot overlay",
            "lowerdir=/run/mkimage/rw/layer1:/run/mkimage/base",
            "mkimage-init: resolv.conf: nameserver 10.0.2.3",
            "mkimage-init: exec /sbin/init",
        ],
    );
    // With verity the whole-file sha256 is not computed (that is the point).
    assert!(
        !vm.log()
            .contains(&format!("sha256 ok: {url}/basefs.squashfs")),
        "{}",
        vm.tail()
    );
}

#[test]
fn boots_plain_sha256_basefs_with_static_ip_and_its_dns() {
    let _vm = crate::one_at_a_time();
    let b = boot();
    let _one = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let port = initrd_support::free_port();
    let url = format!("http://10.0.2.2:{port}");
    // on-imagebuilder's contract: no basefs.verity=, the sha256 is checked.
    let args = format!(
        "basefs={url}/basefs.squashfs basefs.sha256={} overlayfs={url}/overlay.cpio.gz overlayfs.sha256={} BOOTIF=01-52-54-00-12-34-56 ip=10.0.2.15::10.0.2.2:255.255.255.0:lab::off:10.0.2.3",
        b.basefs_sha, b.overlay_sha
    );
    let mut vm = start(b, port, &args, "static");
    boot_to_systemd(
        &mut vm,
        &[
            "step: configure eth0 statically (10.0.2.15)",
            &format!("mkimage-init: sha256 ok: {url}/basefs.squashfs"),
            "mkimage-init: overlay 1 applied",
            "mkimage-init: resolv.conf: nameserver 10.0.2.3",
        ],
    );
    assert!(!vm.log().contains("dm-verity ok"), "{}", vm.tail());
}

#[test]
fn wrong_verity_root_hash_is_retried_then_fails_loudly() {
    let _vm = crate::one_at_a_time();
    let b = boot();
    let _one = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let port = initrd_support::free_port();
    let offset = b.verity.split(':').nth(1).unwrap_or_default();
    let bad = "0".repeat(64);
    let url = format!("http://10.0.2.2:{port}/basefs.squashfs");
    let mut vm = start(
        b,
        port,
        &format!("basefs={url} basefs.verity={bad}:{offset}"),
        "badverity",
    );
    let exited = vm.wait_exit(Duration::from_secs(300));
    let log = vm.log();
    assert!(
        exited,
        "VM did not reboot (exit) after the failure; tail:\n{}",
        vm.tail()
    );
    let why = format!("dm-verity: the basefs does not match the root hash {bad} of basefs.verity");
    assert!(
        log.contains("(try 2 of 2)"),
        "mismatch not retried:\n{}",
        vm.tail()
    );
    assert!(
        log.contains(&format!(
            "FAILED at step 'download basefs' (url: {url}): {why}"
        )),
        "{}",
        vm.tail()
    );
    assert!(
        log.contains("mkimage.onfail=reboot: rebooting") && !log.contains("step: switch root"),
        "{}",
        vm.tail()
    );
}

/// Boot with the basefs on `port` and `args` after it, which the init must
/// refuse before it downloads anything: the VM reboots (exits) and its
/// console never shows the basefs download. Returns the console log.
fn refused_before_download(args: &str, name: &str, why: &str) -> (Vm, String) {
    let b = boot();
    let port = initrd_support::free_port();
    let mut vm = start(
        b,
        port,
        &format!("basefs=http://10.0.2.2:{port}/basefs.squashfs {args}"),
        name,
    );
    let exited = vm.wait_exit(Duration::from_secs(240));
    let log = vm.log();
    assert!(
        exited,
        "VM did not reboot (exit) after the failure; tail:\n{}",
        vm.tail()
    );
    assert!(
        !log.contains("step: download basefs"),
        "{why} must stop the boot before any download:\n{}",
        vm.tail()
    );
    (vm, log)
}

#[test]
fn malformed_verity_parameter_is_refused_with_the_fix() {
    let _vm = crate::one_at_a_time();
    let _one = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (vm, log) =
        refused_before_download("basefs.verity=xyz:12", "malformed", "a malformed parameter");
    assert!(
        log.contains("basefs.verity=xyz:12: expected ROOT_HASH:HASH_OFFSET"),
        "{}",
        vm.tail()
    );
}

#[test]
fn images_larger_than_the_ram_are_refused_before_any_download() {
    let _vm = crate::one_at_a_time();
    let _one = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (vm, log) = refused_before_download("mkimage.need=100000", "need", "the RAM check");
    let line = log
        .lines()
        .find(|l| l.contains("not enough RAM: the images need 100000 MiB, this machine has "))
        .unwrap_or_else(|| panic!("no RAM line:\n{}", vm.tail()));
    assert!(
        line.contains("MiB for them") && line.contains("more RAM"),
        "{line}"
    );
}

#[test]
fn wrong_sha256_is_retried_then_fails_loudly() {
    let _vm = crate::one_at_a_time();
    let b = boot();
    let _one = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let port = initrd_support::free_port();
    let bad = "0".repeat(64);
    let mut vm = start(
        b,
        port,
        &format!("basefs=http://10.0.2.2:{port}/basefs.squashfs basefs.sha256={bad}"),
        "badsha",
    );
    let exited = vm.wait_exit(Duration::from_secs(300));
    let log = vm.log();
    assert!(
        exited,
        "VM did not reboot (exit) after the failure; tail:\n{}",
        vm.tail()
    );
    assert!(
        log.contains(&format!(
            "sha256 mismatch: expected {bad}, got {}",
            b.basefs_sha
        )),
        "{}",
        vm.tail()
    );
    assert!(
        log.contains("download http://10.0.2.2:") && log.contains("(try 2 of 2)"),
        "mismatch not retried:\n{}",
        vm.tail()
    );
    assert!(
        log.contains(&format!("FAILED at step 'download basefs' (url: http://10.0.2.2:{port}/basefs.squashfs): sha256 mismatch")),
        "{}",
        vm.tail()
    );
    assert!(
        log.contains("mkimage.onfail=reboot: rebooting"),
        "{}",
        vm.tail()
    );
    assert!(!log.contains("step: switch root"), "{}", vm.tail());
}

#[test]
fn unreachable_server_retries_with_backoff_then_fails() {
    let _vm = crate::one_at_a_time();
    let b = boot();
    let _one = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let port = initrd_support::free_port();
    // Nothing listens on port 1 in the namespace: connection refused. The
    // NIC is picked by BOOTIF (QEMU's default MAC) and set up statically.
    let args = "basefs=http://10.0.2.2:1/basefs.squashfs BOOTIF=01-52-54-00-12-34-56 ip=10.0.2.15::10.0.2.2:255.255.255.0:lab::off";
    let mut vm = start(b, port, args, "unreachable");
    let exited = vm.wait_exit(Duration::from_secs(240));
    let log = vm.log();
    assert!(
        exited,
        "VM did not reboot (exit) after the failure; tail:\n{}",
        vm.tail()
    );
    assert!(
        log.contains("using interface eth0 (52:54:00:12:34:56)"),
        "BOOTIF not honoured:\n{}",
        vm.tail()
    );
    assert!(
        log.contains("step: configure eth0 statically (10.0.2.15)"),
        "static ip= not used:\n{}",
        vm.tail()
    );
    assert!(
        log.contains("retrying in 1s") && log.contains("(try 2 of 2)"),
        "no retry with backoff:\n{}",
        vm.tail()
    );
    assert!(
        log.contains("FAILED at step 'download basefs' (url: http://10.0.2.2:1/basefs.squashfs): download failed"),
        "{}",
        vm.tail()
    );
    assert!(
        log.contains("mkimage.onfail=reboot: rebooting"),
        "{}",
        vm.tail()
    );
}

#[test]
fn onfail_shell_leaves_a_rescue_shell_on_the_console() {
    let _vm = crate::one_at_a_time();
    let b = boot();
    let _one = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let port = initrd_support::free_port();
    let url = format!("http://10.0.2.2:{port}/no-such.squashfs");
    let mut vm = start(
        b,
        port,
        &format!("basefs={url} mkimage.onfail=shell"),
        "shell",
    );
    let started = vm.wait_for("starting a rescue shell", Duration::from_secs(240));
    assert!(started, "no rescue shell; tail:\n{}", vm.tail());
    assert!(
        vm.log().contains(&format!(
            "FAILED at step 'download basefs' (url: {url}): download failed"
        )),
        "{}",
        vm.tail()
    );
    // busybox sh's prompt for root on the console.
    let prompt = vm.wait_for("/ # ", Duration::from_secs(30));
    assert!(
        prompt,
        "no shell prompt on the console; tail:\n{}",
        vm.tail()
    );
    assert!(
        !vm.wait_exit(Duration::from_secs(3)),
        "the VM should stay in the shell, not reboot"
    );
}
