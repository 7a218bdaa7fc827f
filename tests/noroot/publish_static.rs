//! `mkimage publish OUT`: the static tree served by nginx alone (its own
//! `nginx.conf`, mkimage not running) answers a machine's whole boot — the
//! dispatcher, the machine's own script or the default, and every artifact
//! the script names, byte for byte by sha256 — and bad input is refused
//! with a clear error that writes nothing.

use crate::nginx_support;
use crate::serve_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use mkimage::artifact::Entry;

use nginx_support::{free_port, Nginx};
use serve_support::{
    build, build_bootable, download, get, kernel_arg, pseudo_random, require, url_path,
};

fn publish(cwd: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mkimage"))
        .current_dir(cwd)
        .arg("publish")
        .args(args)
        .output()
        .expect("run mkimage publish")
}

#[test]
fn published_tree_boots_through_nginx_alone() {
    require("nginx", "nginx");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let rescue = publish_a_rescue_profile_for_one_machine(tmp.path(), &dir, listen);
    // Nothing of mkimage runs from here on: the build dir goes away too.
    std::fs::rename(&dir, tmp.path().join("gone")).unwrap();
    let out = tmp.path().join("www");
    let conf = std::fs::read_to_string(out.join("nginx.conf")).unwrap();
    assert!(
        conf.contains(&format!("listen {};", listen.port())),
        "{conf}"
    );
    let nginx = Nginx::start(
        tmp.path(),
        listen,
        &conf.replace(
            &format!("listen {};", listen.port()),
            &format!("listen {listen};"),
        ),
    );
    let (own, other) = each_machine_gets_its_script_or_the_default(nginx.addr, &rescue);
    every_artifact_the_scripts_name_is_there_by_content(nginx.addr, &[&own, &other]);
    assert_eq!(get(nginx.addr, "/nginx.conf").status, 404);
}

/// A bootable set, a rescue overlay whose profile has one machine, published
/// into TMP/www for `listen`. Gives the rescue overlay's sha256.
fn publish_a_rescue_profile_for_one_machine(tmp: &Path, dir: &Path, listen: SocketAddr) -> String {
    std::fs::create_dir(dir).unwrap();
    let base = build_bootable(dir, &pseudo_random(3 << 20, 11));
    let rescue = build(
        dir,
        "overlay",
        "rescue",
        "rescue.cpio.gz",
        &pseudo_random(50_000, 12),
        &[&base],
    );
    std::fs::write(
        tmp.join("boot.yml"),
        "default: plain\nprofiles:\n  - name: plain\n  - name: rescue\n    overlays: [rescue]\n    args: rootsize=1G\n    macs: ['52:54:00:AA:00:01']\n",
    )
    .unwrap();
    let out = tmp.join("www");
    let url = format!("http://{listen}/");
    let done = publish(
        tmp,
        &[
            out.to_str().unwrap(),
            "--dir",
            dir.to_str().unwrap(),
            "--boot-config",
            "boot.yml",
            "--public-url",
            &url,
        ],
    );
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(
        String::from_utf8_lossy(&done.stdout).contains("published 4 artifacts, 1 machine scripts"),
        "{}",
        String::from_utf8_lossy(&done.stdout)
    );
    for f in [
        "boot.ipxe",
        "default.ipxe",
        "boot/52-54-00-aa-00-01.ipxe",
        "nginx.conf",
    ] {
        assert!(out.join(f).is_file(), "{f} missing from the tree");
    }
    rescue.sha256.clone()
}

/// The dispatcher; the named machine: its own profile; an unknown one: the
/// default (try_files). Gives both scripts.
fn each_machine_gets_its_script_or_the_default(
    nginx: SocketAddr,
    rescue: &str,
) -> (String, String) {
    let dispatcher = get(nginx, "/boot.ipxe");
    assert_eq!(dispatcher.status, 200);
    assert!(
        dispatcher.text().contains(
            "chain --replace boot/${netX/mac:hexhyp}.ipxe || chain --replace default.ipxe"
        ),
        "{}",
        dispatcher.text()
    );
    let own = get(nginx, "/boot/52-54-00-aa-00-01.ipxe").text();
    assert!(
        own.contains("profile rescue") && own.contains(" rootsize=1G"),
        "{own}"
    );
    assert_eq!(
        kernel_arg(&own, "overlayfs.sha256").as_deref(),
        Some(rescue)
    );
    assert_eq!(
        kernel_arg(&own, "mkimage.api"),
        None,
        "a static tree has no node registry to report to: {own}"
    );
    let other = get(nginx, "/boot/52-54-00-00-00-99.ipxe");
    assert_eq!(other.status, 200);
    assert!(
        other.text().contains("profile plain") && !other.text().contains("overlayfs="),
        "{}",
        other.text()
    );
    (own, other.text())
}

