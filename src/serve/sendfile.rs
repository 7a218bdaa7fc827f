//! Zero-copy file bodies: `sendfile(2)` from the opened file straight to the
//! client's socket, instead of copying every byte through user space.
//!
//! tiny_http hands a handler its connection only as a boxed `Write`. So for
//! a large body we find the connection's socket among the process's own
//! descriptors — a TCP socket on our HTTP port whose peer is the request's
//! client address — and take a duplicate of it, which keeps it from being
//! closed or its number reused under us, then check the duplicate again.
//! The response head goes through tiny_http's writer (flushed) first, so
//! bytes stay in order; if no socket is found the caller copies as before.
//!
//! `sendfile` ignores the socket send timeout, so a [`Watchdog`] shuts down
//! the socket of a transfer that made no progress for the timeout; that
//! wakes the blocked `sendfile` with an error and frees the worker.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, sockopt, SockType};

/// A duplicate of the connection's socket, if it can be found.
pub fn find_socket(peer: SocketAddr, local_port: u16) -> Option<OwnedFd> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    for entry in entries.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        match std::fs::read_link(entry.path()) {
            Ok(target) if target.to_string_lossy().starts_with("socket:") => {}
            _ => continue,
        }
        // SAFETY: the descriptor is only borrowed for the dup below; if it
        // was closed meanwhile the dup fails (EBADF), and if its number was
        // reused the checks on the duplicate reject it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let Ok(dup) = borrowed.try_clone_to_owned() else { continue };
        if is_connection(&dup, peer, local_port) {
            return Some(dup);
        }
    }
    None
}

fn is_connection(fd: &OwnedFd, peer: SocketAddr, local_port: u16) -> bool {
    if getsockopt(fd, sockopt::SockType).ok() != Some(SockType::Stream) {
        return false;
    }
    let Ok(dup) = fd.try_clone() else { return false };
    let stream = TcpStream::from(dup);
    stream.peer_addr().ok() == Some(peer) && stream.local_addr().ok().map(|a| a.port()) == Some(local_port)
}

/// Bytes per `sendfile` call: small enough that a slow but live client
/// shows progress to the watchdog well within any timeout.
const STEP: u64 = 256 * 1024;

/// One zero-copy transfer, as the watchdog sees it.
pub struct Transfer {
    socket: OwnedFd,
    progress: AtomicU64,
}

/// Cuts off transfers that made no progress for `timeout`.
pub struct Watchdog {
    transfers: Mutex<Vec<Weak<Transfer>>>,
}

impl Watchdog {
    /// Start the watchdog thread (it lives as long as the process).
    pub fn start(timeout: Duration) -> Arc<Watchdog> {
        let dog = Arc::new(Watchdog { transfers: Mutex::new(Vec::new()) });
        let weak = Arc::downgrade(&dog);
        let _ = std::thread::Builder::new().name("http-watchdog".into()).spawn(move || {
            // Last progress value seen per transfer, and since when.
            let mut seen: Vec<(Weak<Transfer>, u64, Instant)> = Vec::new();
            let tick = (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
            while let Some(dog) = weak.upgrade() {
                let live: Vec<Weak<Transfer>> = match dog.transfers.lock() {
                    Ok(mut t) => {
                        t.retain(|w| w.strong_count() > 0);
                        t.clone()
                    }
                    Err(_) => return,
                };
                drop(dog);
                let now = Instant::now();
                seen.retain(|(w, _, _)| w.strong_count() > 0);
                for w in live {
                    let Some(t) = w.upgrade() else { continue };
                    let p = t.progress.load(Relaxed);
                    match seen.iter_mut().find(|(sw, _, _)| sw.ptr_eq(&w)) {
                        Some(entry) if entry.1 != p => *entry = (w.clone(), p, now),
                        Some(entry) if now.duration_since(entry.2) >= timeout => {
                            tracing::debug!("http: a client took no data for {timeout:?}; dropping it");
                            let _ = nix::sys::socket::shutdown(std::os::fd::AsRawFd::as_raw_fd(&t.socket), nix::sys::socket::Shutdown::Both);
                        }
                        Some(_) => {}
                        None => seen.push((w.clone(), p, now)),
                    }
                }
                std::thread::sleep(tick);
            }
        });
        dog
    }

    fn watch(&self, socket: OwnedFd) -> Arc<Transfer> {
        let t = Arc::new(Transfer { socket, progress: AtomicU64::new(0) });
        if let Ok(mut transfers) = self.transfers.lock() {
            transfers.push(Arc::downgrade(&t));
        }
        t
    }
}

/// Send `len` bytes of `file` from `offset` on `socket` under the watchdog;
/// `sent` counts what went out, also on error.
pub fn send(dog: &Watchdog, socket: OwnedFd, file: &File, offset: u64, len: u64, sent: &mut u64) -> io::Result<()> {
    let transfer = dog.watch(socket);
    let mut off = offset as libc::off64_t;
    while *sent < len {
        let want = (len - *sent).min(STEP) as usize;
        match nix::sys::sendfile::sendfile64(transfer.socket.as_fd(), file.as_fd(), Some(&mut off), want) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while serving it")),
            Ok(n) => {
                *sent += n as u64;
                transfer.progress.store(*sent, Relaxed);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn finds_the_connection_and_sends_a_file_range() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server_side, peer) = listener.accept().unwrap();
        assert!(find_socket("127.0.0.1:1".parse().unwrap(), port).is_none());
        let socket = find_socket(peer, port).expect("the accepted socket");
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        let dog = Watchdog::start(Duration::from_secs(5));
        let mut sent = 0;
        send(&dog, socket, &file, 2, 5, &mut sent).unwrap();
        assert_eq!(sent, 5);
        drop(_server_side);
        let mut got = String::new();
        client.read_to_string(&mut got).unwrap();
        assert_eq!(got, "23456");
    }

    #[test]
    fn the_watchdog_frees_a_transfer_to_a_client_that_stopped_reading() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server_side, peer) = listener.accept().unwrap();
        let socket = find_socket(peer, port).unwrap();
        let file = tempfile::tempfile().unwrap();
        file.set_len(64 << 20).unwrap();
        let dog = Watchdog::start(Duration::from_millis(500));
        let started = Instant::now();
        let mut sent = 0;
        assert!(send(&dog, socket, &file, 0, 64 << 20, &mut sent).is_err());
        assert!(sent < 64 << 20);
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }
}
