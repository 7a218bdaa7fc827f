//! Bad reports to the node registry of a real `mkimage serve`: bad events,
//! bad inventories, bad methods and bodies, and reports without the MAC's
//! own boot token are refused with a reason and change nothing.

use crate::serve_nodes::{record_file, setup, INVENTORY, MAC};
use crate::serve_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serve_support::{curl, get, get_with, post_raw, request, require, Server};

/// What a refused request must leave as it was: the record and the
/// registry's file list.
struct Unchanged {
    dir: PathBuf,
    before: Vec<u8>,
    files: Vec<std::ffi::OsString>,
}

impl Unchanged {
    fn now(dir: &Path) -> Unchanged {
        Unchanged {
            dir: dir.to_path_buf(),
            before: std::fs::read(record_file(dir)).unwrap(),
            files: Self::listing(dir),
        }
    }

    fn listing(d: &Path) -> Vec<std::ffi::OsString> {
        let mut names: Vec<_> = std::fs::read_dir(d.join(".state/nodes"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    }

    fn check(&self, what: &str) {
        assert_eq!(
            std::fs::read(record_file(&self.dir)).unwrap(),
            self.before,
            "{what} changed the record"
        );
        assert_eq!(
            Self::listing(&self.dir),
            self.files,
            "{what} changed the registry"
        );
    }
}

#[test]
fn bad_reports_are_refused_with_a_reason_and_change_nothing() {
    require("curl", "curl");
    let (tmp, dir) = setup();
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off"]);
    let (a, base) = (server.http, format!("http://{}", server.http));
    let token = serve_support::boot_token(a, MAC);
    let other = serve_support::boot_token(a, "52:54:00:99:99:99");
    let auth = format!("Authorization: Bearer {token}");
    let (code, _) = curl(&[
        "-H",
        &auth,
        "--data-binary",
        INVENTORY,
        &format!("{base}/api/nodes/{MAC}/inventory"),
    ]);
    assert_eq!(code, 200);
    let unchanged = Unchanged::now(&dir);
    bad_events_are_refused(a, &token, &unchanged);
    bad_inventories_are_refused(tmp.path(), &base, &auth, &unchanged);
    bad_methods_and_bodies_are_refused(a, &base, &auth, &unchanged);
    reports_without_the_macs_token_are_refused(a, (&token, &other), &unchanged);
    // Still serving, and the record still takes good reports.
    let booted = format!("/api/nodes/{MAC}/event?stage=booted");
    assert_eq!(get_with(a, &booted, &token).status, 200);
    assert_ne!(std::fs::read(record_file(&dir)).unwrap(), unchanged.before);
}

fn bad_events_are_refused(a: SocketAddr, token: &str, unchanged: &Unchanged) {
    for (target, status, why) in [
        (
            "/api/nodes/nonsense/event?stage=booted",
            400,
            "not a MAC address",
        ),
        (
            "/api/nodes/52:54:00:12:34:5g/event?stage=booted",
            400,
            "not a MAC address",
        ),
        (&format!("/api/nodes/{MAC}/event"), 400, "give ?stage=NAME"),
        (
            &format!("/api/nodes/{MAC}/event?stage=rebooted"),
            400,
            "not one a machine reports",
        ),
        (
            &format!("/api/nodes/{MAC}/event?stage=kernel"),
            400,
            "not one a machine reports",
        ),
        (
            &format!("/api/nodes/{MAC}/event?stage=failed"),
            400,
            "needs &reason",
        ),
        (
            &format!("/api/nodes/{MAC}/event?stage=failed&reason=%20"),
            400,
            "needs &reason",
        ),
        (
            &format!("/api/nodes/{MAC}/event?stage=failed&reason=bad%0Aline"),
            400,
            "control character",
        ),
        (
            &format!("/api/nodes/{MAC}/event?stage=failed&reason=bell%07"),
            400,
            "control character",
        ),
        (
            &format!("/api/nodes/{MAC}/event?stage=failed&reason=%ff%fe"),
            400,
            "percent-encoded UTF-8",
        ),
        (
            &format!("/api/nodes/{MAC}/event?stage=failed&step=x%1b[31m&reason=r"),
            400,
            "control character",
        ),
        (
            &format!("/api/nodes/{MAC}/event?stage=booted&reason=why"),
            400,
            "stage=failed only",
        ),
        (&format!("/api/nodes/{MAC}/inventory"), 405, "takes POST"),
        (&format!("/api/nodes/{MAC}/other"), 404, "no such API"),
        ("/api/other", 404, "no such API"),
    ] {
        let r = get_with(a, target, token);
        assert_eq!(r.status, status, "{target}: {}", r.text());
        assert!(r.text().contains(why), "{target}: {}", r.text());
        unchanged.check(target);
    }
    let long = format!(
        "/api/nodes/{MAC}/event?stage=failed&reason={}",
        "x".repeat(600)
    );
    assert_eq!(get_with(a, &long, token).status, 400);
    unchanged.check("a 600-byte reason");
}

fn bad_inventories_are_refused(tmp: &Path, base: &str, auth: &str, unchanged: &Unchanged) {
    let inventory = format!("{base}/api/nodes/{MAC}/inventory");
    let over = format!(
        "{{\"system\":{{\"vendor\":\"{}\"}}}}",
        "x".repeat(70 * 1024)
    );
    let huge = tmp.join("huge.json");
    std::fs::write(&huge, &over).unwrap();
    for (body, status, why) in [
        ("[1, 2]".to_string(), 400, "must be a JSON object"),
        ("\"QEMU\"".to_string(), 400, "must be a JSON object"),
        ("{\"system\": ".to_string(), 400, "not JSON"),
        ("{\"cpu\": {\"count\": -2}}".to_string(), 400, "cpu.count"),
        (
            "{\"system\": {\"vendor\": \"a\\u0000b\"}}".to_string(),
            400,
            "control character",
        ),
        ("{\"nics\": \"eth0\"}".to_string(), 400, "nics"),
        (format!("@{}", huge.display()), 413, "over the limit"),
    ] {
        let (code, text) = curl(&[
            "-H",
            auth,
            "-H",
            "Expect:",
            "--data-binary",
            &body,
            &inventory,
        ]);
        assert_eq!(code, status, "{body:.60}: {text}");
        assert!(text.contains(why), "{body:.60}: {text}");
        unchanged.check(&body);
    }
}

fn bad_methods_and_bodies_are_refused(
    a: SocketAddr,
    base: &str,
    auth: &str,
    unchanged: &Unchanged,
) {
    let inventory = format!("{base}/api/nodes/{MAC}/inventory");
    let (code, text) = curl(&["-H", auth, "-X", "POST", &inventory]);
    assert_eq!(code, 400, "an empty body: {text}");
    let (code, text) = post_raw(
        a,
        &format!("/api/nodes/{MAC}/inventory"),
        "Transfer-Encoding: chunked\r\n",
        b"5\r\n{}\r\n0\r\n\r\n",
    );
    assert_eq!(code, 411, "{text}");
    let (code, text) = post_raw(
        a,
        &format!("/api/nodes/{MAC}/event?stage=booted"),
        "Content-Length: 2\r\n",
        b"{}",
    );
    assert_eq!(code, 405, "{text}");
    let (code, text) = post_raw(a, "/boot.ipxe", "Content-Length: 2\r\n", b"{}");
    assert_eq!(code, 413, "bodies only for the API: {text}");
    let (code, text) = post_raw(a, "/api/nodes", "Content-Length: 2\r\n", b"{}");
    assert_eq!(code, 405, "{text}");
    let r = request(a, "DELETE", &format!("/api/nodes/{MAC}"), &[]);
    assert_eq!(r.status, 405);
    unchanged.check("refused requests");
}

/// Reports without the MAC's own boot token: 403, nothing changes; HEAD
/// checks a report but records nothing.
fn reports_without_the_macs_token_are_refused(
    a: SocketAddr,
    (token, other): (&str, &str),
    unchanged: &Unchanged,
) {
    let booted = format!("/api/nodes/{MAC}/event?stage=booted");
    for (why, r) in [
        ("no token", get(a, &booted)),
        ("another MAC's token", get_with(a, &booted, other)),
        ("a made-up token", get_with(a, &booted, &"0".repeat(32))),
    ] {
        assert_eq!(r.status, 403, "{why}: {}", r.text());
        assert!(r.text().contains("mkimage.token="), "{why}: {}", r.text());
        assert!(
            !r.text().contains(token),
            "{why}: never a token in an error"
        );
    }
    let (code, text) = curl(&[
        "-H",
        &format!("Authorization: Bearer {other}"),
        "--data-binary",
        INVENTORY,
        &format!("http://{a}/api/nodes/{MAC}/inventory"),
    ]);
    assert_eq!(code, 403, "{text}");
    unchanged.check("reports without the MAC's boot token");
    let r = request(
        a,
        "HEAD",
        &booted,
        &[("Authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(r.status, 200);
    unchanged.check("HEAD of a report");
}