/// The kernel, initrd, basefs and overlay URLs a script names.
fn artifact_urls(script: &str) -> Vec<String> {
    let kernel_line = script.lines().find(|l| l.starts_with("kernel ")).unwrap();
    let mut urls: Vec<String> = vec![kernel_line.split_whitespace().nth(1).unwrap().to_string()];
    urls.push(
        script
            .lines()
            .find_map(|l| l.strip_prefix("initrd --name initrd "))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string(),
    );
    urls.push(kernel_arg(script, "basefs").unwrap());
    urls.extend(
        kernel_arg(script, "overlayfs")
            .into_iter()
            .flat_map(|o| o.split(',').map(String::from).collect::<Vec<_>>()),
    );
    urls
}

/// Every artifact the scripts name is there, by content, immutable.
fn every_artifact_the_scripts_name_is_there_by_content(nginx: SocketAddr, scripts: &[&str]) {
    for script in scripts {
        for u in artifact_urls(script) {
            assert!(u.starts_with(&format!("http://{nginx}/sha256/")), "{u}");
            let path = url_path(&u);
            let want = path.split('/').nth(2).unwrap();
            let (status, _, sha) = download(nginx, path);
            assert_eq!((status, sha.as_str()), (200, want), "{path}");
            let head = serve_support::request(nginx, "HEAD", path, &[]);
            assert!(
                head.header("Cache-Control")
                    .is_some_and(|c| c.contains("immutable")),
                "{:?}",
                head.headers
            );
        }
    }
}

