//! `mkimage serve` over TFTP with real clients (curl, tftp-hpa) and a raw
//! UDP client: default and negotiated blksize, tsize, block-number rollover,
//! errors, traversal, garbage.

use crate::serve_support;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serve_support::{pseudo_random, require, sha256_hex, Server};

fn curl_tftp(addr: SocketAddr, name: &str, extra: &[&str]) -> (i32, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "60"])
        .args(extra)
        .arg(format!("tftp://{addr}/{name}"))
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), out.stdout)
}

/// One raw request; returns the first reply and where it came from.
fn raw(addr: SocketAddr, packet: &[u8]) -> (Vec<u8>, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(packet, addr).unwrap();
    let mut buf = [0u8; 70000];
    let (n, from) = s.recv_from(&mut buf).expect("a reply");
    (buf[..n].to_vec(), from)
}

fn rrq(name: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut p = vec![0, 1];
    for s in [name, "octet"]
        .into_iter()
        .chain(options.iter().flat_map(|(k, v)| [*k, *v]))
    {
        p.extend_from_slice(s.as_bytes());
        p.push(0);
    }
    p
}

fn error_code(reply: &[u8]) -> Option<u16> {
    (reply.len() >= 4 && reply[..2] == [0, 5]).then(|| u16::from_be_bytes([reply[2], reply[3]]))
}

#[test]
fn tftp_transfers_options_and_errors() {
    require("curl", "curl");
    require("tftp", "tftp-hpa");
    let ipxe = Path::new("/usr/lib/ipxe/undionly.kpxe");
    assert!(
        ipxe.is_file(),
        "{} is missing: apt-get install -y ipxe",
        ipxe.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    let small = pseudo_random(100_000, 7);
    std::fs::write(dir.join("small.bin"), &small).unwrap();
    // 70,000 blocks of 512 bytes: the 16-bit block number wraps.
    let big = pseudo_random(512 * 70_000 + 100, 8);
    std::fs::write(dir.join("big.bin"), &big).unwrap();
    std::fs::write(tmp.path().join("secret"), b"secret").unwrap();
    std::fs::write(dir.join(".hidden"), b"hidden").unwrap();
    let server = Server::start(tmp.path(), &dir, &[]);
    let t = server.tftp.expect("tftp address");
    block_sizes_and_the_ipxe_binary(t, &small, ipxe);
    the_block_number_rolls_over_with_tftp_hpa(t, &tmp.path().join("got.bin"), &big);
    the_oack_names_the_negotiated_and_the_file_size(t);
    missing_traversal_hidden_and_writes_are_refused(t);
    garbage_is_ignored_and_the_server_keeps_serving(t, &small);
    failed_transfers_are_counted(&server);
}

/// Default block size, negotiated ones, and the iPXE binary for chain-loading.
fn block_sizes_and_the_ipxe_binary(t: SocketAddr, small: &[u8], ipxe: &Path) {
    let small = (0, small.to_vec());
    assert_eq!(curl_tftp(t, "small.bin", &["--tftp-no-options"]), small);
    assert_eq!(curl_tftp(t, "small.bin", &[]), small);
    assert_eq!(
        curl_tftp(t, "small.bin", &["--tftp-blksize", "1432"]),
        small
    );
    assert_eq!(
        curl_tftp(t, "small.bin", &["--tftp-blksize", "8192"]),
        small
    );
    assert_eq!(
        curl_tftp(t, "undionly.kpxe", &[]),
        (0, std::fs::read(ipxe).unwrap())
    );
}

fn the_block_number_rolls_over_with_tftp_hpa(t: SocketAddr, got: &Path, big: &[u8]) {
    let status = Command::new("tftp")
        .args([
            "-m",
            "binary",
            "127.0.0.1",
            &t.port().to_string(),
            "-c",
            "get",
            "big.bin",
        ])
        .arg(got)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(sha256_hex(&std::fs::read(got).unwrap()), sha256_hex(big));
}

fn the_oack_names_the_negotiated_and_the_file_size(t: SocketAddr) {
    let (reply, _) = raw(
        t,
        &rrq(
            "small.bin",
            &[("blksize", "1024"), ("tsize", "0"), ("timeout", "2")],
        ),
    );
    let mut want = vec![0u8, 6];
    for s in ["blksize", "1024", "tsize", "100000", "timeout", "2"] {
        want.extend_from_slice(s.as_bytes());
        want.push(0);
    }
    assert_eq!(reply, want);
}

/// Errors: missing file, traversal, hidden files, writes.
fn missing_traversal_hidden_and_writes_are_refused(t: SocketAddr) {
    assert_eq!(curl_tftp(t, "nope", &[]).0, 68, "curl: TFTP file not found");
    assert_eq!(error_code(&raw(t, &rrq("nope", &[])).0), Some(1));
    for name in [
        "../secret",
        "/../secret",
        "a/../../secret",
        ".hidden",
        "..\\secret",
    ] {
        let (reply, _) = raw(t, &rrq(name, &[]));
        assert!(
            matches!(error_code(&reply), Some(1) | Some(2)),
            "{name}: {reply:?}"
        );
        assert!(!reply.windows(6).any(|w| w == b"secret"), "{name}");
    }
    assert_eq!(error_code(&raw(t, &rrq("/etc/passwd", &[])).0), Some(1));
    let mut wrq = rrq("x", &[]);
    wrq[1] = 2;
    assert_eq!(error_code(&raw(t, &wrq).0), Some(2));
}

fn garbage_is_ignored_and_the_server_keeps_serving(t: SocketAddr, small: &[u8]) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for junk in [
        &b""[..],
        b"\x00",
        b"\x00\x01",
        b"\x00\x01abc",
        b"\x00\x04\x00\x01",
        b"\x00\x03\x00\x01data",
        b"\xff\xff\xff",
        &[0u8; 600][..],
        &rrq("small.bin", &[("blksize", "x")])[..3],
    ] {
        s.send_to(junk, t).unwrap();
    }
    assert_eq!(curl_tftp(t, "small.bin", &[]), (0, small.to_vec()));
}

