//! `mkimage serve` over HTTP: GET, HEAD, Range, 404, every traversal form,
//! 64 concurrent downloads of a 100 MB file, a stalled client, clean stop.

use crate::serve_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serve_support::{download, get, pseudo_random, request, sha256_hex, Server};

#[test]
fn get_head_range_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    let data = pseudo_random(100_000, 1);
    std::fs::write(dir.join("f.bin"), &data).unwrap();
    let mut server = Server::start(tmp.path(), &dir, &["--tftp", "off"]);
    let a = server.http;
    get_head_range_and_conditional_requests(a, &data);
    traversal_and_files_never_served_are_refused(a, tmp.path(), &dir, &data);
    let metrics = get(a, "/metrics").text();
    assert!(
        metrics.contains("mkimage_http_requests_total{status=\"206\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mkimage_http_active_downloads 0"),
        "{metrics}"
    );

    let started = Instant::now();
    let status = server.stop();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
}

/// GET, HEAD, ranges, If-None-Match, a missing file, a method not allowed.
fn get_head_range_and_conditional_requests(a: SocketAddr, data: &[u8]) {
    let full = get(a, "/f.bin");
    assert_eq!(full.status, 200);
    assert_eq!(full.body, data);
    let etag = format!("\"{}\"", sha256_hex(data));
    assert_eq!(full.header("ETag"), Some(etag.as_str()));

    let head = request(a, "HEAD", "/f.bin", &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), Some("100000"));
    assert!(head.body.is_empty());

    let part = request(a, "GET", "/f.bin", &[("Range", "bytes=10-19")]);
    assert_eq!(part.status, 206);
    assert_eq!(part.body, &data[10..20]);
    assert_eq!(part.header("Content-Range"), Some("bytes 10-19/100000"));
    let tail = request(a, "GET", "/f.bin", &[("Range", "bytes=-5")]);
    assert_eq!((tail.status, tail.body.as_slice()), (206, &data[99_995..]));
    let past = request(a, "GET", "/f.bin", &[("Range", "bytes=100000-")]);
    assert_eq!(past.status, 416);
    assert_eq!(past.header("Content-Range"), Some("bytes */100000"));
    let not_modified = request(a, "GET", "/f.bin", &[("If-None-Match", &etag)]);
    assert_eq!(not_modified.status, 304);

    assert_eq!(get(a, "/nope").status, 404);
    assert_eq!(request(a, "POST", "/f.bin", &[]).status, 405);
}

/// Traversal, in every spelling, and things that are never served.
fn traversal_and_files_never_served_are_refused(
    a: SocketAddr,
    tmp: &Path,
    dir: &Path,
    data: &[u8],
) {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.join("escdir")).unwrap();
    std::fs::write(dir.join(".f.bin.x.tmp"), b"temp").unwrap();
    std::fs::create_dir(dir.join(".work")).unwrap();
    std::fs::write(dir.join(".work/x"), b"work").unwrap();
    // Bytes that appear nowhere but in the file above the served dir.
    let above = b"file-above-the-served-dir-9f3c";
    std::fs::write(tmp.join("above"), above).unwrap();
    for target in [
        "/../above",
        "/%2e%2e/above",
        "/%2E%2E/above",
        "/..%2fabove",
        "/x/..%2f..%2fabove",
        "/%2e%2e%2fabove",
        "/..",
        "/escape",
        "/escdir/secret",
        "/.f.bin.x.tmp",
        "/.work/x",
        "/%2ework/x",
        "http://evil/../above",
        "../above",
        "*",
    ] {
        let r = get(a, target);
        assert!((400..500).contains(&r.status), "{target} gave {}", r.status);
        assert!(
            !r.body.windows(above.len()).any(|w| w == above),
            "{target} leaked the file above the dir: {}",
            r.text()
        );
        assert!(
            !r.text().contains("secret\n")
                && r.body != b"secret"
                && r.body != b"temp"
                && r.body != b"work",
            "{target}"
        );
    }
    // An absolute file-system path is just a name inside the dir.
    assert_eq!(get(a, "/etc/passwd").status, 404);
    let abs = get(a, &format!("/{}", dir.join("f.bin").display()));
    assert!(
        (400..500).contains(&abs.status) && abs.body != data,
        "absolute path gave {}",
        abs.status
    );
}

#[test]
fn sixty_four_concurrent_downloads_and_a_stalled_client() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    let size = 100 * 1024 * 1024;
    let data = pseudo_random(size, 2);
    let want = sha256_hex(&data);
    std::fs::write(dir.join("big.bin"), &data).unwrap();
    drop(data);
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off", "--timeout", "10"]);
    let a = server.http;

    // A client that asks for the big file and never reads a byte.
    let mut stalled = TcpStream::connect(a).unwrap();
    stalled
        .write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // And one that connects and sends nothing.
    let _silent = TcpStream::connect(a).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let clients: Vec<_> = (0..64)
        .map(|_| std::thread::spawn(move || download(a, "/big.bin")))
        .collect();
    for c in clients {
        let (status, len, sha) = c.join().unwrap();
        assert_eq!((status, len), (200, size as u64));
        assert_eq!(sha, want);
    }
    eprintln!("64 x 100 MiB in {:?}", started.elapsed());

    // The stalled download is dropped once the socket write timeout passes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = get(a, "/metrics").text();
        if metrics.contains("mkimage_http_active_downloads 0") {
            assert!(metrics.contains("mkimage_http_errors_total 1"), "{metrics}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled client still holds a worker:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut buf = Vec::new();
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stalled.read_to_end(&mut buf);
    assert!(buf.len() < size, "the stalled client was cut off");
}

#[test]
fn stalled_clients_do_not_delay_a_small_pool() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    let data = pseudo_random(50 * 1024 * 1024, 3);
    std::fs::write(dir.join("big.bin"), &data).unwrap();
    let server = Server::start(
        tmp.path(),
        &dir,
        &["--tftp", "off", "--workers", "4", "--timeout", "60"],
    );
    let a = server.http;
    // Three stalled downloads hold three of the four download workers.
    let stalled: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(a).unwrap();
            s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Others still get their files and pages, one after another, well
    // before the 60 s stall timeout could free a worker.
    let started = Instant::now();
    for _ in 0..4 {
        assert_eq!(
            download(a, "/big.bin"),
            (200, data.len() as u64, sha256_hex(&data))
        );
    }
    assert_eq!(get(a, "/metrics").status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "others were held up: {:?}",
        started.elapsed()
    );
    let metrics = get(a, "/metrics").text();
    assert!(
        metrics.contains("mkimage_http_active_downloads 3"),
        "{metrics}"
    );
    drop(stalled);
}
