//! Content-addressed URLs: a machine fetches its boot script, the basefs is
//! rebuilt while it boots, and the URLs it holds still give the old bytes —
//! immutable, through a download that was in progress and on fresh
//! requests — until the grace period after the republish has passed; then
//! they are 404, as is any unknown hash.

use crate::serve_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serve_support::{
    build, build_bootable, get, kernel_arg, pseudo_random, request, sha256_hex, url_path, Server,
};

const GRACE_SECS: u64 = 4;

#[test]
fn a_rebuild_during_a_boot_keeps_the_scripts_urls_until_the_grace_period_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    let old = pseudo_random(16 << 20, 1);
    let new = pseudo_random(16 << 20, 2);
    build_bootable(&dir, &old);
    let server = Server::start(
        tmp.path(),
        &dir,
        &["--tftp", "off", "--grace", &GRACE_SECS.to_string()],
    );
    let a = server.http;
    let (old_path, paused, first) = a_machine_is_part_way_through_the_basefs(a, &old);
    // Rebuild: new bytes under the same name, a new manifest entry.
    let republished = Instant::now();
    build(&dir, "basefs", "base", "base.squashfs", &new, &[]);
    the_old_url_still_serves_the_old_bytes(a, (paused, first), &old_path, &old, republished);
    let new_path = a_new_script_names_the_new_content(a, &new);
    the_old_url_goes_once_the_grace_period_has_passed(a, &old_path, &new_path, republished);
}

/// The machine fetched its script and is part way through the basefs.
/// Gives the basefs's path, the paused connection and what it read so far.
fn a_machine_is_part_way_through_the_basefs(
    a: SocketAddr,
    old: &[u8],
) -> (String, TcpStream, Vec<u8>) {
    let script = get(a, "/boot.ipxe").text();
    let basefs = kernel_arg(&script, "basefs").unwrap();
    let old_path = url_path(&basefs).to_string();
    assert_eq!(
        old_path,
        format!("/sha256/{}/base.squashfs", sha256_hex(old)),
        "{script}"
    );
    assert_eq!(
        kernel_arg(&script, "basefs.sha256").unwrap(),
        sha256_hex(old)
    );
    let mut paused = TcpStream::connect(a).unwrap();
    paused
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        paused,
        "GET {old_path} HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut first = vec![0u8; 64 * 1024];
    paused.read_exact(&mut first).unwrap();
    (old_path, paused, first)
}

