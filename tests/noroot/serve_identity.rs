//! Per-node identity through a real `mkimage serve` and real clients
//! (curl from loopback addresses of its own, one per "machine"): each
//! machine's boot script names its node overlay last, the overlay holds
//! its hostname, key and vars, and only that machine may fetch it; a node
//! whose template fails boots without one and its record says why. And
//! `mkimage check --boot-config` exits 2 naming file:line:col.

use crate::common;
use crate::serve_support;

use std::io::Read;
use std::path::Path;
use std::process::Command;

use serve_support::{build_bootable, kernel_arg, require, sha256_hex, url_path, Server};

const A: &str = "52:54:00:12:34:56";
const B: &str = "52:54:00:12:34:57";
const C: &str = "52:54:00:12:34:58";

const BOOT: &str = "default: discovery\nvars: {site: lab1}\nprofiles:\n  - name: discovery\n    vars: {role: compute}\nnodes:\n  lab-node-07:\n    mac: \"52:54:00:12:34:56\"\n    ssh_authorized_keys: [\"ssh-ed25519 AAAAkeyA admin@lab\"]\n    vars: {rack: r12}\n  lab-node-08:\n    mac: \"52:54:00:12:34:57\"\n    hostname: db08\n    vars: {rack: r14}\n  lab-node-09:\n    mac: \"52:54:00:12:34:58\"\n    vars: {rack: r15}\n";

/// GET `path` from the source address `from` (a loopback address), with curl.
fn curl_from(server: &Server, from: &str, path: &str) -> (u16, Vec<u8>) {
    curl_with(server, from, path, None)
}

/// `curl_from`, with a boot token as `Authorization: Bearer` when given.
fn curl_with(server: &Server, from: &str, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let o = Command::new("curl")
        .args(["-sS", "--interface", from, "-o"])
        .arg(out.path())
        .args(auth.iter().flat_map(|a| ["-H", a.as_str()]))
        .args(["-w", "%{http_code}"])
        .arg(server.url(path))
        .output()
        .expect("curl");
    let code = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let mut body = Vec::new();
    std::fs::File::open(out.path())
        .unwrap()
        .read_to_end(&mut body)
        .unwrap();
    (code, body)
}

/// The node overlay URL a boot script names last, and its sha256.
fn node_overlay(script: &str) -> (String, String) {
    let urls = kernel_arg(script, "overlayfs").expect("overlayfs= on the kernel line");
    let shas = kernel_arg(script, "overlayfs.sha256").unwrap();
    let url = urls.rsplit(',').next().unwrap().to_string();
    let sha = shas.rsplit(',').next().unwrap().to_string();
    assert!(
        url.contains("/node/") && url.ends_with("/node.cpio.gz"),
        "{script}"
    );
    (url_path(&url).to_string(), sha)
}

fn files(gz: &[u8]) -> std::collections::BTreeMap<String, String> {
    mkimage::archive::cpio::read_newc(flate2::read::GzDecoder::new(gz))
        .unwrap()
        .into_iter()
        .map(|e| (e.path, String::from_utf8_lossy(&e.data).into_owned()))
        .collect()
}

