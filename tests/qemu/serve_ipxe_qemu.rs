//! The generated scripts run by real iPXE: QEMU's iPXE ROM netboots from
//! `mkimage serve` (user-mode networking, all inside a private network
//! namespace) before anything is built, so it gets the retry script, prints
//! why on its console and asks again; once the artifacts are published it
//! gets the boot script, fetches kernel and initrd by their content-addressed
//! URLs and boots the kernel. The "kernel" is Debian's ipxe.lkrn (a bzImage),
//! so no image build is needed; it echoes its command line back, which
//! shows that BOOTIF was filled in.

use crate::serve_support;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serve_support::{build, pseudo_random, require};

/// In a private network namespace: `mkimage serve --dir DIR` on
/// 127.0.0.1:8080 (nothing else listens there) with `serve_args`, and
/// QEMU's iPXE ROM netbooting from it until the booted kernel (ipxe.lkrn)
/// prints its command line. Console in `t/console.log`, server log in
/// `t/srv.err`.
fn ipxe_in_netns(t: &Path, dir: &Path, serve_args: &str) -> Child {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (a private network namespace): run the suite as root"
    );
    require("qemu-system-x86_64", "qemu-system-x86");
    require("unshare", "util-linux");
    require("ip", "iproute2");
    let script = format!(
        r#"set -e
ip link set lo up
cd "{t}"
"{bin}" serve --dir "{dir}" --http 127.0.0.1:{PORT} --tftp off {serve_args} > "{t}/srv.out" 2> "{t}/srv.err" &
server=$!
trap 'kill $server' EXIT
for _ in $(seq 50); do grep -q 'listening http' "{t}/srv.out" && break; sleep 0.1; done
timeout 150 qemu-system-x86_64 -accel tcg -m 256 -nographic -no-reboot \
  -netdev user,id=n0,bootfile=http://10.0.2.2:{PORT}/boot.ipxe -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56 -boot n < /dev/null > "{t}/console.log" 2>&1 &
qemu=$!
for _ in $(seq 300); do grep -qa 'BOOTIF=' "{t}/console.log" 2>/dev/null && break; sleep 0.5; done
kill $qemu || true
wait $qemu || true
"#,
        bin = env!("CARGO_BIN_EXE_mkimage"),
        dir = dir.display(),
        t = t.display()
    );
    Command::new("unshare")
        .args(["-n", "bash", "-c", &script])
        .spawn()
        .unwrap()
}

/// The port `mkimage serve` listens on inside the namespace.
const PORT: u16 = 8080;

/// Debian's ipxe.lkrn: a bzImage that echoes its command line.
fn lkrn() -> Vec<u8> {
    let lkrn = Path::new("/boot/ipxe.lkrn");
    assert!(
        lkrn.is_file(),
        "{} is missing: apt-get install -y ipxe",
        lkrn.display()
    );
    std::fs::read(lkrn).unwrap()
}

/// iPXE wraps its console at 80 columns: read it with the wraps undone.
fn console_of(t: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(t.join("console.log")).unwrap_or_default())
        .replace("\r\n", "")
}

