//! The node registry through a real `mkimage serve` and the clients the
//! machines use: busybox `wget` (the init's stage reports), curl (the
//! booted system's `booted` unit and the discovery overlay's inventory),
//! raw HTTP/1.1 for what those clients will not send. Records land in
//! `DIR/.state/nodes`, survive a restart, are never served as files, and
//! bad reports change nothing; `mkimage nodes` lists them; a discovered
//! machine is selected by its inventory facts.

use crate::serve_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serve_support::{
    build_bootable, curl, get, get_with, init_reports, kernel_arg, require, Server,
};

pub(crate) const MAC: &str = "52:54:00:12:34:56";
pub(crate) const INVENTORY: &str = r#"{"system":{"vendor":"QEMU","product":"Standard PC (i440FX + PIIX, 1996)","serial":""},"cpu":{"model":"QEMU Virtual CPU","count":2},"memory_kb":1500000,"nics":[{"name":"ens3","mac":"52:54:00:12:34:56","driver":"virtio_net","speed_mbps":-1,"link":true}],"disks":[{"name":"vda","size_bytes":8589934592,"model":"","rotational":true}]}"#;

/// A served dir with a bootable set and a boot config whose `vms` profile
/// selects QEMU machines by their inventory.
pub(crate) fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    build_bootable(&dir, b"base");
    std::fs::create_dir(tmp.path().join("vars")).unwrap();
    std::fs::write(
        tmp.path().join("vars/boot.yml"),
        "default: discovery\nprofiles:\n  - name: discovery\n  - name: vms\n    args: vm=1\n    match: {vendor: qemu, model: 'Standard PC*'}\n",
    )
    .unwrap();
    (tmp, dir)
}

pub(crate) fn record_file(dir: &Path) -> PathBuf {
    dir.join(".state/nodes/52-54-00-12-34-56.json")
}

