//! The generated boot script run by real iPXE: QEMU's iPXE ROM netboots
//! from `mkimage serve` (user-mode networking, all inside a private network
//! namespace), runs /boot.ipxe, fetches kernel and initrd by their versioned
//! URLs and boots the kernel. The "kernel" is Debian's ipxe.lkrn (a bzImage),
//! so no image build is needed; it echoes its command line back, which
//! shows that BOOTIF was filled in.

mod serve_support;

use std::process::Command;

use serve_support::{pseudo_random, require, sha256_hex};

#[test]
fn real_ipxe_runs_the_boot_script() {
    require("qemu-system-x86_64", "qemu-system-x86");
    require("unshare", "util-linux");
    require("ip", "iproute2");
    let lkrn = std::path::Path::new("/boot/ipxe.lkrn");
    assert!(lkrn.is_file(), "{} is missing: apt-get install -y ipxe", lkrn.display());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    let mut artifacts = serde_json::Map::new();
    for (file, kind, data) in [
        ("vmlinuz", "kernel", std::fs::read(lkrn).unwrap()),
        ("initrd.img", "initrd", pseudo_random(100_000, 1)),
        ("base.squashfs", "basefs", pseudo_random(300_000, 2)),
        ("discovery.cpio.gz", "overlay", pseudo_random(1000, 3)),
    ] {
        std::fs::write(dir.join(file), &data).unwrap();
        artifacts.insert(
            file.into(),
            serde_json::json!({"kind": kind, "name": kind, "file": file, "size": data.len(), "sha256": sha256_hex(&data), "build_time": 0, "tool_version": "test"}),
        );
    }
    std::fs::write(dir.join("manifest.json"), serde_json::json!({ "artifacts": artifacts }).to_string()).unwrap();

    let script = format!(
        r#"set -e
ip link set lo up
cd "{t}"   # no vars/boot.yml here: the default profile comes from the manifest
"{bin}" serve --dir "{dir}" --http 127.0.0.1:0 --tftp off > "{t}/srv.out" 2> "{t}/srv.err" &
server=$!
trap 'kill $server' EXIT
for _ in $(seq 50); do grep -q 'listening http' "{t}/srv.out" && break; sleep 0.1; done
port=$(sed -n 's/^listening http 127.0.0.1://p' "{t}/srv.out")
timeout 90 qemu-system-x86_64 -accel tcg -m 256 -nographic -no-reboot \
  -netdev user,id=n0,bootfile=http://10.0.2.2:$port/boot.ipxe -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56 -boot n < /dev/null > "{t}/console.log" 2>&1 &
qemu=$!
for _ in $(seq 180); do grep -qa 'BOOTIF=' "{t}/console.log" 2>/dev/null && break; sleep 0.5; done
kill $qemu || true
wait $qemu || true
"#,
        bin = env!("CARGO_BIN_EXE_mkimage"),
        dir = dir.display(),
        t = tmp.path().display()
    );
    let status = Command::new("unshare").args(["-n", "bash", "-c", &script]).status().unwrap();
    assert!(status.success(), "the netns script failed: {status:?}");
    let log = std::fs::read_to_string(tmp.path().join("srv.err")).unwrap();
    let console = String::from_utf8_lossy(&std::fs::read(tmp.path().join("console.log")).unwrap_or_default()).into_owned();
    let fetched = |path: &str| log.lines().any(|l| l.contains(&format!("path={path}")) && l.contains("status=200"));
    assert!(fetched("/boot.ipxe"), "iPXE fetched the script:\n{log}\n{console}");
    assert!(console.contains("mkimage: booting profile default"), "the script ran:\n{console}");
    for file in ["vmlinuz", "initrd.img"] {
        let sha = artifacts[file]["sha256"].as_str().unwrap();
        assert!(fetched(&format!("/{file}?sha256={sha}")), "iPXE fetched {file} by its versioned URL:\n{log}");
    }
    // The booted "kernel" (iPXE) runs its command line: BOOTIF was expanded.
    assert!(console.contains("BOOTIF=01-52-54-00-12-34-56"), "kernel command line:\n{console}");
}