/// The raw request with options above was never acknowledged: that
/// transfer gives up after its retransmits (timeout 2 s, 6 sends) and
/// counts as failed, beside the refused ones (curl's and the raw missing
/// file, 5 traversals, /etc/passwd); the successful ones count nothing.
fn failed_transfers_are_counted(server: &Server) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = serve_support::get(server.http, "/metrics").text();
        if metrics.contains("mkimage_tftp_active_transfers 0") {
            let errors = metrics
                .lines()
                .find_map(|l| l.strip_prefix("mkimage_tftp_errors_total "))
                .expect("the error counter");
            assert_eq!(errors, "9", "{metrics}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "unacknowledged transfers never gave up:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `serve --uefi-boot shim`: what shim, Debian's signed network GRUB and
/// the GRUB config they read come over TFTP as (tftp-hpa, as firmware
/// would ask): shim and GRUB by the names they load each other by, the
/// stub config that sends a machine to its own, that machine's config
/// (the same profile, URLs and digests as its iPXE script; kernel and
/// initrd by TFTP path) and the kernel it names, from the content store.
#[test]
fn uefi_boot_shim_serves_the_secure_boot_chain_and_grub_configs_per_mac() {
    require("curl", "curl");
    for f in [
        "/usr/lib/shim/shimx64.efi.signed",
        "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
    ] {
        assert!(
            Path::new(f).is_file(),
            "{f} is missing: apt-get install -y shim-signed grub-efi-amd64-signed"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    let basefs = serve_support::build_bootable(&dir, b"basefs");
    let server = Server::start(
        tmp.path(),
        &dir,
        &[
            "--uefi-boot",
            "shim",
            "--public-url",
            "http://10.9.0.1:8080",
        ],
    );
    let t = server.tftp.expect("tftp address");
    the_shim_signed_grub_and_grub_stub_are_served(t);
    let (rc, cfg) = curl_tftp(t, "grub/grub.cfg-52:54:00:12:34:56", &[]);
    let cfg = String::from_utf8(cfg).unwrap();
    assert_eq!(rc, 0, "{cfg}");
    let kernel_sha = sha256_hex(b"kernel");
    let linux = cfg
        .lines()
        .find(|l| l.starts_with("linux "))
        .unwrap_or_else(|| panic!("{cfg}"));
    assert!(linux.starts_with(&format!("linux /sha256/{kernel_sha}/vmlinuz BOOTIF=01-52-54-00-12-34-56 mkimage.api=http://10.9.0.1:8080 mkimage.token=")), "{linux}");
    assert!(
        linux.contains(&format!(
            " basefs=http://10.9.0.1:8080/sha256/{}/base.squashfs ",
            basefs.sha256
        )),
        "{linux}"
    );
    assert!(
        cfg.contains(&format!(
            "\ninitrd /sha256/{}/initrd.img\n",
            sha256_hex(b"initrd")
        )),
        "{cfg}"
    );
    assert_eq!(
        curl_tftp(t, &format!("sha256/{kernel_sha}/vmlinuz"), &[]),
        (0, b"kernel".to_vec())
    );
    // Not a MAC, and not an object: not found; the plain files are served as before.
    assert_ne!(curl_tftp(t, "grub/grub.cfg-nonsense", &[]).0, 0);
    assert_ne!(
        curl_tftp(t, &format!("sha256/{}/x", "0".repeat(64)), &[]).0,
        0
    );
    assert_eq!(curl_tftp(t, "base.squashfs", &[]), (0, b"basefs".to_vec()));
}

/// shim and Debian's signed GRUB as installed, and the GRUB stub that loads
/// the config for the machine's MAC.
fn the_shim_signed_grub_and_grub_stub_are_served(t: SocketAddr) {
    let (rc, shim) = curl_tftp(t, "shimx64.efi", &[]);
    assert_eq!(
        (rc, shim.len() as u64),
        (
            0,
            std::fs::metadata("/usr/lib/shim/shimx64.efi.signed")
                .unwrap()
                .len()
        )
    );
    let (rc, grub) = curl_tftp(t, "grubx64.efi", &[]);
    assert_eq!(rc, 0);
    assert_eq!(
        sha256_hex(&grub),
        sha256_hex(
            &std::fs::read("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed").unwrap()
        )
    );
    let (rc, stub) = curl_tftp(t, "grub/grub.cfg", &[]);
    assert_eq!(rc, 0);
    assert!(String::from_utf8_lossy(&stub).contains("configfile $prefix/grub.cfg-$net_default_mac"));
}
