//! A Debian mirror on loopback that misbehaves on purpose: the real, signed
//! `InRelease` of a suite and the few files a test needs, copied once per
//! run from the host's mirror (read from its apt sources, as mkimage does),
//! served over HTTP by a small server in a thread of the test — which can
//! serve a file truncated (its size no longer what InRelease says), answer
//! an HTTP status, or reset the connection, the first N times it is asked
//! for — and that logs every request. It stops when dropped.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The suite the fixture copies (the one whose mirror misbehaved).
pub const SUITE: &str = "trixie";

/// A file whose size the test needs from InRelease (`non-free-firmware/…`).
pub const CONTENTS_ALL: &str = "dists/trixie/non-free-firmware/Contents-all.gz";
pub const CONTENTS_AMD64: &str = "dists/trixie/non-free-firmware/Contents-amd64.gz";
pub const FIRMWARE_PACKAGES: &str = "dists/trixie/non-free-firmware/binary-amd64/Packages.xz";
pub const MAIN_PACKAGES: &str = "dists/trixie/main/binary-amd64/Packages.xz";

/// How a file misbehaves.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Served cut to this many bytes, every time.
    Truncate(usize),
    /// Answered with this status the first `times` times.
    Status { code: u16, times: usize },
    /// The connection reset (RST, no answer) the first `times` times.
    Reset { times: usize },
}

/// The fixture: a dir laid out like the mirror (`dists/…`, `pool/…`),
/// held while the test process runs (the next run removes it).
pub struct Fixture {
    dir: mkimage::flock::Claimed,
    pub root: PathBuf,
    /// The `.deb` of a small firmware package (`pool/…`), its package name,
    /// and a firmware file it ships (as a kernel module would declare it).
    pub deb: String,
    pub package: String,
    pub firmware_file: String,
    /// sha256 → path, from InRelease (what apt asks a by-hash mirror for).
    by_hash: BTreeMap<String, String>,
    /// Sizes InRelease gives.
    pub sizes: BTreeMap<String, u64>,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

/// The fixture, copied from the host's mirror the first time it is asked for.
pub fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(copy_fixture)
}

fn copy_fixture() -> Fixture {
    super::common::require("curl", "curl");
    let mirror = mkimage::apt::host_mirror().expect("the host's apt sources name a mirror");
    let scratch = super::common::scratch();
    for stale in mkimage::flock::stale(&scratch, |n| n.starts_with("mirror-fixture.")) {
        let _ = std::fs::remove_dir_all(&stale);
    }
    let dir = mkimage::flock::claim_dir(&scratch, "mirror-fixture.").expect("fixture dir");
    let root = dir.path.clone();
    let get = |rel: &str, range: Option<String>| {
        let dest = root.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let mut curl = std::process::Command::new("curl");
        curl.args(["-sSf", "--retry", "3", "-o"]).arg(&dest);
        if let Some(r) = range {
            curl.args(["-r", &r]);
        }
        let status = curl
            .arg(format!("{mirror}/{rel}"))
            .status()
            .expect("run curl");
        assert!(status.success(), "cannot copy {rel} from {mirror}");
    };
    let inrelease = format!("dists/{SUITE}/InRelease");
    get(&inrelease, None);
    let release = std::fs::read_to_string(root.join(&inrelease)).unwrap();
    let (by_hash, sizes) = sha256_list(&release);
    for rel in [CONTENTS_ALL, FIRMWARE_PACKAGES] {
        get(rel, None);
    }
    // Broken ones need only be broken: a prefix is what a truncated file is
    // (cut here too: a mirror may not honour the range).
    for rel in [CONTENTS_AMD64, MAIN_PACKAGES] {
        let len = sizes[rel].min(4096) - 25;
        get(rel, Some(format!("0-{}", len - 1)));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(root.join(rel))
            .unwrap();
        if file.metadata().unwrap().len() > len {
            file.set_len(len).unwrap();
        }
    }
    // A small firmware package, and a file it ships.
    let (package, deb) = firmware_deb(&root);
    get(&deb, None);
    let firmware_file = firmware_file_of(&root, &package);
    Fixture {
        dir,
        root,
        deb,
        package,
        firmware_file,
        by_hash,
        sizes,
    }
}

/// firmware-ast's name and its `Filename:` in the copied non-free-firmware Packages.
fn firmware_deb(root: &Path) -> (String, String) {
    let packages = {
        let mut text = String::new();
        liblzma::read::XzDecoder::new(std::fs::File::open(root.join(FIRMWARE_PACKAGES)).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        text
    };
    packages
        .split("\n\n")
        .find_map(|p| {
            let field = |k: &str| {
                p.lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}: ")))
                    .map(str::to_string)
            };
            let package = field("Package")?;
            (package == "firmware-ast").then_some((package, field("Filename")?))
        })
        .expect("firmware-ast in non-free-firmware")
}

