//! Thousands of idle and trickling (one header byte per second) HTTP
//! connections hold no worker: the server keeps a bounded number of threads
//! and bounded memory, still answers `/boot.ipxe`, and drops every one of
//! them once the header-read timeout has passed.

use crate::serve_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serve_support::{build_bootable, get, Server};

const IDLE: usize = 4000;
const TRICKLING: usize = 1000;
const TIMEOUT_SECS: u64 = 15;

fn proc_status(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Whether the server closed the connection (EOF or reset) within `within`.
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return true
            }
            Err(_) => return false,
        }
    }
}

/// This test's connections need more open files than the soft limit.
fn raise_the_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let need = (IDLE + TRICKLING + 256) as u64;
    assert!(hard >= need, "this test needs {need} open files (hard limit {hard}): run it as root or raise `ulimit -Hn`");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// Idle: a request head that never ends.
fn open_idle_connections(a: SocketAddr) -> Vec<TcpStream> {
    (0..IDLE)
        .map(|_| {
            let mut s = TcpStream::connect(a).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect()
}

/// Trickling connections: a request head sent one byte per second by a
/// thread until `stop`.
struct Trickling {
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Trickling {
    fn start(a: SocketAddr) -> Trickling {
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(
            (0..TRICKLING)
                .map(|_| TcpStream::connect(a).unwrap())
                .collect(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (trickling, stop) = (conns.clone(), stop.clone());
            std::thread::spawn(move || {
                let head = b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
                for byte in head.iter().cycle().take(TIMEOUT_SECS as usize * 3) {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    for s in trickling.lock().unwrap().iter_mut() {
                        let _ = s.write_all(std::slice::from_ref(byte));
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        };
        Trickling {
            conns,
            stop,
            thread,
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}

/// With every connection open: bounded threads and memory, and
/// `/boot.ipxe` still answered, before the timeout could have dropped them.
fn the_server_stays_bounded_and_answers(server: &Server, threads_before: u64, started: Instant) {
    let (a, pid) = (server.http, server.child.id());
    let threads = proc_status(pid, "Threads");
    let rss_kb = proc_status(pid, "VmRSS");
    let asked = Instant::now();
    let script = get(a, "/boot.ipxe");
    let latency = asked.elapsed();
    eprintln!("with {IDLE} idle + {TRICKLING} trickling connections: {threads} threads (was {threads_before}), {} MB resident, /boot.ipxe in {latency:?}", rss_kb / 1024);
    assert!(
        started.elapsed() < Duration::from_secs(TIMEOUT_SECS),
        "the connections took too long to open for the checks to mean anything"
    );
    assert_eq!(script.status, 200);
    assert!(
        script.text().starts_with("#!ipxe\n") && script.text().contains("\nkernel "),
        "{}",
        script.text()
    );
    assert!(
        threads <= 64,
        "{threads} threads with {} connections open",
        IDLE + TRICKLING
    );
    assert!(
        rss_kb <= 256 * 1024,
        "{rss_kb} kB resident with {} connections open",
        IDLE + TRICKLING
    );
}

#[test]
fn idle_and_trickling_connections_hold_no_worker_and_time_out() {
    raise_the_open_files_limit();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    build_bootable(&dir, b"base");
    let server = Server::start(
        tmp.path(),
        &dir,
        &["--tftp", "off", "--timeout", &TIMEOUT_SECS.to_string()],
    );
    let a = server.http;
    let threads_before = proc_status(server.child.id(), "Threads");
    let started = Instant::now();
    let mut idle = open_idle_connections(a);
    let trickling = Trickling::start(a);
    eprintln!(
        "{} connections opened in {:?}",
        IDLE + TRICKLING,
        started.elapsed()
    );
    std::thread::sleep(Duration::from_secs(2));
    the_server_stays_bounded_and_answers(&server, threads_before, started);

    // The header-read timeout drops all of them, trickling or not.
    let deadline = Duration::from_secs(TIMEOUT_SECS + 30);
    assert!(
        closed_by_server(&mut idle[0], deadline),
        "an idle connection outlived the header-read timeout"
    );
    assert!(
        closed_by_server(&mut idle[IDLE - 1], Duration::from_secs(10)),
        "the last idle connection outlived the timeout"
    );
    let mut slow = trickling.conns.lock().unwrap().pop().unwrap();
    assert!(
        closed_by_server(&mut slow, Duration::from_secs(10)),
        "a trickling connection outlived the header-read timeout"
    );
    trickling.stop();
    assert_eq!(get(a, "/boot.ipxe").status, 200);
}
