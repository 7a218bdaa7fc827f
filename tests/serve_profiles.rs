//! Boot scripts: profiles by MAC and by tag, the default for unknown
//! machines, the default derived from the manifest when there is no boot
//! config, and scripts whose sha256s match what their URLs serve.

mod serve_support;

use std::path::Path;
use std::process::Command;

use serve_support::{get, request, sha256_hex, Server};
use mkimage::artifact::{self, Entry, Ref};

const M1: &str = "52:54:00:00:00:01";
const M2: &str = "52-54-00-00-00-02";

/// Publish `name` with `data` and record it in the manifest.
fn build(dir: &Path, kind: &str, name: &str, file: &str, data: &[u8], parents: &[&Entry]) -> Entry {
    let staged = artifact::staging_file(dir, file).unwrap();
    std::fs::write(staged.path(), data).unwrap();
    let (_f, path) = staged.keep().unwrap();
    let (size, sha256) = artifact::publish(dir, file, &path).unwrap();
    let entry = Entry {
        kind: kind.into(),
        name: name.into(),
        file: file.into(),
        size,
        sha256,
        parents: parents.iter().map(|p| Ref { file: p.file.clone(), sha256: p.sha256.clone() }).collect(),
        build_time: 1_700_000_000,
        ..Default::default()
    };
    artifact::record(dir, std::slice::from_ref(&entry)).unwrap();
    entry
}

/// The value of `key=` on the script's kernel line.
fn arg(script: &str, key: &str) -> Option<String> {
    let kernel = script.lines().find(|l| l.starts_with("kernel "))?;
    kernel.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_string))
}

/// Every URL in the script serves bytes with the sha256 the script names.
fn assert_consistent(script: &str) {
    let check = |url: &str, sha: &str| {
        let path = url.split_once("://").and_then(|(_, r)| r.find('/').map(|i| &r[i..])).unwrap();
        let addr = url.split_once("://").unwrap().1.split('/').next().unwrap().parse().unwrap();
        let r = get(addr, path);
        assert_eq!(r.status, 200, "{url}");
        assert_eq!(sha256_hex(&r.body), sha, "{url}");
    };
    check(&arg(script, "basefs").unwrap(), &arg(script, "basefs.sha256").unwrap());
    if let Some(urls) = arg(script, "overlayfs") {
        let shas = arg(script, "overlayfs.sha256").unwrap();
        let (urls, shas): (Vec<_>, Vec<_>) = (urls.split(',').collect(), shas.split(',').collect());
        assert_eq!(urls.len(), shas.len());
        for (u, s) in urls.iter().zip(shas) {
            check(u, s);
        }
    }
    let kernel = script.lines().find(|l| l.starts_with("kernel ")).unwrap().split_whitespace().nth(1).unwrap();
    let (url, sha) = kernel.split_once("?sha256=").unwrap();
    check(url, sha);
}

fn overlay_files(script: &str) -> Vec<String> {
    arg(script, "overlayfs").map(|o| o.split(',').map(|u| u.rsplit('/').next().unwrap().to_string()).collect()).unwrap_or_default()
}

