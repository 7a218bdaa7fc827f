//! What the boot server believes, through a real `mkimage serve` and raw
//! sockets: reports need the MAC's boot token, reads and the status page's
//! machines need the admin token, request framing follows RFC 9112 (one
//! 400 and a close for ambiguous lengths, HEAD records nothing,
//! `Expect: 100-continue`, no reset after an error reply, a trickled head),
//! and a trusted proxy's X-Forwarded-For is the client.

use crate::serve_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serve_support::{boot_token, build_bootable, get, get_with, request, Server};

const MAC: &str = "52:54:00:12:34:56";
const INVENTORY: &str =
    r#"{"system":{"vendor":"Dell Inc.","product":"PowerEdge R650","serial":"S1"}}"#;

fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    build_bootable(&dir, b"base");
    (tmp, dir)
}

/// Everything the server sends on one connection after `bytes`, until it
/// closes (an error, e.g. a reset, fails the test).
fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(bytes).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("the reply, then a clean close (no reset)");
    String::from_utf8_lossy(&got).into_owned()
}

fn replies(text: &str) -> usize {
    text.match_indices("HTTP/1.1 ").count()
}

#[test]
fn ambiguous_lengths_get_one_400_and_a_close() {
    let (tmp, dir) = setup();
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off"]);
    let smuggled = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    for framing in [
        format!("Content-Length: 0\r\nContent-Length: {}", smuggled.len()),
        format!("Content-Length: {0}, {0}", smuggled.len()),
        format!("Content-Length: +{}", smuggled.len()),
        "Content-Length: 3 4".to_string(),
        format!(
            "Transfer-Encoding: chunked\r\nContent-Length: {}",
            smuggled.len()
        ),
    ] {
        let req = format!(
            "POST /api/nodes/{MAC}/inventory HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n{smuggled}"
        );
        let got = exchange(server.http, req.as_bytes());
        assert!(got.starts_with("HTTP/1.1 400 "), "{framing}: {got}");
        assert_eq!(replies(&got), 1, "{framing}: the rest is no request: {got}");
    }
}