/// A firmware file `package` ships, from the copied Contents-all (under
/// the firmware dir, as the initrd looks it up).
fn firmware_file_of(root: &Path, package: &str) -> String {
    let contents = {
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(root.join(CONTENTS_ALL)).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        text
    };
    contents
        .lines()
        .find_map(|l| {
            let (path, pkgs) = l.rsplit_once(char::is_whitespace)?;
            pkgs.ends_with(&format!("/{package}"))
                .then(|| path.trim())
                .and_then(|p| {
                    p.strip_prefix("usr/lib/firmware/")
                        .or(p.strip_prefix("lib/firmware/"))
                })
                .map(str::to_string)
        })
        .expect("a firmware file of firmware-ast in Contents-all")
}

/// The `SHA256:` list of a Release file: hash → `dists/SUITE/…`, and sizes.
fn sha256_list(release: &str) -> (BTreeMap<String, String>, BTreeMap<String, u64>) {
    let (mut by_hash, mut sizes) = (BTreeMap::new(), BTreeMap::new());
    let mut in_sha256 = false;
    for line in release.lines() {
        if !line.starts_with(' ') {
            in_sha256 = line.trim_end() == "SHA256:";
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if let (true, [hash, size, name]) = (in_sha256, &words[..]) {
            let path = format!("dists/{SUITE}/{name}");
            by_hash.insert(hash.to_string(), path.clone());
            sizes.insert(path, size.parse().unwrap());
        }
    }
    (by_hash, sizes)
}

struct State {
    faults: Mutex<BTreeMap<String, Fault>>,
    /// Every request, by the file it names (a by-hash URL by its file).
    log: Mutex<Vec<String>>,
}

/// The mirror at `url` (`http://127.0.0.1:PORT/debian`), until dropped.
pub struct Mirror {
    pub url: String,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Mirror {
    pub fn start(faults: &[(&str, Fault)]) -> Mirror {
        let fixture = fixture();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            faults: Mutex::new(
                faults
                    .iter()
                    .map(|(p, f)| (p.to_string(), f.clone()))
                    .collect(),
            ),
            log: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        let state = state.clone();
                        std::thread::spawn(move || serve(conn, fixture, &state));
                    }
                }
            })
        };
        Mirror {
            url: format!("http://{addr}/debian"),
            state,
            stop,
            addr,
            thread: Some(thread),
        }
    }

    /// The files asked for, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state.log.lock().unwrap().clone()
    }

    /// How many times `path` was asked for.
    pub fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|p| *p == path).count()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection: one request, one answer, closed.
fn serve(mut conn: TcpStream, fixture: &Fixture, state: &State) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let Some(target) = head.split_whitespace().nth(1) else {
        return;
    };
    let path = target
        .split('?')
        .next()
        .unwrap_or("")
        .trim_start_matches("/debian/")
        .to_string();
    // A by-hash URL stands for the file of that hash.
    let file = match path.split_once("/by-hash/SHA256/") {
        Some((_, hash)) => fixture.by_hash.get(hash).cloned().unwrap_or(path),
        None => path,
    };
    let seen = {
        let mut log = state.log.lock().unwrap();
        log.push(file.clone());
        log.iter().filter(|p| **p == file).count()
    };
    let fault = state.faults.lock().unwrap().get(&file).cloned();
    let answer = |conn: &mut TcpStream, status: &str, body: &[u8]| {
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = conn.write_all(body);
    };
    match fault {
        Some(Fault::Status { code, times }) if seen <= times => {
            let reason = match code {
                404 => "Not Found",
                500 => "Internal Server Error",
                503 => "Service Unavailable",
                _ => "Injected",
            };
            return answer(&mut conn, &format!("{code} {reason}"), b"injected\n");
        }
        Some(Fault::Reset { times }) if seen <= times => return reset(conn),
        _ => {}
    }
    let Ok(mut body) = std::fs::read(fixture.root.join(&file)) else {
        return answer(&mut conn, "404 Not Found", b"");
    };
    if let Some(Fault::Truncate(n)) = fault {
        body.truncate(n);
    }
    answer(&mut conn, "200 OK", &body);
}

/// Close with a TCP reset (SO_LINGER 0), as a dropped connection looks.
fn reset(conn: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket this function owns, with a valid linger struct.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(conn);
}

/// A tracing subscriber for the current thread that keeps what is logged.
pub fn capture_logs() -> (tracing::subscriber::DefaultGuard, Arc<Mutex<Vec<u8>>>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let buf = buf.clone();
        move || Sink(buf.clone())
    };
    let subscriber = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    (tracing::subscriber::set_default(subscriber), buf)
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What `capture_logs` kept, as text.
pub fn logged(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap()).to_string()
}