#[test]
fn profiles_by_mac_tag_and_default() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    build(&dir, "kernel", "kernel", "vmlinuz", b"kernel", &[]);
    build(&dir, "initrd", "initrd", "initrd.img", b"initrd", &[]);
    build(&dir, "basefs", "base", "base.squashfs", b"base", &[]);
    let disc = build(&dir, "overlay", "discovery", "discovery.cpio.gz", b"disc", &[]);
    build(&dir, "overlay", "raid", "raid.cpio.gz", b"raid", &[&disc]);
    build(&dir, "overlay", "burnin", "burnin.cpio.gz", b"burn", &[&disc]);
    std::fs::create_dir(tmp.path().join("vars")).unwrap();
    std::fs::write(
        tmp.path().join("vars/boot.yml"),
        format!(
            "default: discovery\nprofiles:\n  - name: raid\n    overlays: [discovery, raid.cpio.gz]\n    args: raid.level=10\n    macs: ['{M1}']\n  \
             - name: burnin\n    overlays: [discovery, burnin]\n    tags: [burn]\n  - name: discovery\n    overlays: [discovery]\nhosts:\n  '{M2}': [burn]\n"
        ),
    )
    .unwrap();
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off"]);
    let a = server.http;

    let s1 = get(a, &format!("/boot.ipxe?mac={M1}")).text();
    assert_eq!(overlay_files(&s1), ["discovery.cpio.gz", "raid.cpio.gz"], "{s1}");
    assert_eq!(arg(&s1, "BOOTIF").as_deref(), Some("01-52-54-00-00-00-01"));
    assert!(s1.contains(" raid.level=10 ") && s1.contains(" console=tty0 console=ttyS0,115200 "), "{s1}");
    assert!(s1.contains(&format!("http://{a}/base.squashfs")), "URLs on the address the client used: {s1}");
    assert_consistent(&s1);

    let s2 = get(a, &format!("/boot.ipxe?mac={M2}")).text();
    assert_eq!(overlay_files(&s2), ["discovery.cpio.gz", "burnin.cpio.gz"], "{s2}");
    assert_consistent(&s2);
    let unknown = get(a, "/boot.ipxe?mac=52:54:00:99:99:99").text();
    assert_eq!(overlay_files(&unknown), ["discovery.cpio.gz"], "{unknown}");
    let plain = get(a, "/boot.ipxe").text();
    assert_eq!(overlay_files(&plain), ["discovery.cpio.gz"]);
    assert_eq!(arg(&plain, "BOOTIF").as_deref(), Some("01-${netX/mac:hexhyp}"));
    assert_consistent(&plain);
    assert_eq!(get(a, "/boot.ipxe?mac=nonsense").status, 400);

    // The status page shows the artifacts and who booted.
    let page = get(a, "/").text();
    assert!(page.contains("raid.cpio.gz") && page.contains(&disc.sha256) && page.contains("2023-11-14 22:13:20"), "{page}");
    assert!(page.contains(M1) && page.contains("52:54:00:00:00:02"), "{page}");
    let metrics = get(a, "/metrics").text();
    assert!(metrics.contains("mkimage_ipxe_scripts_total 4"), "{metrics}");
    drop(server);

    // --public-url wins over the Host header.
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off", "--public-url", "http://boot.example:8080/"]);
    let s = request(server.http, "GET", "/boot.ipxe", &[]).text();
    assert!(s.contains("basefs=http://boot.example:8080/base.squashfs "), "{s}");
    drop(server);

    // No boot config: the default comes from the manifest, parents first.
    std::fs::remove_file(tmp.path().join("vars/boot.yml")).unwrap();
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off"]);
    let s = get(server.http, "/boot.ipxe").text();
    assert_eq!(overlay_files(&s), ["discovery.cpio.gz", "burnin.cpio.gz", "raid.cpio.gz"], "{s}");
    assert_consistent(&s);
    drop(server);

    // A profile naming an artifact that is not built: 500 with the reason.
    let bad = tmp.path().join("bad.yml");
    std::fs::write(&bad, "profiles:\n  - name: x\n    overlays: [nope]\n").unwrap();
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off", "--boot-config", bad.to_str().unwrap()]);
    let r = get(server.http, "/boot.ipxe");
    assert_eq!(r.status, 500);
    assert!(r.text().contains("no overlay `nope`"), "{}", r.text());
    drop(server);

    // An invalid boot config is a usage error at startup (exit 2, file and line).
    std::fs::write(&bad, "profiles:\n  - name: x\n    overlay: [typo]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mkimage"))
        .current_dir(tmp.path())
        .args(["serve", "--dir", dir.to_str().unwrap(), "--http", "127.0.0.1:0", "--tftp", "off", "--boot-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yml") && err.contains("line 3"), "{err}");
}
