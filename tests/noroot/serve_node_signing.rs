//! Signed node overlays without a VM: `mkimage serve --node-signing-key`
//! signs each node overlay and serves the signature beside it, to the
//! machine's boot token only; it refuses a key file others may read. The
//! init's side runs too: `initrd/report.sh` in busybox sh (busybox's wget,
//! the host's `keyctl` and kernel, as the initrd has them) takes the node
//! overlay a boot script names only when its signature verifies against
//! the node-signing certificate, and refuses it (the boot fails, with the
//! reason) against another certificate or with a changed signature.

use crate::serve_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use mkimage::secureboot::{keys, sign};
use serve_support::{
    build_bootable, get, get_with, kernel_arg, require, sha256_hex, url_path, Server,
};

const MAC: &str = "52:54:00:12:34:56";
const BOOT: &str = "default: discovery\nprofiles:\n  - name: discovery\nnodes:\n  lab-node-07:\n    mac: \"52:54:00:12:34:56\"\n    vars: {rack: r12}\n";

#[test]
fn a_node_signing_key_others_can_read_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    build_bootable(&dir, b"base");
    let k = keys::init(&tmp.path().join("keys")).unwrap();
    std::fs::set_permissions(&k.node_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mkimage"))
        .current_dir(tmp.path())
        .args(["serve", "--http", "127.0.0.1:0", "--tftp", "off", "--dir"])
        .arg(&dir)
        .arg("--node-signing-key")
        .arg(&k.node_key)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--node-signing-key") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(!err.contains("PRIVATE KEY"), "the key itself in an error");
}

/// `calls` after sourcing the init's fetch.sh and report.sh in busybox sh,
/// busybox's applets first on PATH (keyctl from the host); `fail` prints
/// the reason and exits 1, as the init's would stop the boot.
fn init_sh(work: &Path, calls: &str) -> (bool, String) {
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for applet in [
        "sh",
        "wget",
        "timeout",
        "sha256sum",
        "cut",
        "tr",
        "sed",
        "grep",
        "cat",
        "rm",
        "mkdir",
        "printf",
    ] {
        let _ = std::os::unix::fs::symlink("/bin/busybox", bin.join(applet));
    }
    let init = Path::new(env!("CARGO_MANIFEST_DIR")).join("initrd");
    let script = format!(
        "say() {{ echo \"mkimage-init: $*\"; }}\nstep() {{ say \"step: $*\"; }}\nfail() {{ echo \"FAILED: $*\"; exit 1; }}\n. {i}/fetch.sh\n. {i}/report.sh\n{calls}\n",
        i = init.display()
    );
    let o = Command::new("/bin/busybox")
        .args(["sh", "-c", &script])
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .current_dir(work)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn node_overlays_are_signed_for_their_machine_and_the_init_checks_them() {
    require("busybox", "busybox-static");
    require("keyctl", "keyutils");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    build_bootable(&dir, b"base");
    let k = keys::init(&tmp.path().join("keys")).unwrap();
    let boot = tmp.path().join("boot.yml");
    std::fs::write(&boot, BOOT).unwrap();
    let server = Server::start(
        tmp.path(),
        &dir,
        &[
            "--tftp",
            "off",
            "--boot-config",
            boot.to_str().unwrap(),
            "--node-signing-key",
            k.node_key.to_str().unwrap(),
        ],
    );
    let script = get(server.http, &format!("/boot.ipxe?mac={MAC}")).text();
    let token = kernel_arg(&script, "mkimage.token").expect("a boot token");
    let url = kernel_arg(&script, "overlayfs")
        .and_then(|o| o.rsplit(',').next().map(str::to_string))
        .expect("the node overlay");
    let overlay_path = url_path(&url).to_string();
    let sig_path = format!("{overlay_path}.sig");

    // The signature is the machine's, as its overlay is.
    assert_eq!(get(server.http, &sig_path).status, 403, "no token");
    assert_eq!(get_with(server.http, &sig_path, "00ff").status, 403);
    let sig = get_with(server.http, &sig_path, &token);
    assert_eq!(sig.status, 200, "{}", sig.text());
    let overlay = get_with(server.http, &overlay_path, &token).body;
    // Over the machine and the overlay's sha256, with the node-signing key.
    let statement = sign::node_statement(MAC, &sha256_hex(&overlay));
    assert!(sign::verifies(&k.node_der, statement.as_bytes(), &sig.body).unwrap());
    assert!(!sign::verifies(&k.der, statement.as_bytes(), &sig.body).unwrap());
    let other = sign::node_statement("52:54:00:12:34:57", &sha256_hex(&overlay));
    assert!(!sign::verifies(&k.node_der, other.as_bytes(), &sig.body).unwrap());

    let work = tmp.path().join("init");
    std::fs::create_dir_all(work.join("run")).unwrap();
    the_init_takes_it_only_against_the_node_certificate(
        &work,
        &server,
        (&script, &token, &url),
        &k,
    );
    a_changed_or_foreign_signature_is_refused(&work, &overlay, &sig.body, &k.node_der);
}

/// The init takes it when the signature verifies against the certificate;
/// against another key's certificate: refused, the boot fails saying why.
fn the_init_takes_it_only_against_the_node_certificate(
    work: &Path,
    server: &Server,
    (script, token, url): (&str, &str, &str),
    k: &keys::Keys,
) {
    let line = script
        .lines()
        .find(|l| l.contains(" mkimage.token="))
        .unwrap();
    let calls = |cert: &Path| {
        format!(
            "API='{api}'\nTOKEN={token}\nREPORT_MAC={MAC}\nRUN_DIR={run}\nNODE_OVERLAY=signed\nNODE_SIGNER={cert}\nnode_overlay_from '{line}'\necho \"OVERLAYS=$OVERLAYS\"",
            api = server.url(""),
            run = work.join("run").display(),
            cert = cert.display(),
        )
    };
    let (ok, out) = init_sh(work, &calls(&k.node_der));
    assert!(ok, "{out}");
    assert!(out.contains("signature verified"), "{out}");
    assert!(out.contains(&format!("OVERLAYS={url}")), "{out}");

    let (ok, out) = init_sh(work, &calls(&k.der));
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAILED: node overlay refused: its signature does not verify"),
        "{out}"
    );
    assert!(!out.contains("OVERLAYS="), "{out}");
}

