//! Boot scripts: profiles by MAC and by tag, the default for unknown
//! machines, the basefs alone when there is no boot config, overlays from
//! another server, the retry script when no script can be made, and
//! scripts whose content-addressed URLs serve what their sha256s say.

use crate::serve_support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use serve_support::{
    build, build_bootable, get, kernel_arg as arg, request, sha256_hex, url_path, Server,
};

const M1: &str = "52:54:00:00:00:01";
const M2: &str = "52-54-00-00-00-02";

/// Every URL in the script serves bytes with the sha256 the script names.
fn assert_consistent(script: &str) {
    let check = |url: &str, sha: &str| {
        let addr = url
            .split_once("://")
            .unwrap()
            .1
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let r = get(addr, url_path(url));
        assert_eq!(r.status, 200, "{url}");
        assert_eq!(sha256_hex(&r.body), sha, "{url}");
    };
    check(
        &arg(script, "basefs").unwrap(),
        &arg(script, "basefs.sha256").unwrap(),
    );
    if let Some(urls) = arg(script, "overlayfs") {
        let shas = arg(script, "overlayfs.sha256").unwrap();
        let (urls, shas): (Vec<_>, Vec<_>) = (urls.split(',').collect(), shas.split(',').collect());
        assert_eq!(urls.len(), shas.len());
        for (u, s) in urls.iter().zip(shas) {
            check(u, s);
        }
    }
    let kernel = script
        .lines()
        .find(|l| l.starts_with("kernel "))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap();
    check(kernel, content_hash(kernel));
    let initrd = script
        .lines()
        .find(|l| l.starts_with("initrd "))
        .unwrap()
        .split_whitespace()
        .nth(3)
        .unwrap();
    check(initrd, content_hash(initrd));
    for url in [arg(script, "basefs").unwrap()].into_iter().chain(
        arg(script, "overlayfs")
            .unwrap_or_default()
            .split(',')
            .map(str::to_string),
    ) {
        if url.contains(&format!("{}/", script_host(script))) {
            assert!(
                url.contains("/sha256/"),
                "{url} in the boot script is not content-addressed"
            );
        }
    }
}

/// The HEX of a `/sha256/HEX/NAME` URL.
fn content_hash(url: &str) -> &str {
    let hex = url
        .split("/sha256/")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("{url} is not content-addressed"));
    assert_eq!(hex.len(), 64, "{url}");
    hex
}

/// `http://HOST:PORT` the script's kernel comes from.
fn script_host(script: &str) -> String {
    let kernel = script
        .lines()
        .find(|l| l.starts_with("kernel "))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap();
    kernel.split("/sha256/").next().unwrap().to_string()
}