#[test]
fn each_machine_gets_its_own_overlay_and_no_other() {
    require("curl", "curl");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    build_bootable(&dir, b"base");
    std::fs::create_dir_all(tmp.path().join("t/etc")).unwrap();
    std::fs::write(tmp.path().join("t/etc/hostname"), "{{ hostname }}\n").unwrap();
    std::fs::write(
        tmp.path().join("t/etc/rack"),
        "{% if name == 'lab-node-09' %}{{ nosuchvar }}{% endif %}{{ rack }} {{ role }} {{ site }}\n",
    )
    .unwrap();
    let boot = tmp.path().join("boot.yml");
    std::fs::write(&boot, format!("node_templates: t\n{BOOT}")).unwrap();
    let server = Server::start(tmp.path(), &dir, &["--boot-config", boot.to_str().unwrap()]);

    // Machine A (from 127.0.0.1) and machine B (from 127.0.0.2) boot.
    let (code, script_a) = curl_from(&server, "127.0.0.1", &format!("/boot.ipxe?mac={A}"));
    assert_eq!(code, 200);
    let script_a = String::from_utf8(script_a).unwrap();
    let (path_a, sha_a) = node_overlay(&script_a);
    let token_a = kernel_arg(&script_a, "mkimage.token").expect("A's boot token");
    let (_, script_b) = curl_from(&server, "127.0.0.2", &format!("/boot.ipxe?mac={B}"));
    let script_b = String::from_utf8(script_b).unwrap();
    let (path_b, _) = node_overlay(&script_b);
    let token_b = kernel_arg(&script_b, "mkimage.token").expect("B's boot token");

    let (code, overlay) = curl_with(&server, "127.0.0.1", &path_a, Some(&token_a));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&overlay));
    assert_eq!(sha256_hex(&overlay), sha_a, "served as the script names it");
    let f = files(&overlay);
    assert_eq!(f["etc/hostname"], "lab-node-07\n");
    assert_eq!(f["etc/rack"], "r12 compute lab1\n");

    // Another machine asks for A's overlay with its own token: refused; with
    // no token, even from A's address: refused; for its own: served.
    let (code, body) = curl_with(&server, "127.0.0.2", &path_a, Some(&token_b));
    assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
    let (code, _) = curl_from(&server, "127.0.0.1", &path_a);
    assert_eq!(code, 403, "no boot token");
    let (code, _) = curl_with(&server, "127.0.0.3", &path_a, Some("00ff"));
    assert_eq!(code, 403, "a token never issued");
    let (code, overlay_b) = curl_with(&server, "127.0.0.2", &path_b, Some(&token_b));
    assert_eq!(code, 200);
    assert_eq!(files(&overlay_b)["etc/hostname"], "db08\n");
    // A path naming A with B's content address: not A's overlay.
    let forged = path_b.replace(&B.to_string(), A);
    assert_eq!(
        curl_with(&server, "127.0.0.1", &forged, Some(&token_a)).0,
        404
    );

    // C's template fails: it boots without a node overlay, marked failed.
    let (_, script_c) = curl_from(&server, "127.0.0.3", &format!("/boot.ipxe?mac={C}"));
    let script_c = String::from_utf8(script_c).unwrap();
    assert!(
        script_c.starts_with("#!ipxe") && !script_c.contains("/node/"),
        "{script_c}"
    );
    let r = server.get_admin(&format!("/api/nodes/{C}"));
    let record: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(record["stage"], "failed", "{record}");
    let reason = record["failure"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("lab-node-09")
            && reason.contains("/etc/rack")
            && reason.contains("undefined"),
        "{reason}"
    );
}