/// The download in progress ends with the old bytes, and so does a fresh
/// request for the URL the machine holds, within the grace period.
fn the_old_url_still_serves_the_old_bytes(
    a: SocketAddr,
    (mut paused, mut first): (TcpStream, Vec<u8>),
    old_path: &str,
    old: &[u8],
    republished: Instant,
) {
    let mut rest = Vec::new();
    paused.read_to_end(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    let body_start = first.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(
        sha256_hex(&first[body_start..]),
        sha256_hex(old),
        "the download in progress kept the old bytes"
    );
    // ...and so does a fresh request for the URL the machine holds.
    let again = get(a, old_path);
    assert!(
        republished.elapsed() < Duration::from_secs(GRACE_SECS),
        "the checks before the grace period ran too late to mean anything"
    );
    assert_eq!(
        (again.status, sha256_hex(&again.body)),
        (200, sha256_hex(old))
    );
    assert_eq!(
        again.header("Cache-Control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        again.header("ETag"),
        Some(format!("\"{}\"", sha256_hex(old)).as_str())
    );
    let part = request(a, "GET", old_path, &[("Range", "bytes=100-199")]);
    assert_eq!((part.status, part.body.as_slice()), (206, &old[100..200]));
}

/// A new script names the new content; the plain name serves it too.
/// Unknown hashes, malformed ones and hidden store paths are refused.
/// Gives the new basefs's path.
fn a_new_script_names_the_new_content(a: SocketAddr, new: &[u8]) -> String {
    let script2 = get(a, "/boot.ipxe").text();
    let new_path = url_path(&kernel_arg(&script2, "basefs").unwrap()).to_string();
    assert_eq!(
        new_path,
        format!("/sha256/{}/base.squashfs", sha256_hex(new))
    );
    assert_eq!(sha256_hex(&get(a, &new_path).body), sha256_hex(new));
    assert_eq!(sha256_hex(&get(a, "/base.squashfs").body), sha256_hex(new));

    // Unknown hashes, malformed ones and hidden store paths are refused.
    assert_eq!(
        get(a, &format!("/sha256/{}/base.squashfs", "0".repeat(64))).status,
        404
    );
    assert_eq!(get(a, "/sha256/xyz/base.squashfs").status, 404);
    assert_eq!(get(a, &format!("/sha256/{}", sha256_hex(new))).status, 404);
    assert_eq!(
        get(a, &format!("/.state/objects/{}", sha256_hex(new))).status,
        403
    );
    new_path
}

/// Once the grace period has passed, the superseded URL is gone (the
/// pruner sweeps every quarter of the grace period).
fn the_old_url_goes_once_the_grace_period_has_passed(
    a: SocketAddr,
    old_path: &str,
    new_path: &str,
    republished: Instant,
) {
    let deadline = Instant::now() + Duration::from_secs(GRACE_SECS + 30);
    loop {
        let r = request(a, "HEAD", old_path, &[]);
        if r.status == 404 {
            break;
        }
        assert_eq!(r.status, 200);
        assert!(
            Instant::now() < deadline,
            "{old_path} still served {:?} after the republish",
            republished.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        republished.elapsed() >= Duration::from_secs(GRACE_SECS),
        "dropped before the grace period ended"
    );
    assert_eq!(get(a, new_path).status, 200, "the current version stays");
    assert!(get(a, "/metrics")
        .text()
        .contains("mkimage_objects_dropped_total 1\n"));
}

#[test]
fn artifacts_published_without_the_store_get_content_addresses_too() {
    // A dir whose manifest was written by hand (or by an older mkimage):
    // no content store yet.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    let mut artifacts = serde_json::Map::new();
    for (file, kind, data) in [
        ("vmlinuz", "kernel", b"k".to_vec()),
        ("initrd.img", "initrd", b"i".to_vec()),
        ("base.squashfs", "basefs", pseudo_random(100_000, 3)),
    ] {
        std::fs::write(dir.join(file), &data).unwrap();
        artifacts.insert(file.into(), serde_json::json!({"kind": kind, "name": kind, "file": file, "size": data.len(), "sha256": sha256_hex(&data), "build_time": 0, "tool_version": "test"}));
    }
    let manifest = serde_json::json!({ "artifacts": artifacts });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    // One file was changed behind the manifest's back.
    std::fs::write(dir.join("initrd.img"), b"changed").unwrap();
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off"]);
    let a = server.http;
    // Asked for directly, by the sha256 the manifest records.
    let sha = artifacts["vmlinuz"]["sha256"].as_str().unwrap();
    let r = get(a, &format!("/sha256/{sha}/vmlinuz"));
    assert_eq!((r.status, r.body.as_slice()), (200, &b"k"[..]));
    // The changed file is never served under the hash it no longer has,
    // and no boot script names it: the machine is told to retry.
    let stale = artifacts["initrd.img"]["sha256"].as_str().unwrap();
    assert_eq!(get(a, &format!("/sha256/{stale}/initrd.img")).status, 404);
    let retry = get(a, "/boot.ipxe");
    assert_eq!(retry.status, 200);
    assert!(
        retry.text().contains("initrd.img has sha256") && !retry.text().contains("\nkernel "),
        "{}",
        retry.text()
    );
    // Put back, the boot script names all three and adds them to the store.
    std::fs::write(dir.join("initrd.img"), b"i").unwrap();
    let script = get(a, "/boot.ipxe").text();
    let path = url_path(&kernel_arg(&script, "basefs").unwrap()).to_string();
    for file in ["vmlinuz", "initrd.img", "base.squashfs"] {
        let sha = artifacts[file]["sha256"].as_str().unwrap();
        assert!(
            dir.join(".state/objects").join(sha).is_file(),
            "{file} not in the store: {script}"
        );
    }
    assert_eq!(
        sha256_hex(&get(a, &path).body),
        artifacts["base.squashfs"]["sha256"].as_str().unwrap()
    );
}