#[test]
fn an_error_reply_arrives_whole_even_with_a_body_unread() {
    let (tmp, dir) = setup();
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off"]);
    let body = vec![b'x'; 100 * 1024];
    for head in [
        format!(
            "POST /boot.ipxe HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ),
        "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_string(),
    ] {
        let mut bytes = head.clone().into_bytes();
        bytes.extend_from_slice(&body);
        let got = exchange(server.http, &bytes);
        assert!(
            got.starts_with("HTTP/1.1 413 ") || got.starts_with("HTTP/1.1 400 "),
            "{head}: {got}"
        );
        assert_eq!(replies(&got), 1, "{got}");
    }
}

#[test]
fn head_records_no_stage_and_expect_100_continue_is_answered() {
    let (tmp, dir) = setup();
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off"]);
    let r = request(server.http, "HEAD", &format!("/boot.ipxe?mac={MAC}"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        server.get_admin(&format!("/api/nodes/{MAC}")).status,
        404,
        "HEAD of a boot script is no boot"
    );
    let token = boot_token(server.http, MAC);

    let mut s = TcpStream::connect(server.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /api/nodes/{MAC}/inventory HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Expect: 100-continue\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        INVENTORY.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut first = [0u8; 25];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(INVENTORY.as_bytes()).unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with("HTTP/1.1 200 "), "{rest}");
    let r = request(
        server.http,
        "GET",
        "/metrics",
        &[("Expect", "something-else")],
    );
    assert_eq!(r.status, 417);
}

#[test]
fn a_trickled_head_is_read_whole() {
    let (tmp, dir) = setup();
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off"]);
    let mut s = TcpStream::connect(server.http).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let filler: String = (0..40)
        .map(|i| format!("X-Filler-{i}: {}\r\n", "y".repeat(100)))
        .collect();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{filler}Connection: close\r\n\r\n");
    for chunk in req.as_bytes().chunks(7) {
        s.write_all(chunk).unwrap();
    }
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert!(got.starts_with("HTTP/1.1 200 "), "{got:.200}");
    let big: String = (0..60)
        .map(|i| format!("X-{i}: {}\r\n", "y".repeat(400)))
        .collect();
    let got = exchange(
        server.http,
        format!("GET / HTTP/1.1\r\n{big}\r\n").as_bytes(),
    );
    assert!(got.starts_with("HTTP/1.1 431 "), "{got:.200}");
}

#[test]
fn the_admin_token_guards_reads_and_the_status_pages_machines() {
    let (tmp, dir) = setup();
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off"]);
    let token_file = dir.join(".state/admin.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "made private on first start");
    let admin = server.admin();
    let boot = boot_token(server.http, MAC);
    let booted = format!("/api/nodes/{MAC}/event?stage=booted");
    assert_eq!(get_with(server.http, &booted, &boot).status, 200);

    let r = get(server.http, "/api/nodes");
    assert_eq!(r.status, 401);
    assert!(!r.text().contains(&admin));
    assert_eq!(
        get_with(server.http, "/api/nodes", &boot).status,
        401,
        "a boot token is no admin token"
    );
    assert_eq!(server.get_admin("/api/nodes").status, 200);
    assert_eq!(get(server.http, &format!("/api/nodes/{MAC}")).status, 401);
    assert_eq!(get(server.http, "/status/nodes").status, 401);
    assert_eq!(
        get(server.http, "/metrics").status,
        200,
        "metrics stay open"
    );
    assert!(!get(server.http, "/").text().contains(MAC));

    the_sign_in_form_sets_a_cookie_that_opens_the_page(&server, &admin);
    drop(server);
    // --public-status opens the page, not the API.
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off", "--public-status"]);
    assert!(get(server.http, "/").text().contains(MAC));
    assert_eq!(get(server.http, "/api/nodes").status, 401);
    drop(server);

    a_token_file_others_can_read_is_refused(tmp.path(), &dir);
}

/// The form: a wrong token is refused; the right one sets the cookie.
fn the_sign_in_form_sets_a_cookie_that_opens_the_page(server: &Server, admin: &str) {
    let form = |token: &str| {
        let body = format!("token={token}");
        let req = format!(
            "POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        exchange(server.http, req.as_bytes())
    };
    assert!(form("wrong").starts_with("HTTP/1.1 401 "));
    let signed_in = form(admin);
    assert!(signed_in.starts_with("HTTP/1.1 303 "), "{signed_in}");
    let cookie = signed_in
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .expect("a cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(admin),
        "the cookie is not the token itself"
    );
    let pair = cookie.split(';').next().unwrap();
    let page = request(server.http, "GET", "/", &[("Cookie", pair)]).text();
    assert!(page.contains(MAC), "{page}");
}

/// A token file others can read is refused, naming the file and the fix.
fn a_token_file_others_can_read_is_refused(tmp: &Path, dir: &Path) {
    let loose = tmp.join("loose.token");
    std::fs::write(&loose, "0123456789abcdef0123456789\n").unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mkimage"))
        .args(["serve", "--http", "127.0.0.1:0", "--tftp", "off", "--dir"])
        .arg(dir)
        .arg("--admin-token-file")
        .arg(&loose)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&*loose.to_string_lossy()) && err.contains("chmod 600"),
        "{err}"
    );
    assert!(!err.contains("0123456789abcdef"), "{err}");
}

#[test]
fn a_trusted_proxys_forwarded_address_is_the_client() {
    let (tmp, dir) = setup();
    let xff = [("X-Forwarded-For", "10.77.0.9")];
    let boot_ip = |server: &Server, mac: &str| {
        let r = server.get_admin(&format!("/api/nodes/{mac}"));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["boot_ip"].as_str().unwrap_or_default().to_string()
    };
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off"]);
    request(server.http, "GET", &format!("/boot.ipxe?mac={MAC}"), &xff);
    assert_eq!(
        boot_ip(&server, MAC),
        "127.0.0.1",
        "no --trusted-proxy: ignored"
    );
    drop(server);

    let server = Server::start(
        tmp.path(),
        &dir,
        &["--tftp", "off", "--trusted-proxy", "127.0.0.1/32"],
    );
    request(server.http, "GET", &format!("/boot.ipxe?mac={MAC}"), &xff);
    assert_eq!(boot_ip(&server, MAC), "10.77.0.9");
    let other = "52:54:00:00:00:02";
    let forwarded = [("Forwarded", "for=10.77.0.10;proto=http")];
    request(
        server.http,
        "GET",
        &format!("/boot.ipxe?mac={other}"),
        &forwarded,
    );
    assert_eq!(boot_ip(&server, other), "10.77.0.10");
    drop(server);

    let server = Server::start(
        tmp.path(),
        &dir,
        &["--tftp", "off", "--trusted-proxy", "10.0.0.0/8"],
    );
    request(server.http, "GET", &format!("/boot.ipxe?mac={MAC}"), &xff);
    assert_eq!(
        boot_ip(&server, MAC),
        "127.0.0.1",
        "127.0.0.1 is no trusted proxy here"
    );
}

#[test]
fn a_medium_booted_init_asks_the_server_for_its_token() {
    serve_support::require("busybox", "busybox");
    let (tmp, dir) = setup();
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off"]);
    let base = format!("http://{}", server.http);
    // No mkimage.token= (an ISO made with --server): refused, until
    // report.sh asks the server for one.
    serve_support::init_reports(tmp.path(), (&base, ""), "report network");
    serve_support::init_reports(tmp.path(), (&base, ""), "report_token\nreport network");
    let start = std::time::Instant::now();
    loop {
        let r = server.get_admin(&format!("/api/nodes/{MAC}"));
        let text = r.text();
        if text.contains("\"network\"") {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["boots"], 1, "{text}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no network stage: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One response read off a keep-alive connection: status, body.
fn one_reply(s: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("a reply head");
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .expect("Content-Length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (status, body)
}

/// Wait (on the file the server writes, not a read through the API, which
/// would write what is queued itself) until the record satisfies `done`.
fn wait_for_record(
    dir: &Path,
    mac: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let file = dir
        .join(".state/nodes")
        .join(format!("{}.json", mac.replace(':', "-")));
    let start = std::time::Instant::now();
    loop {
        let r = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match r {
            Some(r) if done(&r) => return r,
            r => assert!(
                start.elapsed() < Duration::from_secs(20),
                "record of {mac}: {r:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stage_names(r: &serde_json::Value) -> Vec<&str> {
    r["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect()
}

#[test]
fn the_script_stage_is_written_after_the_reply_and_before_what_follows_it() {
    let (tmp, dir) = setup();
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off"]);
    // On one keep-alive connection, as iPXE does: the script, then at once
    // the kernel it names. The script's record write comes after its reply
    // went out, and still lands before the kernel's stage.
    let mut s = TcpStream::connect(server.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("GET /boot.ipxe?mac={MAC} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let (status, script) = one_reply(&mut s);
    let script = String::from_utf8(script).unwrap();
    assert_eq!(status, 200, "{script}");
    let token = serve_support::kernel_arg(&script, "mkimage.token").expect("a boot token");
    let kernel = script
        .lines()
        .find(|l| l.starts_with("kernel "))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap();
    let kernel = serve_support::url_path(kernel).to_string();
    s.write_all(format!("GET {kernel} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(one_reply(&mut s).0, 200);
    let r = wait_for_record(&dir, MAC, |r| stage_names(r).len() == 2);
    assert_eq!(stage_names(&r), ["script", "kernel"], "{r}");
    assert_eq!(
        (r["boots"].as_u64(), r["boot_ip"].as_str()),
        (Some(1), Some("127.0.0.1")),
        "{r}"
    );

    // A second boot's script, then at once its inventory (the token it
    // carries is good as soon as the script is out): the new boot starts
    // the list, the inventory follows it, whichever write ran first.
    s.write_all(format!("GET /boot.ipxe?mac={MAC} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let (_, script) = one_reply(&mut s);
    let token2 =
        serve_support::kernel_arg(&String::from_utf8(script).unwrap(), "mkimage.token").unwrap();
    assert_ne!(token, token2);
    let post = format!(
        "POST /api/nodes/{MAC}/inventory HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token2}\r\nContent-Length: {}\r\n\r\n{INVENTORY}",
        INVENTORY.len()
    );
    s.write_all(post.as_bytes()).unwrap();
    let (status, body) = one_reply(&mut s);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let r = wait_for_record(&dir, MAC, |r| r["boots"] == 2);
    assert_eq!(stage_names(&r), ["script", "inventory"], "{r}");
    assert_eq!(r["inventory_authenticated"], true, "{r}");
    // A HEAD of the script is no boot: the record stays as it is.
    s.write_all(format!("HEAD /boot.ipxe?mac={MAC} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let r = server.get_admin(&format!("/api/nodes/{MAC}"));
    let r: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (r["boots"].as_u64(), stage_names(&r)),
        (Some(2), vec!["script", "inventory"])
    );
}