fn record(server: &Server) -> serde_json::Value {
    let r = server.get_admin(&format!("/api/nodes/{MAC}"));
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

fn stages(record: &serde_json::Value) -> Vec<String> {
    record["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap().to_string())
        .collect()
}

/// Wait (on the record, not a clock) until the record's stages satisfy `done`.
fn wait_for(server: &Server, what: &str, done: impl Fn(&[String]) -> bool) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let r = record(server);
        if done(&stages(&r)) {
            return r;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{what}: {r}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mkimage_nodes(dir: &Path, json: bool) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mkimage"));
    c.args(["nodes", "--dir"]).arg(dir);
    if json {
        c.arg("--json");
    }
    c.output().unwrap()
}

#[test]
fn a_boot_is_recorded_stage_by_stage_then_selected_by_its_facts_and_survives_a_restart() {
    require("busybox", "busybox");
    require("curl", "curl");
    let (tmp, dir) = setup();
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off"]);
    let urls = a_first_boot_fails(tmp.path(), &server);
    a_second_boot_gets_through(tmp.path(), &server, &urls);
    let list = the_api_and_pages_list_the_node(&server);
    mkimage_nodes_says_what_the_api_says(&dir, &list);
    the_records_are_never_served(&server, &dir);
    let r = the_discovered_machine_is_selected_by_its_facts(&server);
    drop(server);
    a_restart_reads_the_same_records(tmp.path(), &dir, &r);
}

/// The kernel and initrd URLs of a boot script.
fn kernel_and_initrd(script: &str) -> (String, String) {
    let word = |prefix: &str, n: usize| {
        script
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap()
            .split_whitespace()
            .nth(n)
            .unwrap()
            .to_string()
    };
    (word("kernel ", 1), word("initrd ", 3))
}

/// A first boot that fails; gives the kernel and initrd URLs.
fn a_first_boot_fails(tmp: &Path, server: &Server) -> (String, String) {
    let base = format!("http://{}", server.http);
    // 1. script: the default profile (nothing selects an unknown machine),
    // and where to report.
    let script = get(server.http, &format!("/boot.ipxe?mac={MAC}")).text();
    assert_eq!(
        kernel_arg(&script, "mkimage.api").as_deref(),
        Some(base.as_str()),
        "{script}"
    );
    assert!(!script.contains(" vm=1"), "{script}");
    let token = kernel_arg(&script, "mkimage.token").expect("a boot token");
    let r = record(server);
    assert_eq!(
        (r["profile"].as_str(), r["new"].as_bool(), stages(&r)),
        (Some("discovery"), Some(true), vec!["script".to_string()])
    );
    assert_eq!(r["ip"], "127.0.0.1");
    // 2, 3. kernel and initrd, from content-addressed URLs (no MAC in them):
    // put on the record of the machine whose script went to that address.
    let (kernel, initrd) = kernel_and_initrd(&script);
    assert!(
        !kernel.contains("52:54") && !initrd.contains("52:54"),
        "{script}"
    );
    assert_eq!(curl(&["-I", &kernel]).0, 200, "HEAD");
    assert_eq!(curl(&[&kernel]).0, 200);
    assert_eq!(curl(&[&initrd]).0, 200);
    wait_for(server, "kernel and initrd", |s| s.len() == 3);
    // 4, 5. the init's steps up to a failure with its reason, sent by report.sh.
    init_reports(tmp, (&base, &token), "report network\nreport download\nreport failed 'download basefs' \"sha256 mismatch: expected ab,
got cd\"");
    let r = wait_for(server, "the init's reports", |s| {
        s.last().map(String::as_str) == Some("failed") && s.len() == 6
    });
    assert_eq!(
        stages(&r),
        ["script", "kernel", "initrd", "network", "download", "failed"]
    );
    assert_eq!(
        (r["stage"].as_str(), r["failure"]["step"].as_str()),
        (Some("failed"), Some("download basefs"))
    );
    assert_eq!(
        r["failure"]["reason"], "sha256 mismatch: expected ab, got cd",
        "control characters became spaces"
    );
    (kernel, initrd)
}

/// A second boot that gets through: every stage, in boot order.
fn a_second_boot_gets_through(tmp: &Path, server: &Server, (kernel, initrd): &(String, String)) {
    let base = format!("http://{}", server.http);
    let script = get(server.http, &format!("/boot.ipxe?mac={MAC}")).text();
    let token = kernel_arg(&script, "mkimage.token").expect("a boot token");
    let auth = format!("Authorization: Bearer {token}");
    assert_eq!(curl(&[kernel]).0, 200);
    assert_eq!(curl(&[initrd]).0, 200);
    init_reports(
        tmp,
        (&base, &token),
        "report network\nreport download\nreport verified\nreport mounted\nreport switch-root",
    );
    wait_for(server, "the init's reports", |s| {
        s.last().map(String::as_str) == Some("switch-root") && s.len() == 8
    });
    // 6. booted, from the base role's unit; 7. the inventory, as the discovery overlay posts it (curl).
    let booted = format!("{base}/api/nodes/{MAC}/event?stage=booted");
    assert_eq!(curl(&["-fsS", "-m", "5", "-H", &auth, &booted]).0, 200);
    let (code, body) = curl(&[
        "-fsS",
        "-m",
        "10",
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        INVENTORY,
        &format!("{base}/api/nodes/{MAC}/inventory"),
    ]);
    assert_eq!(code, 200, "{body}");
    let r = record(server);
    assert_eq!(
        stages(&r),
        [
            "script",
            "kernel",
            "initrd",
            "network",
            "download",
            "verified",
            "mounted",
            "switch-root",
            "booted",
            "inventory"
        ]
    );
    assert_eq!(
        (r["stage"].as_str(), r["boots"].as_u64()),
        (Some("inventory"), Some(2))
    );
    assert_eq!(
        r["failure"]["reason"], "sha256 mismatch: expected ab, got cd",
        "the last failure stays on the record"
    );
    assert_eq!(r["inventory"]["system"]["vendor"], "QEMU");
}

/// The listings: /api/nodes, the status page, /metrics. Gives /api/nodes.
fn the_api_and_pages_list_the_node(server: &Server) -> serde_json::Value {
    let list: serde_json::Value =
        serde_json::from_slice(&server.get_admin("/api/nodes").body).unwrap();
    let n = &list["nodes"][0];
    assert_eq!(
        (
            n["mac"].as_str(),
            n["vendor"].as_str(),
            n["cpus"].as_u64(),
            n["disks"].as_u64(),
            n["nics"].as_u64()
        ),
        (Some(MAC), Some("QEMU"), Some(2), Some(1), Some(1)),
        "{list}"
    );
    assert_eq!(
        n["last_failure"], "download basefs: sha256 mismatch: expected ab, got cd",
        "{list}"
    );
    let open = get(server.http, "/").text();
    assert!(
        !open.contains(MAC) && open.contains("action=\"/api/login\""),
        "without the admin token, no machines and a sign-in form: {open}"
    );
    let page = server.get_admin("/").text();
    assert!(
        page.contains("<h2>Nodes</h2>")
            && page.contains(MAC)
            && page.contains("QEMU")
            && page.contains("sha256 mismatch"),
        "{page}"
    );
    let metrics = get(server.http, "/metrics").text();
    assert!(
        metrics.contains("mkimage_nodes{stage=\"inventory\"} 1\n")
            && metrics.contains("mkimage_nodes{stage=\"booted\"} 0\n"),
        "{metrics}"
    );
    assert!(metrics.contains("mkimage_nodes_new 1\n"), "{metrics}");
    list
}

fn mkimage_nodes_says_what_the_api_says(dir: &Path, list: &serde_json::Value) {
    let o = mkimage_nodes(dir, true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cli: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        &cli, list,
        "mkimage nodes --json says what GET /api/nodes says"
    );
    let table = String::from_utf8_lossy(&mkimage_nodes(dir, false).stdout).into_owned();
    let row = table.lines().nth(1).unwrap_or_default();
    for cell in [
        MAC,
        "127.0.0.1",
        "QEMU",
        "Standard PC (i440FX + PIIX, 1996)",
        "1464 MiB",
        "1 (8 GB)",
        "discovery (new)",
        "inventory",
        "download basefs: sha256 mismatch",
    ] {
        assert!(row.contains(cell), "`{cell}` not in\n{table}");
    }
}

/// The records are the server's state, never a file it serves.
fn the_records_are_never_served(server: &Server, dir: &Path) {
    assert!(record_file(dir).is_file());
    for path in [
        "/.state/nodes/52-54-00-12-34-56.json",
        "/.state/nodes/",
        "/%2Estate/nodes/52-54-00-12-34-56.json",
    ] {
        let r = get(server.http, path);
        assert!(
            (400..500).contains(&r.status) && !r.text().contains("first_seen"),
            "{path}: {} {}",
            r.status,
            r.text()
        );
    }
}

/// Discovered, the machine is selected by its facts: no longer new.
fn the_discovered_machine_is_selected_by_its_facts(server: &Server) -> serde_json::Value {
    let script = get(server.http, &format!("/boot.ipxe?mac={MAC}")).text();
    assert!(
        script.contains(" vm=1"),
        "the `vms` profile (match: vendor qemu): {script}"
    );
    let r = record(server);
    assert_eq!(
        (
            r["profile"].as_str(),
            r["new"].as_bool(),
            r["boots"].as_u64(),
            stages(&r)
        ),
        (
            Some("vms"),
            Some(false),
            Some(3),
            vec!["script".to_string()]
        )
    );
    r
}

fn a_restart_reads_the_same_records(tmp: &Path, dir: &Path, r: &serde_json::Value) {
    let server = Server::start(tmp, dir, &["--tftp", "off"]);
    let again = record(&server);
    assert_eq!(&again, r);
    assert!(get(server.http, &format!("/boot.ipxe?mac={MAC}"))
        .text()
        .contains(" vm=1"));
    assert!(
        mkimage_nodes(&tmp.join("missing"), true).status.code() == Some(2),
        "a --dir that does not exist is a usage error"
    );
}

#[test]
fn concurrent_reports_about_one_machine_lose_no_update() {
    let (tmp, dir) = setup();
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off"]);
    let a = server.http;
    // 8 clients × 20 boot scripts, plus events and inventories in between.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..20 {
                    let token = serve_support::boot_token(a, MAC);
                    let target = if (t + i) % 2 == 0 {
                        format!("/api/nodes/{MAC}/event?stage=network")
                    } else {
                        format!("/api/nodes/{MAC}/event?stage=booted")
                    };
                    assert_eq!(get_with(a, &target, &token).status, 200);
                }
            })
        })
        .collect();
    let mut reads = 0;
    while threads.iter().any(|t| !t.is_finished()) {
        // Readers never see a torn record.
        if let Ok(bytes) = std::fs::read(record_file(&dir)) {
            serde_json::from_slice::<serde_json::Value>(&bytes).expect("a whole record");
            reads += 1;
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    assert!(reads > 0);
    let r = record(&server);
    assert_eq!(r["boots"], 160, "every boot script counted: {r}");
    let names: Vec<_> = std::fs::read_dir(dir.join(".state/nodes"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no temp files left: {names:?}");
}