#[test]
fn bad_input_is_refused_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    let out = tmp.path().join("www");
    let o = |args: &[&str]| publish(tmp.path(), args);
    let url = "http://10.0.0.5:8081";
    let r = o(&[
        out.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
        "--public-url",
        url,
    ]);
    assert!(!r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("; build one first"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    build_bootable(&dir, b"basefs");
    let r = o(&[
        out.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
        "--public-url",
        "http://x/$y",
    ]);
    assert_eq!(
        r.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("--public-url"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // A basefs changed under its manifest entry (a build in progress).
    std::fs::write(dir.join("base.squashfs"), b"changed").unwrap();
    std::fs::remove_dir_all(dir.join(".state")).unwrap();
    let r = o(&[
        out.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
        "--public-url",
        url,
    ]);
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("a build in progress?"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(!out.join("boot.ipxe").exists() && !out.join("default.ipxe").exists());
}

/// A build dir and the tree `mkimage publish` keeps in TMP/www.
struct Tree {
    tmp: PathBuf,
    dir: PathBuf,
    out: PathBuf,
}

impl Tree {
    /// The boot config: the rescue profile for `macs`.
    fn config(&self, macs: &str) {
        std::fs::write(self.tmp.join("boot.yml"), format!("profiles:\n  - name: plain\n  - name: rescue\n    overlays: [rescue]\n    macs: [{macs}]\n")).unwrap()
    }

    /// Publish with `--grace SECONDS`; gives what it said.
    fn republish(&self, grace: &str) -> String {
        let o = publish(
            &self.tmp,
            &[
                self.out.to_str().unwrap(),
                "--dir",
                self.dir.to_str().unwrap(),
                "--boot-config",
                "boot.yml",
                "--public-url",
                "http://10.0.0.5:8081",
                "--grace",
                grace,
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn rescue(&self, bytes: &[u8], base: &Entry) -> Entry {
        build(
            &self.dir,
            "overlay",
            "rescue",
            "rescue.cpio.gz",
            bytes,
            &[base],
        )
    }

    fn object(&self, e: &Entry) -> PathBuf {
        self.out.join("sha256").join(&e.sha256)
    }

    fn marked(&self, e: &Entry) -> bool {
        self.object(e).join(".superseded").exists()
    }
}

#[test]
fn republishing_removes_dropped_machines_at_once_and_old_artifacts_after_the_grace() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = Tree {
        tmp: tmp.path().to_path_buf(),
        dir: tmp.path().join("builds"),
        out: tmp.path().join("www"),
    };
    std::fs::create_dir(&tree.dir).unwrap();
    let base = build_bootable(&tree.dir, b"basefs");
    let v1 = tree.rescue(b"rescue v1", &base);
    tree.config("'52:54:00:aa:00:01', '52:54:00:aa:00:02'");
    tree.republish("3600");
    assert!(tree.out.join("boot/52-54-00-aa-00-02.ipxe").is_file());
    let v2 = a_dropped_machine_goes_at_once_the_old_overlay_stays_marked(&tree, &base, &v1);
    back_to_v1_then_past_the_grace_v2_goes(&tree, &base, &v1, &v2);
    nginx_never_serves_the_marks_or_a_file_being_written(&tree, &v1);
}

/// A new overlay, and one machine dropped from the config: its script goes
/// at once (it gets the default); the old overlay stays, marked. Gives the
/// new overlay.
fn a_dropped_machine_goes_at_once_the_old_overlay_stays_marked(
    tree: &Tree,
    base: &Entry,
    v1: &Entry,
) -> Entry {
    let out = &tree.out;
    let v2 = tree.rescue(b"rescue v2", base);
    tree.config("'52:54:00:aa:00:01'");
    let said = tree.republish("3600");
    assert!(
        said.contains("removed 1 scripts")
            && said.contains(
                "1 artifacts no script names kept for --grace 3600s, 0 older ones removed"
            ),
        "{said}"
    );
    assert!(
        !out.join("boot/52-54-00-aa-00-02.ipxe").exists()
            && out.join("boot/52-54-00-aa-00-01.ipxe").is_file()
    );
    assert!(
        std::fs::read_to_string(out.join("boot/52-54-00-aa-00-01.ipxe"))
            .unwrap()
            .contains(&v2.sha256)
    );
    assert!(
        tree.object(v1).join("rescue.cpio.gz").is_file() && tree.marked(v1),
        "v1 kept for the grace period, marked"
    );
    assert!(!tree.marked(&v2) && !tree.marked(base));
    v2
}

/// Back to v1's bytes: v1 is named again (unmarked), v2 is superseded.
/// Past the grace: v2 goes, everything a script names stays.
fn back_to_v1_then_past_the_grace_v2_goes(tree: &Tree, base: &Entry, v1: &Entry, v2: &Entry) {
    tree.rescue(b"rescue v1", base);
    tree.republish("3600");
    assert!(!tree.marked(v1) && tree.marked(v2));
    let said = tree.republish("0");
    assert!(
        said.contains("0 artifacts no script names kept for --grace 0s, 1 older ones removed"),
        "{said}"
    );
    assert!(
        !tree.object(v2).exists()
            && tree.object(v1).join("rescue.cpio.gz").is_file()
            && tree.object(base).join("base.squashfs").is_file()
    );
    let again = tree.republish("0");
    assert!(
        !again.contains("removed"),
        "a tidy tree has nothing more to remove: {again}"
    );
}

/// nginx never serves the marks or a file being written.
fn nginx_never_serves_the_marks_or_a_file_being_written(tree: &Tree, v1: &Entry) {
    require("nginx", "nginx");
    let out = &tree.out;
    std::fs::write(tree.object(v1).join(".superseded"), b"").unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let conf = std::fs::read_to_string(out.join("nginx.conf"))
        .unwrap()
        .replace("listen 8081;", &format!("listen {listen};"));
    let nginx = Nginx::start(&tree.tmp, listen, &conf);
    assert_eq!(
        get(nginx.addr, &format!("/sha256/{}/rescue.cpio.gz", v1.sha256)).status,
        200
    );
    assert_eq!(
        get(nginx.addr, &format!("/sha256/{}/.superseded", v1.sha256)).status,
        404
    );
    std::fs::write(out.join(".default.ipxe.x.tmp"), b"half").unwrap();
    assert_eq!(get(nginx.addr, "/.default.ipxe.x.tmp").status, 404);
    std::fs::write(out.join("boot/.52-54-00-aa-00-01.ipxe.x.tmp"), b"half").unwrap();
    assert_eq!(
        get(nginx.addr, "/boot/.52-54-00-aa-00-01.ipxe.x.tmp").status,
        404,
        "nor one being written under boot/"
    );
}