#[test]
fn real_ipxe_retries_until_built_then_runs_the_boot_script() {
    let _vm = crate::one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();

    let mut netns = ipxe_in_netns(tmp.path(), &dir, "--retry-delay 3");
    let console = || console_of(tmp.path());
    // Nothing is built: the machine is told why and asks again.
    let deadline = Instant::now() + Duration::from_secs(120);
    // Wait for the script's last line: the console arrives a few bytes at a time.
    while !console().contains("/boot.ipxe again in 3 seconds") {
        assert!(
            Instant::now() < deadline && netns.try_wait().unwrap().is_none(),
            "iPXE never showed the retry script:\n{}",
            console()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(console().contains("mkimage: cannot boot this machine yet: profile `default`: manifest.json has no kernel; build one first"), "{}", console());
    // The build finishes while the machine waits.
    let mut shas = std::collections::HashMap::new();
    for (file, kind, data) in [
        ("vmlinuz", "kernel", lkrn()),
        ("initrd.img", "initrd", pseudo_random(100_000, 1)),
        ("base.squashfs", "basefs", pseudo_random(300_000, 2)),
        ("discovery.cpio.gz", "overlay", pseudo_random(1000, 3)),
    ] {
        shas.insert(file, build(&dir, kind, kind, file, &data, &[]).sha256);
    }
    let status = netns.wait().unwrap();
    assert!(status.success(), "the netns script failed: {status:?}");
    let log = std::fs::read_to_string(tmp.path().join("srv.err")).unwrap();
    let console = console();
    let fetched = |path: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("path={path} ")) && l.contains("status=200"))
            .count()
    };
    assert!(
        fetched("/boot.ipxe") >= 2,
        "iPXE fetched the retry script, then the boot script:\n{log}\n{console}"
    );
    assert!(
        log.contains("no boot script yet, the machine will retry"),
        "{log}"
    );
    assert!(
        console.contains("mkimage: booting profile default"),
        "the script ran:\n{console}"
    );
    for file in ["vmlinuz", "initrd.img"] {
        assert!(
            fetched(&format!("/sha256/{}/{file}", shas[file])) >= 1,
            "iPXE fetched {file} by its content address:\n{log}"
        );
    }
    assert!(
        !console.contains("discovery.cpio.gz"),
        "no overlay without a boot config:\n{console}"
    );
    // The booted "kernel" (iPXE) runs its command line: BOOTIF was expanded.
    assert!(
        console.contains("BOOTIF=01-52-54-00-12-34-56"),
        "kernel command line:\n{console}"
    );
}

/// The boot config lists a dead server first: iPXE's kernel fetch from it
/// fails, the script says so on the console and boots from the next one.
#[test]
fn real_ipxe_falls_back_to_the_next_server_when_one_fails() {
    let _vm = crate::one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    let kernel = build(&dir, "kernel", "kernel", "vmlinuz", &lkrn(), &[]);
    let initrd = build(
        &dir,
        "initrd",
        "initrd",
        "initrd.img",
        &pseudo_random(100_000, 1),
        &[],
    );
    build(
        &dir,
        "basefs",
        "basefs",
        "base.squashfs",
        &pseudo_random(300_000, 2),
        &[],
    );
    // Nothing listens on 8081 in the namespace: connection refused.
    let (dead, live) = ("http://10.0.2.2:8081", format!("http://10.0.2.2:{PORT}"));
    let yml = tmp.path().join("boot.yml");
    std::fs::write(
        &yml,
        format!("servers: [{dead}, {live}]\nprofiles:\n  - name: p\n"),
    )
    .unwrap();
    let status = ipxe_in_netns(
        tmp.path(),
        &dir,
        &format!("--boot-config {}", yml.display()),
    )
    .wait()
    .unwrap();
    assert!(status.success(), "the netns script failed: {status:?}");
    let console = console_of(tmp.path());
    let log = std::fs::read_to_string(tmp.path().join("srv.err")).unwrap();
    assert!(
        console.contains(&format!("mkimage: booting profile p from {dead}")),
        "{console}"
    );
    assert!(
        console.contains(&format!(
            "mkimage: server {dead} failed, falling back to {live}"
        )),
        "the fallback was announced:\n{console}"
    );
    for (sha, name) in [(&kernel.sha256, "vmlinuz"), (&initrd.sha256, "initrd.img")] {
        assert!(
            console.contains(&format!("{live}/sha256/{sha}/{name}... ok")),
            "iPXE took {name} from the live server:\n{console}"
        );
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("path=/sha256/{sha}/{name} "))
                    && l.contains("status=200")),
            "the live server served {name}:\n{log}"
        );
    }
    assert!(
        console.contains("BOOTIF=01-52-54-00-12-34-56"),
        "the kernel booted:\n{console}"
    );
}
