//! Test harness for `mkimage serve`: start the real binary on loopback with
//! port 0, read the bound addresses it prints, stop it by pid on drop; plus
//! a raw HTTP/1.1 client so requests go out exactly as written.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mkimage::artifact::{self, Entry, Ref};
use sha2::{Digest, Sha256};

pub struct Server {
    pub child: Child,
    pub http: SocketAddr,
    pub tftp: Option<SocketAddr>,
    /// The served dir (its `.state/admin.token` is the admin token).
    pub dir: PathBuf,
}

impl Server {
    /// `mkimage serve --dir DIR --http 127.0.0.1:0 --tftp 127.0.0.1:0 EXTRA…`,
    /// run in `cwd` (so no vars/boot.yml is picked up unless the test puts one there).
    pub fn start(cwd: &Path, dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mkimage"))
            .current_dir(cwd)
            .args(["serve", "--dir"])
            .arg(dir)
            .args(["--http", "127.0.0.1:0"])
            .args(if extra.contains(&"--tftp") {
                &[][..]
            } else {
                &["--tftp", "127.0.0.1:0"][..]
            })
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mkimage serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut http, mut tftp) = (None, None);
        while let Some(Ok(line)) = lines.next() {
            if let Some(a) = line.strip_prefix("listening http ") {
                http = Some(a.parse().expect("http addr"));
            }
            if let Some(a) = line.strip_prefix("listening tftp ") {
                tftp = Some(a.parse().expect("tftp addr"));
            }
            if http.is_some()
                && (tftp.is_some() || extra.windows(2).any(|w| w == ["--tftp", "off"]))
            {
                break;
            }
        }
        let http = match http {
            Some(h) => h,
            None => {
                let _ = child.kill();
                panic!(
                    "mkimage serve did not print its address: {:?}",
                    child.wait()
                );
            }
        };
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            http,
            tftp,
            dir: dir.to_path_buf(),
        }
    }

    /// The server's admin token (made on first start in DIR/.state).
    pub fn admin(&self) -> String {
        std::fs::read_to_string(self.dir.join(".state/admin.token"))
            .expect("the server's admin token")
            .trim()
            .to_string()
    }

    /// `GET target` with the admin token (the node API, the status page).
    pub fn get_admin(&self, target: &str) -> Reply {
        let auth = format!("Bearer {}", self.admin());
        request(self.http, "GET", target, &[("Authorization", &auth)])
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// Send SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a fresh connection, the target sent verbatim.
pub fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    parse(&raw, method == "HEAD")
}

pub fn get(addr: SocketAddr, target: &str) -> Reply {
    request(addr, "GET", target, &[])
}

/// `GET target` with `Authorization: Bearer TOKEN` (a boot token).
pub fn get_with(addr: SocketAddr, target: &str, token: &str) -> Reply {
    let auth = format!("Bearer {token}");
    request(addr, "GET", target, &[("Authorization", &auth)])
}

/// The boot token a boot script for `mac` carries (`mkimage.token=`).
pub fn boot_token(addr: SocketAddr, mac: &str) -> String {
    let script = get(addr, &format!("/boot.ipxe?mac={mac}")).text();
    kernel_arg(&script, "mkimage.token").expect("a boot token on the kernel line")
}

fn parse(raw: &[u8], head: bool) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let body = raw[end + 4..].to_vec();
    let reply = Reply {
        status,
        headers,
        body,
    };
    if !head {
        if let Some(len) = reply.header("Content-Length") {
            assert_eq!(
                len.parse::<usize>().unwrap(),
                reply.body.len(),
                "Content-Length matches the body"
            );
        }
    }
    reply
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `len` deterministic pseudo-random bytes (xorshift), different per seed.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Fail (never skip) when a tool the test needs is missing.
pub fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{program}` is missing: apt-get install -y {package}"
    );
}

/// GET `target` streaming the body into sha256: (status, body length, sha).
pub fn download(addr: SocketAddr, target: &str) -> (u16, u64, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(
        format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let (status, mut hasher, mut len) = loop {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "connection closed before the headers");
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]).into_owned();
            let status = text
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("status");
            let mut hasher = Sha256::new();
            hasher.update(&head[end + 4..]);
            break (status, hasher, (head.len() - end - 4) as u64);
        }
    };
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) => panic!("read after {len} bytes: {e}"),
        }
    }
    (
        status,
        len,
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// Publish `data` as `dir/file` the way the builders do (staged, renamed
/// into place, `.sha256`, content store); returns (size, sha256).
pub fn publish(dir: &Path, file: &str, data: &[u8]) -> (u64, String) {
    let staged = artifact::staging_file(dir, file).unwrap();
    std::fs::write(staged.path(), data).unwrap();
    let (_f, path) = staged.keep().unwrap();
    artifact::publish(dir, file, &path).unwrap()
}

/// Publish an artifact and record it in `manifest.json`, as a build does.
pub fn build(
    dir: &Path,
    kind: &str,
    name: &str,
    file: &str,
    data: &[u8],
    parents: &[&Entry],
) -> Entry {
    let (size, sha256) = publish(dir, file, data);
    let entry = Entry {
        kind: kind.into(),
        name: name.into(),
        file: file.into(),
        size,
        sha256,
        parents: parents
            .iter()
            .map(|p| Ref {
                file: p.file.clone(),
                sha256: p.sha256.clone(),
            })
            .collect(),
        build_time: 1_700_000_000,
        ..Default::default()
    };
    artifact::record(dir, std::slice::from_ref(&entry)).unwrap();
    entry
}

/// A bootable set: kernel `vmlinuz`, initrd `initrd.img` and the basefs
/// `base.squashfs` with `basefs` as its bytes; returns the basefs entry.
pub fn build_bootable(dir: &Path, basefs: &[u8]) -> Entry {
    build(dir, "kernel", "kernel", "vmlinuz", b"kernel", &[]);
    build(dir, "initrd", "initrd", "initrd.img", b"initrd", &[]);
    build(dir, "basefs", "base", "base.squashfs", basefs, &[])
}

/// The value of `key=` on a boot script's kernel line.
pub fn kernel_arg(script: &str, key: &str) -> Option<String> {
    let kernel = script.lines().find(|l| l.starts_with("kernel "))?;
    kernel
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_string))
}

/// The path (and query) of an `http://HOST:PORT/PATH` URL.
pub fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.find('/').map(|i| &rest[i..]).unwrap_or("/")
}

/// `curl -sS ARGS…`: the status and the body.
pub fn curl(args: &[&str]) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The init's `report.sh`, run by busybox sh with busybox's applets alone
/// on PATH (as in the initrd): `calls` after sourcing it.
pub fn init_reports(tmp: &Path, (api, token): (&str, &str), calls: &str) {
    let bin = tmp.join("busybox-bin");
    if !bin.exists() {
        std::fs::create_dir(&bin).unwrap();
        for applet in [
            "sh", "timeout", "wget", "tr", "od", "head", "sed", "cat", "printf",
        ] {
            std::os::unix::fs::symlink("/bin/busybox", bin.join(applet)).unwrap();
        }
    }
    let script = format!(". {}/initrd/report.sh\nAPI={api}\nTOKEN={token}\nBOOTIF=01-52-54-00-12-34-56\nreport_from eth0\n{calls}\n", env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(bin.join("sh"))
        .arg("-c")
        .arg(&script)
        .env_clear()
        .env("PATH", &bin)
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "report.sh: {o:?}"
    );
}

/// A raw request with a body, sent as written.
pub fn post_raw(addr: SocketAddr, target: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head =
        format!("POST {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}