#[test]
fn check_boot_config_names_the_duplicate() {
    let p = common::Project::new();
    p.write("vars/boot.yml", BOOT);
    let o = p.run(&["check", "--boot-config", "vars/boot.yml"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    p.write(
        "vars/dup.yml",
        &BOOT.replace("52:54:00:12:34:58", "52-54-00-12-34-56"),
    );
    let o = p.run(&["check", "--boot-config", "vars/dup.yml"]);
    common::assert_clean_failure(
        &p,
        &o,
        2,
        &["vars/dup.yml:16:5: nodes.lab-node-09.mac", "lab-node-07"],
    );

    // The inventory in a file the boot config includes: its nodes count,
    // and its mistakes name that file's line and column.
    let split = BOOT.find("  lab-node-08:").unwrap();
    p.write(
        "vars/main.yml",
        &format!("{}include: lab.yml\n", &BOOT[..split]),
    );
    p.write("vars/lab.yml", &format!("nodes:\n{}", &BOOT[split..]));
    let o = p.run(&["check", "--boot-config", "vars/main.yml"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(
        common::stdout(&o).contains("3 nodes"),
        "{}",
        common::stdout(&o)
    );
    // The server reads them too: an included node gets its node overlay.
    let dir = p.path().join("served");
    std::fs::create_dir(&dir).unwrap();
    build_bootable(&dir, b"base");
    let main = p.path().join("vars/main.yml");
    let server = Server::start(p.path(), &dir, &["--boot-config", main.to_str().unwrap()]);
    let (_, script) = curl_from(&server, "127.0.0.1", &format!("/boot.ipxe?mac={B}"));
    let (path, _) = node_overlay(&String::from_utf8(script).unwrap());
    assert!(path.starts_with(&format!("/node/{B}/")), "{path}");
    drop(server);
    p.write(
        "vars/lab.yml",
        &format!("nodes:\n{}", &BOOT[split..]).replace("52:54:00:12:34:58", "52:54:00:12:34:56"),
    );
    let o = p.run(&["check", "--boot-config", "vars/main.yml"]);
    common::assert_clean_failure(
        &p,
        &o,
        2,
        &["vars/lab.yml:7:5: nodes.lab-node-09.mac", "lab-node-07"],
    );
    p.write("vars/lab.yml", "nodes: {}\nprofiles: []\n");
    let o = p.run(&["check", "--boot-config", "vars/main.yml"]);
    common::assert_clean_failure(&p, &o, 2, &["vars/lab.yml:2:1", "profiles"]);
}

#[test]
fn publish_writes_each_node_s_overlay_and_script() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    build_bootable(&dir, b"base");
    let boot = tmp.path().join("boot.yml");
    std::fs::write(&boot, BOOT).unwrap();
    let out = tmp.path().join("tree");
    let o = common::mkimage()
        .arg("publish")
        .arg(&out)
        .arg("--dir")
        .arg(&dir)
        .arg("--boot-config")
        .arg(&boot)
        .args(["--public-url", "http://10.0.0.5/tree"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    for (mac, hostname) in [(A, "lab-node-07"), (B, "db08")] {
        let script =
            std::fs::read_to_string(out.join(format!("boot/{}.ipxe", mac.replace(':', "-"))))
                .unwrap();
        let (path, sha) = node_overlay(&script);
        let rel = path.strip_prefix("/tree/").unwrap();
        let bytes = std::fs::read(out.join(rel)).unwrap();
        assert_eq!(sha256_hex(&bytes), sha);
        assert_eq!(files(&bytes)["etc/hostname"], format!("{hostname}\n"));
    }
}

/// `lines` run by busybox sh with the init's `fetch.sh`, `media.sh` and `report.sh`
/// sourced and busybox's applets alone on PATH (as in the initrd); stdout.
fn init_shell(tmp: &std::path::Path, lines: &str) -> String {
    let bin = tmp.join("busybox-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for applet in [
        "sh",
        "timeout",
        "wget",
        "tr",
        "od",
        "head",
        "sed",
        "cat",
        "printf",
        "grep",
        "echo",
        "rm",
        "sha256sum",
        "cut",
    ] {
        let _ = std::os::unix::fs::symlink("/bin/busybox", bin.join(applet));
    }
    let initrd = concat!(env!("CARGO_MANIFEST_DIR"), "/initrd");
    let script = format!(
        "say() {{ echo \"say: $*\"; }}\n. {initrd}/fetch.sh\n. {initrd}/media.sh\n. {initrd}/report.sh\n{lines}\n"
    );
    let o = Command::new(bin.join("sh"))
        .arg("-c")
        .arg(&script)
        .env_clear()
        .env("PATH", &bin)
        .output()
        .unwrap();
    assert!(o.status.success(), "init shell: {o:?}");
    String::from_utf8(o.stdout).unwrap()
}

/// A medium made by `iso --server` (or a UKI) has no token on its command
/// line: the init fetches its MAC's boot script for one, and takes the node
/// overlay that script names (its URL on the same server, its sha256) as
/// its last overlay, which the token then fetches. Fallback servers are
/// never asked for a node overlay.
#[test]
fn a_medium_boot_takes_its_node_overlay_from_the_boot_script() {
    require("curl", "curl");
    require("busybox", "busybox");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    build_bootable(&dir, b"base");
    let boot = tmp.path().join("boot.yml");
    std::fs::write(&boot, BOOT).unwrap();
    let server = Server::start(tmp.path(), &dir, &["--boot-config", boot.to_str().unwrap()]);
    the_init_adds_the_scripts_node_overlay(tmp.path(), &server);
    the_init_takes_no_overlay_unpaired_or_unasked(tmp.path(), &server);
    a_node_overlay_under_another_url_is_not_taken(tmp.path(), &dir, &boot);
    // Mirrors: any image on a fallback server, but a node overlay only from
    // the server whose token this boot holds.
    let out = init_shell(
        tmp.path(),
        "SERVERS=http://a:1,http://b:2\nmirrors http://a:1/sha256/ab/basefs.squashfs\nmirrors http://a:1/node/52:54:00:12:34:56/ab/node.cpio.gz",
    );
    assert_eq!(
        out,
        "http://a:1/sha256/ab/basefs.squashfs\nhttp://b:2/sha256/ab/basefs.squashfs\nhttp://a:1/node/52:54:00:12:34:56/ab/node.cpio.gz\n"
    );
}

/// The init, asked by mkimage.node-overlay=script, adds the node overlay
/// its boot script names, and that overlay is the machine's own.
fn the_init_adds_the_scripts_node_overlay(tmp: &Path, server: &Server) {
    let api = server.url("");
    let api = api.trim_end_matches('/');
    let out = init_shell(
        tmp,
        &format!(
            "API={api}\nNODE_OVERLAY=script\nBOOTIF=01-52-54-00-12-34-57\nOVERLAYS=/mkimage/a.cpio.gz\nOVERLAYS_SHA={a}\nreport_from eth0\nreport_token\necho \"overlays=$OVERLAYS\"\necho \"shas=$OVERLAYS_SHA\"\necho \"token=$TOKEN\"",
            a = "a".repeat(64)
        ),
    );
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {out}"))
            .to_string()
    };
    let overlays = field("overlays");
    let (first, node_url) = overlays.split_once(',').expect(&out);
    assert_eq!(first, "/mkimage/a.cpio.gz");
    assert!(node_url.starts_with(&format!("{api}/node/{B}/")), "{out}");
    let shas = field("shas");
    let sha = shas.split(',').nth(1).expect(&out);
    let token = field("token");
    assert_eq!(token.len(), 32, "{out}");
    assert!(
        out.contains(&format!(
            "say: node overlay from the boot script of 52-54-00-12-34-57: {node_url}"
        )),
        "{out}"
    );
    let (code, bytes) = curl_with(server, "127.0.0.1", url_path(node_url), Some(&token));
    assert_eq!(code, 200);
    assert_eq!(sha256_hex(&bytes), sha);
    assert_eq!(files(&bytes)["etc/hostname"], "db08\n");
}

/// Overlays and digests that do not pair up: nothing is added. A command
/// line that does not ask for it (a signed UKI's): not taken.
fn the_init_takes_no_overlay_unpaired_or_unasked(tmp: &Path, server: &Server) {
    let api = server.url("");
    let api = api.trim_end_matches('/');
    let out = init_shell(
        tmp,
        &format!("API={api}\nNODE_OVERLAY=script\nBOOTIF=01-52-54-00-12-34-57\nOVERLAYS=/mkimage/a.cpio.gz\nreport_from eth0\nreport_token\necho \"overlays=$OVERLAYS\""),
    );
    assert!(out.contains("overlays=/mkimage/a.cpio.gz\n"), "{out}");
    // A command line that does not ask for it (a signed UKI's): not taken.
    let out = init_shell(
        tmp,
        &format!("API={api}\nBOOTIF=01-52-54-00-12-34-57\nreport_from eth0\nreport_token\necho \"overlays=$OVERLAYS token=${{#TOKEN}}\""),
    );
    assert!(
        out.contains("not taken: the command line has no mkimage.node-overlay=script")
            && out.contains("overlays= token=32\n"),
        "{out}"
    );
}

/// A server that calls itself by another URL than the medium's: its node
/// overlay URL is not under mkimage.api=, so the token stays home.
fn a_node_overlay_under_another_url_is_not_taken(tmp: &Path, dir: &Path, boot: &Path) {
    let public = Server::start(
        tmp,
        dir,
        &[
            "--boot-config",
            boot.to_str().unwrap(),
            "--public-url",
            "http://boot.lab:8080",
        ],
    );
    let out = init_shell(
        tmp,
        &format!("API={}\nNODE_OVERLAY=script\nBOOTIF=01-52-54-00-12-34-57\nreport_from eth0\nreport_token\necho \"overlays=$OVERLAYS\"", public.url("").trim_end_matches('/')),
    );
    assert!(
        out.contains("say: the boot script's node overlay http://boot.lab:8080/node/")
            && out.contains("overlays=\n"),
        "{out}"
    );
}

/// A server restart forgets every boot token (they live in its memory
/// only). A machine whose script came before it is refused its node overlay
/// once; its init then fetches its boot script again for a fresh token (as
/// a medium boot does), and gets the same overlay at the same URL. Once per
/// boot: a second refusal fails the download, with the server's reason.
#[test]
fn a_node_overlay_is_fetched_again_with_a_fresh_token_after_a_server_restart() {
    require("curl", "curl");
    require("busybox", "busybox");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    build_bootable(&dir, b"base");
    let boot = tmp.path().join("boot.yml");
    std::fs::write(&boot, BOOT).unwrap();
    let args = ["--boot-config", boot.to_str().unwrap()];
    let mut before = Server::start(tmp.path(), &dir, &args);
    let (_, script) = curl_from(&before, "127.0.0.1", &format!("/boot.ipxe?mac={B}"));
    let script = String::from_utf8(script).unwrap();
    let (path, sha) = node_overlay(&script);
    let old = kernel_arg(&script, "mkimage.token").unwrap();
    assert!(before.stop().success());

    let mut after = Server::start(tmp.path(), &dir, &args);
    assert_eq!(curl_with(&after, "127.0.0.1", &path, Some(&old)).0, 403);
    let api = after.url("");
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let dest = tmp.path().join("node.cpio.gz");
    let fetch = format!(
        "API={api}\nRUN_DIR={run}\nTOKEN={old}\nBOOTIF=01-52-54-00-12-34-57\nreport_from eth0\nif get {api}{path} {dest}; then sha256sum {dest} | cut -d' ' -f1; else echo failed; fi",
        api = api.trim_end_matches('/'),
        run = run.display(),
        dest = dest.display(),
    );
    let out = init_shell(tmp.path(), &fetch);
    assert!(
        out.contains("say: the server refused the node overlay"),
        "{out}"
    );
    assert!(out.ends_with(&format!("{sha}\n")), "{out}");
    let fresh = std::fs::read_to_string(run.join("token")).unwrap();
    assert!(fresh.trim().len() == 32 && fresh.trim() != old, "{fresh}");
    assert_eq!(
        files(&std::fs::read(&dest).unwrap())["etc/hostname"],
        "db08\n"
    );

    // Restarted again: this boot already renewed its token once.
    assert!(after.stop().success());
    let again = Server::start(tmp.path(), &dir, &args);
    let api2 = again.url("");
    let out = init_shell(
        tmp.path(),
        &fetch.replace(api.trim_end_matches('/'), api2.trim_end_matches('/')),
    );
    assert!(out.ends_with("failed\n"), "{out}");
    assert!(!out.contains("say: the server refused"), "{out}");
}
