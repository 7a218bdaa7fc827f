//! The init's fetch path with more than one server (`mkimage.servers=`),
//! run by busybox's own sh and wget (the initrd's) on the host: a download
//! whose server is down falls back to the same path on the next server and
//! says so; a URL on no listed server, or no list at all, keeps the plain
//! retry-then-fail behaviour.

use crate::serve_support;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use serve_support::{build, pseudo_random, require, sha256_hex, Server};

/// Run `script` after sourcing initrd/fetch.sh and media.sh in busybox sh, with
/// busybox's applets first on PATH; returns (success, output).
fn fetch_sh(work: &Path, script: &str) -> (bool, String) {
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let busybox = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v busybox"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for applet in ["wget", "sha256sum", "cut", "tr", "cat", "rm", "sleep"] {
        let _ = std::os::unix::fs::symlink(busybox.trim(), bin.join(applet));
    }
    // fetch.sh downloads through media.sh's `get` (a wget without a boot medium).
    let init = Path::new(env!("CARGO_MANIFEST_DIR")).join("initrd");
    let full = format!("say() {{ echo \"mkimage-init: $*\"; }}\nRETRIES=2\nBACKOFF=1\n. {i}/fetch.sh\n. {i}/media.sh\n{script}", i = init.display());
    let out = Command::new(busybox.trim())
        .args(["sh", "-c", &full])
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .current_dir(work)
        .output()
        .expect("run busybox sh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_failed_server_falls_back_to_the_next() {
    require("busybox", "busybox-static");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    let data = pseudo_random(300_000, 3);
    let e = build(&dir, "basefs", "base", "base.squashfs", &data, &[]);
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off"]);
    // A port nothing listens on: bound, then released.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (down, up) = (format!("http://{dead}"), format!("http://{}", server.http));
    let path = format!("/sha256/{}/base.squashfs", e.sha256);

    let (ok, out) = fetch_sh(
        tmp.path(),
        &format!("SERVERS={down},{up}\nfetch {down}{path} got sha256_is {sha} && echo \"fetched from $URL\"", sha = e.sha256),
    );
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("mkimage-init: download {down}{path} (try 1 of 2)")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "mkimage-init: falling back to the next server: {up}{path}"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("fetched from {up}{path}")), "{out}");
    assert!(
        !out.contains("retrying in"),
        "the fallback came before any backoff:\n{out}"
    );
    assert_eq!(
        sha256_hex(&std::fs::read(tmp.path().join("got")).unwrap()),
        e.sha256
    );

    // A wrong file on the first server (sha256 mismatch) also falls back.
    let (ok, out) = fetch_sh(
        tmp.path(),
        &format!(
            "SERVERS={up},{down}\nfetch {up}{path} got2 sha256_is {}",
            "0".repeat(64)
        ),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("sha256 mismatch")
            && out.contains(&format!("falling back to the next server: {down}{path}")),
        "{out}"
    );
    assert!(
        out.contains("retrying in 1s")
            && out.contains(&format!("download {up}{path} (try 2 of 2)")),
        "{out}"
    );

    // No list (on-imagebuilder's plain spelling), or a URL on no listed server: no fallback.
    for servers in ["", &format!("http://127.0.0.1:1,{up}")] {
        let (ok, out) = fetch_sh(
            tmp.path(),
            &format!("SERVERS={servers}\nfetch {down}{path} got3"),
        );
        assert!(!ok, "{out}");
        assert!(!out.contains("falling back"), "{out}");
        assert!(
            out.contains("retrying in 1s") && out.contains("(try 2 of 2)"),
            "{out}"
        );
    }
}