fn overlay_files(script: &str) -> Vec<String> {
    arg(script, "overlayfs")
        .map(|o| {
            o.split(',')
                .map(|u| u.rsplit('/').next().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn profiles_by_mac_tag_and_default() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    let disc = build_three_overlays_and_a_boot_config(tmp.path(), &dir);
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off"]);
    each_machine_gets_its_profile(server.http);
    the_status_page_shows_artifacts_and_who_booted(&server, &disc);
    drop(server);
    public_url_wins_over_the_host_header(tmp.path(), &dir);
    no_boot_config_gives_the_basefs_alone(tmp.path(), &dir);
    overlays_from_another_server_are_named_by_url_and_sha256(tmp.path(), &dir, &disc);
    a_missing_artifact_gives_a_retry_script(tmp.path(), &dir);
    nothing_built_gives_a_retry_script_with_the_reason(tmp.path());
    an_invalid_boot_config_is_a_usage_error(tmp.path(), &dir);
}

/// A bootable set, the overlays discovery, raid and burnin, and a boot
/// config: raid for M1, burnin by M2's tag, discovery by default. Gives
/// discovery's sha256.
fn build_three_overlays_and_a_boot_config(tmp: &Path, dir: &Path) -> String {
    std::fs::create_dir(dir).unwrap();
    build_bootable(dir, b"base");
    let disc = build(
        dir,
        "overlay",
        "discovery",
        "discovery.cpio.gz",
        b"disc",
        &[],
    );
    build(dir, "overlay", "raid", "raid.cpio.gz", b"raid", &[&disc]);
    build(
        dir,
        "overlay",
        "burnin",
        "burnin.cpio.gz",
        b"burn",
        &[&disc],
    );
    std::fs::create_dir(tmp.join("vars")).unwrap();
    std::fs::write(
        tmp.join("vars/boot.yml"),
        format!(
            "default: discovery\nprofiles:\n  - name: raid\n    overlays: [discovery, raid.cpio.gz]\n    args: raid.level=10\n    macs: ['{M1}']\n  \
             - name: burnin\n    overlays: [discovery, burnin]\n    tags: [burn]\n  - name: discovery\n    overlays: [discovery]\nhosts:\n  '{M2}': [burn]\n"
        ),
    )
    .unwrap();
    disc.sha256.clone()
}

fn each_machine_gets_its_profile(a: SocketAddr) {
    let s1 = get(a, &format!("/boot.ipxe?mac={M1}")).text();
    assert_eq!(
        overlay_files(&s1),
        ["discovery.cpio.gz", "raid.cpio.gz"],
        "{s1}"
    );
    assert_eq!(arg(&s1, "BOOTIF").as_deref(), Some("01-52-54-00-00-00-01"));
    assert!(
        s1.contains(" raid.level=10 ") && s1.contains(" console=tty0 console=ttyS0,115200 "),
        "{s1}"
    );
    assert!(
        s1.contains(&format!("basefs=http://{a}/sha256/")),
        "URLs on the address the client used: {s1}"
    );
    assert_consistent(&s1);

    let s2 = get(a, &format!("/boot.ipxe?mac={M2}")).text();
    assert_eq!(
        overlay_files(&s2),
        ["discovery.cpio.gz", "burnin.cpio.gz"],
        "{s2}"
    );
    assert_consistent(&s2);
    let unknown = get(a, "/boot.ipxe?mac=52:54:00:99:99:99").text();
    assert_eq!(overlay_files(&unknown), ["discovery.cpio.gz"], "{unknown}");
    let plain = get(a, "/boot.ipxe").text();
    assert_eq!(overlay_files(&plain), ["discovery.cpio.gz"]);
    assert_eq!(
        arg(&plain, "BOOTIF").as_deref(),
        Some("01-${netX/mac:hexhyp}")
    );
    assert_consistent(&plain);
    assert_eq!(get(a, "/boot.ipxe?mac=nonsense").status, 400);
}

/// The status page shows the artifacts and, with the admin token, who booted.
fn the_status_page_shows_artifacts_and_who_booted(server: &Server, disc: &str) {
    let page = server.get_admin("/").text();
    assert!(
        page.contains("raid.cpio.gz")
            && page.contains(disc)
            && page.contains("2023-11-14 22:13:20"),
        "{page}"
    );
    assert!(
        page.contains(M1) && page.contains("52:54:00:00:00:02"),
        "{page}"
    );
    let metrics = get(server.http, "/metrics").text();
    assert!(
        metrics.contains("mkimage_ipxe_scripts_total 4"),
        "{metrics}"
    );
}

fn public_url_wins_over_the_host_header(tmp: &Path, dir: &Path) {
    let server = Server::start(
        tmp,
        dir,
        &["--tftp", "off", "--public-url", "http://boot.example:8080/"],
    );
    let s = request(server.http, "GET", "/boot.ipxe", &[]).text();
    assert!(
        s.contains("basefs=http://boot.example:8080/sha256/") && s.contains("/base.squashfs "),
        "{s}"
    );
}

/// No boot config: the newest basefs alone — no overlay reaches a machine
/// that no profile names it for — and the status page says how to give
/// machines overlays.
fn no_boot_config_gives_the_basefs_alone(tmp: &Path, dir: &Path) {
    std::fs::remove_file(tmp.join("vars/boot.yml")).unwrap();
    let server = Server::start(tmp, dir, &["--tftp", "off"]);
    let s = get(server.http, "/boot.ipxe").text();
    assert_eq!(overlay_files(&s), Vec::<String>::new(), "{s}");
    assert!(!s.contains("overlayfs=") && !s.contains("cpio.gz"), "{s}");
    assert_consistent(&s);
    let page = get(server.http, "/").text();
    assert!(
        page.contains("with no overlay") && page.contains("--boot-config"),
        "{page}"
    );
}

/// Overlays from another server: named by URL and sha256, in order.
fn overlays_from_another_server_are_named_by_url_and_sha256(tmp: &Path, dir: &Path, disc: &str) {
    let remote_sha = "ab".repeat(32);
    let remote = tmp.join("remote.yml");
    std::fs::write(&remote, format!("profiles:\n  - name: t\n    overlays: [discovery, {{url: 'http://10.0.2.2:9/check.cpio.gz', sha256: {remote_sha}}}]\n")).unwrap();
    let server = Server::start(
        tmp,
        dir,
        &["--tftp", "off", "--boot-config", remote.to_str().unwrap()],
    );
    let s = get(server.http, "/boot.ipxe").text();
    let urls = arg(&s, "overlayfs").unwrap();
    assert!(
        urls.starts_with(&format!(
            "http://{}/sha256/{}/discovery.cpio.gz,",
            server.http, disc
        )),
        "{s}"
    );
    assert!(urls.ends_with(",http://10.0.2.2:9/check.cpio.gz"), "{s}");
    assert_eq!(
        arg(&s, "overlayfs.sha256").unwrap(),
        format!("{},{remote_sha}", disc)
    );
}

/// A profile naming an artifact that is not built: the machine gets a 200
/// script that prints why and asks again (iPXE shows an HTTP error as a
/// bare code), counted in /metrics.
fn a_missing_artifact_gives_a_retry_script(tmp: &Path, dir: &Path) {
    let bad = tmp.join("bad.yml");
    std::fs::write(&bad, "profiles:\n  - name: x\n    overlays: [nope]\n").unwrap();
    let server = Server::start(
        tmp,
        dir,
        &[
            "--tftp",
            "off",
            "--boot-config",
            bad.to_str().unwrap(),
            "--retry-delay",
            "7",
        ],
    );
    let r = get(server.http, &format!("/boot.ipxe?mac={M1}"));
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(
        text.starts_with("#!ipxe\n") && text.contains("no overlay `nope`"),
        "{text}"
    );
    assert!(
        text.contains("\nsleep 7\n")
            && text.contains(&format!(
                "chain --replace http://{}/boot.ipxe?mac={M1} ",
                server.http
            )),
        "{text}"
    );
    assert!(!text.contains("\nkernel "), "{text}");
    let metrics = get(server.http, "/metrics").text();
    assert!(
        metrics.contains("mkimage_ipxe_retry_scripts_total 1\n")
            && metrics.contains("mkimage_ipxe_scripts_total 0\n"),
        "{metrics}"
    );
}

/// Nothing built yet: the same, with the reason.
fn nothing_built_gives_a_retry_script_with_the_reason(tmp: &Path) {
    let empty = tmp.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let server = Server::start(tmp, &empty, &["--tftp", "off"]);
    let r = get(server.http, "/boot.ipxe");
    assert_eq!(r.status, 200);
    assert!(
        r.text()
            .contains("\necho mkimage: cannot boot this machine yet: ")
            && r.text()
                .contains("manifest.json has no kernel; build one first\n"),
        "{}",
        r.text()
    );
}

/// An invalid boot config is a usage error at startup (exit 2, file and line).
fn an_invalid_boot_config_is_a_usage_error(tmp: &Path, dir: &Path) {
    let bad = tmp.join("bad.yml");
    std::fs::write(&bad, "profiles:\n  - name: x\n    overlay: [typo]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mkimage"))
        .current_dir(tmp)
        .args([
            "serve",
            "--dir",
            dir.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
            "--tftp",
            "off",
            "--boot-config",
            bad.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yml") && err.contains("line 3"), "{err}");
}
