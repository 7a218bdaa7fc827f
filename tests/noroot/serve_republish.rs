//! Rebuilding while clients download: artifacts are published by rename
//! (`mkimage::artifact::publish`), and every download is a complete old or a
//! complete new file, never a mix.

use crate::serve_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use serve_support::{download, pseudo_random, request, sha256_hex, Server};
use sha2::{Digest, Sha256};

/// Publish `data` as `dir/name` the way the builders do; its sha256.
fn publish(dir: &Path, name: &str, data: &[u8]) -> String {
    serve_support::publish(dir, name, data).1
}

/// A download that pauses after the headers and `first` body bytes.
struct Paused {
    stream: TcpStream,
    hasher: Sha256,
    len: u64,
}

fn start_download(addr: SocketAddr, path: &str, first: usize) -> Paused {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut body = vec![0u8; first];
    stream.read_exact(&mut body).unwrap();
    let mut hasher = Sha256::new();
    hasher.update(&body);
    Paused {
        stream,
        hasher,
        len: first as u64,
    }
}

impl Paused {
    fn finish(mut self) -> (u64, String) {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match self.stream.read(&mut buf).unwrap() {
                0 => break,
                n => {
                    self.hasher.update(&buf[..n]);
                    self.len += n as u64;
                }
            }
        }
        (
            self.len,
            self.hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }
}

#[test]
fn downloads_survive_a_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    let size = 64 * 1024 * 1024;
    let versions: Vec<Vec<u8>> = (0..4)
        .map(|i| pseudo_random(size + i * 4096, 100 + i as u64))
        .collect();
    let shas: Vec<String> = versions.iter().map(|v| sha256_hex(v)).collect();
    assert_eq!(publish(&dir, "base.squashfs", &versions[0]), shas[0]);
    let server = Server::start(tmp.path(), &dir, &["--tftp", "off"]);
    let a = server.http;

    // A client is part way through version 0 when version 1 is published.
    let paused = start_download(a, "/base.squashfs", 1 << 20);
    publish(&dir, "base.squashfs", &versions[1]);
    assert_eq!(
        paused.finish(),
        (versions[0].len() as u64, shas[0].clone()),
        "the old file, to its end"
    );
    assert_eq!(
        download(a, "/base.squashfs"),
        (200, versions[1].len() as u64, shas[1].clone()),
        "new clients get the new file"
    );

    the_replaced_version_is_refused_by_sha_and_by_if_range(a, &shas);
    many_clients_while_it_is_republished_twice_more(a, &dir, (&versions, &shas));
    let metrics = serve_support::get(a, "/metrics").text();
    let zero_copy = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mkimage_http_zero_copy_responses_total "))
        .unwrap();
    assert!(
        zero_copy.parse::<u64>().unwrap() >= 15,
        "large bodies went out with sendfile:\n{metrics}"
    );
}

/// Versioned URLs: the replaced version is refused, the current one served.
/// Resuming with If-Range and the old ETag gets the whole new file, not a splice.
fn the_replaced_version_is_refused_by_sha_and_by_if_range(a: SocketAddr, shas: &[String]) {
    assert_eq!(
        request(
            a,
            "HEAD",
            &format!("/base.squashfs?sha256={}", shas[0]),
            &[]
        )
        .status,
        404
    );
    assert_eq!(
        request(
            a,
            "HEAD",
            &format!("/base.squashfs?sha256={}", shas[1]),
            &[]
        )
        .status,
        200
    );
    let resumed = request(
        a,
        "GET",
        "/base.squashfs",
        &[
            ("Range", "bytes=1000-"),
            ("If-Range", &format!("\"{}\"", shas[0])),
        ],
    );
    assert_eq!(resumed.status, 200);
    assert_eq!(sha256_hex(&resumed.body), shas[1]);
}

/// Many clients while the file is republished twice more: each gets one
/// whole published version.
fn many_clients_while_it_is_republished_twice_more(
    a: SocketAddr,
    dir: &Path,
    (versions, shas): (&[Vec<u8>], &[String]),
) {
    let clients: Vec<_> = (0..12)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(40));
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    start_download(a, "/base.squashfs", 4096).finish()
                } else {
                    let (status, len, sha) = download(a, "/base.squashfs");
                    assert_eq!(status, 200);
                    (len, sha)
                }
            })
        })
        .collect();
    for v in &versions[2..] {
        publish(dir, "base.squashfs", v);
        std::thread::sleep(Duration::from_millis(100));
    }
    for c in clients {
        let (len, sha) = c.join().unwrap();
        let which = shas.iter().position(|s| *s == sha);
        assert!(
            which.is_some(),
            "a download of {len} bytes matches no published version"
        );
        assert_eq!(len, versions[which.unwrap()].len() as u64);
    }
    assert_eq!(download(a, "/base.squashfs").2, shas[3]);
}