/// A changed signature, one for another machine, or for other bytes: refused.
fn a_changed_or_foreign_signature_is_refused(work: &Path, overlay: &[u8], sig: &[u8], cert: &Path) {
    std::fs::write(work.join("overlay"), overlay).unwrap();
    let mut bad = sig.to_vec();
    bad[100] ^= 1;
    std::fs::write(work.join("bad.sig"), &bad).unwrap();
    std::fs::write(work.join("good.sig"), sig).unwrap();
    let cert = cert.display();
    let (ok, out) = init_sh(
        work,
        &format!("signature_ok overlay good.sig {cert} 52-54-00-12-34-56 || exit 3\nsignature_ok overlay bad.sig {cert} {MAC} && exit 4\necho \"$WHY\"\nsignature_ok overlay good.sig {cert} 52:54:00:12:34:57 && exit 6\necho x >>overlay\nsignature_ok overlay good.sig {cert} {MAC} && exit 5\necho done"),
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("its signature does not verify") && out.ends_with("done\n"),
        "{out}"
    );
}

#[test]
fn without_a_signing_key_the_signature_is_missing_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    build_bootable(&dir, b"base");
    let boot = tmp.path().join("boot.yml");
    std::fs::write(&boot, BOOT).unwrap();
    let server = Server::start(
        tmp.path(),
        &dir,
        &["--tftp", "off", "--boot-config", boot.to_str().unwrap()],
    );
    let script = get(server.http, &format!("/boot.ipxe?mac={MAC}")).text();
    let token = kernel_arg(&script, "mkimage.token").unwrap();
    let url = kernel_arg(&script, "overlayfs").unwrap();
    let sig_path = format!("{}.sig", url_path(url.rsplit(',').next().unwrap()));
    let r = get_with(server.http, &sig_path, &token);
    assert_eq!(r.status, 404);
    assert!(r.text().contains("--node-signing-key"), "{}", r.text());
}
