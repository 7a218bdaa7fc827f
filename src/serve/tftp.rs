//! Read-only TFTP (RFC 1350 with the blksize, tsize and timeout options of
//! RFC 2347/2348/2349) for chain-loading iPXE from plain PXE firmware.
//!
//! One socket listens for requests; each read request gets a thread and a
//! socket of its own (its transfer ID), sends one block at a time and
//! retransmits on timeout. Duplicate ACKs are ignored (no Sorcerer's
//! Apprentice), malformed packets are dropped, write requests refused.

pub mod packet;

use std::fs::File;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use packet::{Packet, ERR_ACCESS, ERR_ILLEGAL, ERR_NOT_FOUND, ERR_OPTION, ERR_UNDEFINED};

use super::files::{PathError, Root};
use super::metrics::Metrics;

const DEFAULT_BLKSIZE: usize = 512;
const MAX_BLKSIZE: usize = 65464;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const RETRIES: u32 = 5;
const MAX_TRANSFERS: i64 = 256;

/// Where TFTP looks for files: the served dir first, then the iPXE dir.
pub struct Sources {
    pub roots: Vec<Root>,
}

impl Sources {
    fn open(&self, name: &str) -> Result<(File, u64), PathError> {
        let name = name.trim_start_matches('/');
        let mut last = PathError::NotFound;
        for root in &self.roots {
            match root.open_name(name) {
                Ok(o) => return Ok((o.file, o.meta.len())),
                Err(PathError::NotFound) => {}
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Bind `addr` and serve until `stop`. Returns the bound address.
pub fn start(addr: &str, sources: Arc<Sources>, metrics: Arc<Metrics>, stop: Arc<AtomicBool>) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let socket = UdpSocket::bind(addr)?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let local = socket.local_addr()?;
    let handle = thread::Builder::new().name("tftp".into()).spawn(move || {
        let mut buf = vec![0u8; 2048];
        while !stop.load(Relaxed) {
            let (n, peer) = match socket.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                Err(e) => {
                    tracing::warn!("tftp: {e}");
                    continue;
                }
            };
            match packet::parse(&buf[..n]) {
                Ok(Packet::Request { write: false, file, mode, options }) => {
                    if metrics.active_tftp.load(Relaxed) >= MAX_TRANSFERS {
                        send_error(&socket, peer, ERR_UNDEFINED, "server busy, try again");
                        continue;
                    }
                    let (sources, metrics) = (sources.clone(), metrics.clone());
                    let spawned = thread::Builder::new().name("tftp-transfer".into()).spawn(move || {
                        transfer(local, peer, &file, &mode, &options, &sources, &metrics);
                    });
                    if let Err(e) = spawned {
                        tracing::warn!("tftp: cannot start a transfer thread: {e}");
                    }
                }
                Ok(Packet::Request { write: true, file, .. }) => {
                    tracing::info!(client = %peer, path = %file, "tftp: write request refused");
                    send_error(&socket, peer, ERR_ACCESS, "read-only server");
                }
                Ok(other) => tracing::debug!(client = %peer, "tftp: ignoring {other:?} on the request port"),
                Err(e) => tracing::debug!(client = %peer, "tftp: {e}"),
            }
        }
    })?;
    Ok((local, handle))
}

fn send_error(socket: &UdpSocket, peer: SocketAddr, code: u16, message: &str) {
    let _ = socket.send_to(&packet::encode(&Packet::Error { code, message: message.into() }), peer);
}

/// Options the server agrees to, and their effect.
#[derive(Debug, PartialEq)]
struct Negotiated {
    blksize: usize,
    timeout: Duration,
    /// Echoed in the OACK, in the client's order.
    oack: Vec<(String, String)>,
}

fn negotiate(options: &[(String, String)], size: u64) -> Negotiated {
    let mut n = Negotiated { blksize: DEFAULT_BLKSIZE, timeout: DEFAULT_TIMEOUT, oack: Vec::new() };
    for (key, value) in options {
        match key.as_str() {
            "blksize" => {
                if let Ok(v) = value.parse::<usize>() {
                    if v >= 8 {
                        n.blksize = v.min(MAX_BLKSIZE);
                        n.oack.push((key.clone(), n.blksize.to_string()));
                    }
                }
            }
            "tsize" => n.oack.push((key.clone(), size.to_string())),
            "timeout" => {
                if let Ok(v) = value.parse::<u64>() {
                    if (1..=255).contains(&v) {
                        n.timeout = Duration::from_secs(v);
                        n.oack.push((key.clone(), v.to_string()));
                    }
                }
            }
            _ => {}
        }
    }
    n
}

fn transfer(local: SocketAddr, peer: SocketAddr, name: &str, mode: &str, options: &[(String, String)], sources: &Sources, metrics: &Metrics) {
    let _active = Metrics::active(&metrics.active_tftp);
    let started = Instant::now();
    metrics.tftp_transfers.fetch_add(1, Relaxed);
    let socket = match UdpSocket::bind(SocketAddr::new(local.ip(), 0)).and_then(|s| s.connect(peer).map(|_| s)) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(client = %peer, "tftp: cannot open a transfer socket: {e}");
            metrics.tftp_errors.fetch_add(1, Relaxed);
            return;
        }
    };
    let result = run_transfer(&socket, name, mode, options, sources, metrics);
    let ms = started.elapsed().as_millis() as u64;
    match result {
        Ok((bytes, blksize)) => tracing::info!(client = %peer, path = %name, status = %"ok", bytes, blksize, ms, "tftp"),
        Err(e) => {
            metrics.tftp_errors.fetch_add(1, Relaxed);
            tracing::info!(client = %peer, path = %name, status = %"error", ms, "tftp: {e}");
        }
    }
}

