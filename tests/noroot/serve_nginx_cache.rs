//! nginx's `proxy_cache` in front of `mkimage serve`, configured by the
//! shipped `nginx/mkimage-cache.conf`: boot scripts come through nginx and
//! name nginx, the first fetch of the basefs fills nginx's cache, the second
//! (and a range of it) is served from there — mkimage's `/metrics` counts
//! one basefs download — and scripts are never cached.

use crate::nginx_support;
use crate::serve_support;

use std::net::SocketAddr;

use nginx_support::{cache_conf, free_port, Nginx};
use serve_support::{
    build, build_bootable, download, get, kernel_arg, pseudo_random, request, require, sha256_hex,
    url_path, Server,
};

fn metric(addr: SocketAddr, line_start: &str) -> u64 {
    let text = get(addr, "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .map_or(0, |v| v.trim().parse().expect("metric value"))
}

#[test]
fn second_basefs_fetch_comes_from_nginx_proxy_cache() {
    require("nginx", "nginx");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    let basefs = pseudo_random(20 << 20, 7);
    let entry = build_bootable(&dir, &basefs);
    build(
        &dir,
        "overlay",
        "one",
        "one.cpio.gz",
        &pseudo_random(100_000, 8),
        &[&entry],
    );
    std::fs::write(
        tmp.path().join("boot.yml"),
        "profiles:\n  - name: p\n    overlays: [one]\n",
    )
    .unwrap();
    let boot_yml = tmp.path().join("boot.yml");
    let server = Server::start(
        tmp.path(),
        &dir,
        &["--tftp", "off", "--boot-config", boot_yml.to_str().unwrap()],
    );
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cache = tmp.path().join("cache");
    let nginx = Nginx::start(tmp.path(), listen, &cache_conf(server.http, listen, &cache));

    let path = the_script_comes_through_nginx_and_names_nginx(&nginx, listen, &entry.sha256);
    the_second_fetch_and_a_range_are_cache_hits(&server, &nginx, &path, (&basefs, &entry.sha256));
    scripts_metrics_and_missing_objects_are_not_cached(&server, &nginx);
}

/// The script comes through nginx and names nginx for every artifact.
/// Gives the basefs's path.
fn the_script_comes_through_nginx_and_names_nginx(
    nginx: &Nginx,
    listen: SocketAddr,
    sha: &str,
) -> String {
    let script = get(nginx.addr, "/boot.ipxe?mac=52:54:00:12:34:56");
    assert_eq!(script.status, 200, "{}", script.text());
    let text = script.text();
    let url = kernel_arg(&text, "basefs").expect("basefs= in the script");
    assert!(
        url.starts_with(&format!("http://{listen}/sha256/{}/", sha)),
        "{url}\n{text}"
    );
    assert!(
        text.contains(&format!("initrd --name initrd http://{listen}/sha256/")),
        "{text}"
    );
    url_path(&url).to_string()
}

/// First fetch: a miss, filled from mkimage; second: a hit.
fn the_second_fetch_and_a_range_are_cache_hits(
    server: &Server,
    nginx: &Nginx,
    path: &str,
    (basefs, sha): (&[u8], &str),
) {
    let before = metric(
        server.http,
        "mkimage_artifact_downloads_total{kind=\"basefs\"}",
    );
    assert_eq!(before, 0);
    let first = request(nginx.addr, "GET", path, &[]);
    assert_eq!(
        (first.status, first.header("X-Cache-Status")),
        (200, Some("MISS")),
        "{:?}",
        first.headers
    );
    assert_eq!(sha256_hex(&first.body), sha);
    let (status, len, got) = download(nginx.addr, path);
    assert_eq!((status, len, got.as_str()), (200, basefs.len() as u64, sha));
    let second = request(nginx.addr, "HEAD", path, &[]);
    assert_eq!(
        second.header("X-Cache-Status"),
        Some("HIT"),
        "{:?}",
        second.headers
    );
    assert!(
        second
            .header("Cache-Control")
            .is_some_and(|c| c.contains("immutable")),
        "{:?}",
        second.headers
    );
    // A range (the init's retry resumes with one) is cut from the cached copy.
    let part = request(nginx.addr, "GET", path, &[("Range", "bytes=1000-1999")]);
    assert_eq!(
        (part.status, part.header("X-Cache-Status")),
        (206, Some("HIT")),
        "{:?}",
        part.headers
    );
    assert_eq!(part.body, &basefs[1000..2000]);
    // The same object under another label is the same cache entry.
    let (hex_path, _) = path.rsplit_once('/').unwrap();
    let relabelled = request(nginx.addr, "HEAD", &format!("{hex_path}/other-name"), &[]);
    assert_eq!(
        relabelled.header("X-Cache-Status"),
        Some("HIT"),
        "{:?}",
        relabelled.headers
    );
    assert_eq!(
        metric(
            server.http,
            "mkimage_artifact_downloads_total{kind=\"basefs\"}"
        ),
        1,
        "mkimage served the basefs once for three fetches"
    );
}

/// Scripts and metrics are not cached: each goes to mkimage; an unknown
/// object is mkimage's 404.
fn scripts_metrics_and_missing_objects_are_not_cached(server: &Server, nginx: &Nginx) {
    let scripts = metric(server.http, "mkimage_ipxe_scripts_total");
    get(nginx.addr, "/boot.ipxe?mac=52:54:00:12:34:56");
    assert!(get(nginx.addr, "/metrics")
        .text()
        .contains("mkimage_ipxe_scripts_total"));
    assert_eq!(
        metric(server.http, "mkimage_ipxe_scripts_total"),
        scripts + 1
    );
    // An unknown object is mkimage's 404, not cached as anything else.
    let missing = get(nginx.addr, &format!("/sha256/{}/x", "0".repeat(64)));
    assert_eq!(missing.status, 404);
    assert!(
        !nginx.error_log().contains("[emerg]"),
        "{}",
        nginx.error_log()
    );
}