fn fail(socket: &UdpSocket, code: u16, message: &str) -> io::Error {
    let _ = socket.send(&packet::encode(&Packet::Error { code, message: message.into() }));
    io::Error::other(message.to_string())
}

/// Send the file; returns bytes sent and the block size used.
fn run_transfer(socket: &UdpSocket, name: &str, mode: &str, options: &[(String, String)], sources: &Sources, metrics: &Metrics) -> io::Result<(u64, usize)> {
    if mode != "octet" && mode != "netascii" {
        return Err(fail(socket, ERR_ILLEGAL, "only octet (and netascii, sent as is) mode"));
    }
    let (file, size) = match sources.open(name) {
        Ok(x) => x,
        Err(PathError::NotFound) => return Err(fail(socket, ERR_NOT_FOUND, "file not found")),
        Err(_) => return Err(fail(socket, ERR_ACCESS, "access violation")),
    };
    let n = negotiate(options, size);
    let mut buf = vec![0u8; 4 + MAX_BLKSIZE.max(n.blksize) + 4];
    if !n.oack.is_empty() {
        let oack = packet::encode(&Packet::Oack { options: n.oack.clone() });
        exchange(socket, &oack, 0, n.timeout, &mut buf)?;
    }
    let mut data = vec![0u8; n.blksize];
    let mut offset = 0u64;
    let mut block: u16 = 1;
    loop {
        let len = read_full(&file, &mut data, offset)?;
        let mut pkt = Vec::with_capacity(4 + len);
        pkt.extend_from_slice(&packet::DATA.to_be_bytes());
        pkt.extend_from_slice(&block.to_be_bytes());
        pkt.extend_from_slice(&data[..len]);
        exchange(socket, &pkt, block, n.timeout, &mut buf)?;
        offset += len as u64;
        metrics.tftp_bytes.fetch_add(len as u64, Relaxed);
        if len < n.blksize {
            return Ok((offset, n.blksize));
        }
        block = block.wrapping_add(1);
    }
}

fn read_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let n = file.read_at(&mut buf[got..], offset + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

/// Send `pkt` and wait for the ACK of `block`, retransmitting on timeout.
fn exchange(socket: &UdpSocket, pkt: &[u8], block: u16, timeout: Duration, buf: &mut [u8]) -> io::Result<()> {
    for _ in 0..=RETRIES {
        socket.send(pkt)?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left))?;
            let n = match socket.recv(buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                // ICMP port unreachable: the client went away.
                Err(e) => return Err(e),
            };
            match packet::parse(&buf[..n]) {
                Ok(Packet::Ack { block: b }) if b == block => return Ok(()),
                Ok(Packet::Error { code, message }) => {
                    let why = if code == ERR_OPTION { "client refused the options" } else { "client sent an error" };
                    return Err(io::Error::other(format!("{why}: {code} {message}")));
                }
                // Duplicate or stale ACKs, garbage: keep waiting.
                _ => {}
            }
        }
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped acknowledging"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn negotiates_options() {
        let n = negotiate(&opts(&[("blksize", "1432"), ("tsize", "0"), ("timeout", "3"), ("windowsize", "4")]), 1000);
        assert_eq!(n.blksize, 1432);
        assert_eq!(n.timeout, Duration::from_secs(3));
        assert_eq!(n.oack, opts(&[("blksize", "1432"), ("tsize", "1000"), ("timeout", "3")]));
        let n = negotiate(&opts(&[("blksize", "100000"), ("timeout", "0")]), 1);
        assert_eq!(n.blksize, MAX_BLKSIZE);
        assert_eq!(n.oack, opts(&[("blksize", "65464")]));
        assert_eq!(negotiate(&opts(&[("blksize", "4")]), 1).oack, vec![]);
    }

    #[test]
    fn serves_a_file_over_loopback_with_block_rollover_free_small_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("f"), &content).unwrap();
        let sources = Arc::new(Sources { roots: vec![Root::new(dir.path()).unwrap()] });
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, handle) = start("127.0.0.1:0", sources, Arc::new(Metrics::default()), stop.clone()).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        client.send_to(b"garbage", addr).unwrap();
        let rrq = Packet::Request { write: false, file: "f".into(), mode: "octet".into(), options: opts(&[("blksize", "1000")]) };
        client.send_to(&packet::encode(&rrq), addr).unwrap();
        let mut buf = [0u8; 2048];
        let (n, tid) = client.recv_from(&mut buf).unwrap();
        assert_eq!(packet::parse(&buf[..n]).unwrap(), Packet::Oack { options: opts(&[("blksize", "1000")]) });
        client.send_to(&packet::encode(&Packet::Ack { block: 0 }), tid).unwrap();
        let mut got = Vec::new();
        loop {
            let (n, _) = client.recv_from(&mut buf).unwrap();
            let Packet::Data { block, data } = packet::parse(&buf[..n]).unwrap() else { panic!("not data") };
            got.extend_from_slice(&data);
            client.send_to(&packet::encode(&Packet::Ack { block }), tid).unwrap();
            if data.len() < 1000 {
                break;
            }
        }
        assert_eq!(got, content);
        let missing = Packet::Request { write: false, file: "../etc/passwd".into(), mode: "octet".into(), options: vec![] };
        client.send_to(&packet::encode(&missing), addr).unwrap();
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert!(matches!(packet::parse(&buf[..n]).unwrap(), Packet::Error { code: ERR_ACCESS, .. }));
        stop.store(true, Relaxed);
        handle.join().unwrap();
    }
}
