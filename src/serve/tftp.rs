//! Read-only TFTP (RFC 1350 with the blksize, tsize and timeout options of
//! RFC 2347/2348/2349) for chain-loading iPXE from plain PXE firmware, as
//! tasks on the server's tokio runtime.
//!
//! One socket listens for requests; each read request gets a task and a
//! socket of its own (its transfer ID), sends one block at a time and
//! retransmits on timeout. Duplicate ACKs are ignored (no Sorcerer's
//! Apprentice), malformed packets are dropped, write requests refused.
//! File data is read on the blocking pool, 256 KiB at a time.

pub mod packet;

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;

use packet::{Packet, ERR_ACCESS, ERR_ILLEGAL, ERR_NOT_FOUND, ERR_OPTION, ERR_UNDEFINED};

use super::metrics::{Gauge, Metrics};
use super::served_dir::{PathError, Root};

const DEFAULT_BLKSIZE: usize = 512;
const MAX_BLKSIZE: usize = 65464;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const RETRIES: u32 = 5;
const MAX_TRANSFERS: i64 = 256;
/// File bytes read per blocking read.
const READ_AHEAD: usize = 256 * 1024;

/// Files made per request (the Secure Boot path's GRUB configs, by the
/// asking machine's MAC; see `secure_tftp`): `None` when the name is not
/// one of them, else the open file (or why there is none, for the log).
pub type Dynamic = dyn Fn(&str, SocketAddr) -> Option<Result<File, String>> + Send + Sync;

/// Where TFTP looks for files: the made-per-request ones, then the served
/// dir, then the iPXE dir.
pub struct Sources {
    pub roots: Vec<Root>,
    pub dynamic: Option<Arc<Dynamic>>,
}

impl Sources {
    fn open(&self, name: &str, peer: SocketAddr) -> Result<(File, u64), PathError> {
        let name = name.trim_start_matches('/');
        if let Some(made) = self.dynamic.as_ref().and_then(|d| d(name, peer)) {
            return match made.and_then(|f| {
                let size = f.metadata().map_err(|e| e.to_string())?.len();
                Ok((f, size))
            }) {
                Ok(x) => Ok(x),
                Err(why) => {
                    tracing::info!(client = %peer, path = %name, "tftp: {why}");
                    Err(PathError::NotFound)
                }
            };
        }
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

/// Answer requests on `socket` until `stop` turns true.
pub async fn serve(
    socket: UdpSocket,
    sources: Arc<Sources>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => return tracing::error!("tftp: {e}"),
    };
    let mut buf = vec![0u8; 2048];
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = stop.changed() => return,
        };
        let (n, peer) = match received {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("tftp: {e}");
                continue;
            }
        };
        match packet::parse(&buf[..n]) {
            Ok(Packet::Request {
                write: false,
                file,
                mode,
                options,
            }) => {
                if metrics.active_tftp.load(Relaxed) >= MAX_TRANSFERS {
                    send_error(&socket, peer, ERR_UNDEFINED, "server busy, try again").await;
                    continue;
                }
                let (sources, metrics) = (sources.clone(), metrics.clone());
                tokio::spawn(async move {
                    transfer(local, peer, &file, &mode, &options, &sources, &metrics).await
                });
            }
            Ok(Packet::Request {
                write: true, file, ..
            }) => {
                tracing::info!(client = %peer, path = %file, "tftp: write request refused");
                send_error(&socket, peer, ERR_ACCESS, "read-only server").await;
            }
            Ok(other) => {
                tracing::debug!(client = %peer, "tftp: ignoring {other:?} on the request port")
            }
            Err(e) => tracing::debug!(client = %peer, "tftp: {e}"),
        }
    }
}

async fn send_error(socket: &UdpSocket, peer: SocketAddr, code: u16, message: &str) {
    let _ = socket
        .send_to(
            &packet::encode(&Packet::Error {
                code,
                message: message.into(),
            }),
            peer,
        )
        .await;
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
    let mut n = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        timeout: DEFAULT_TIMEOUT,
        oack: Vec::new(),
    };
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

async fn transfer(
    local: SocketAddr,
    peer: SocketAddr,
    name: &str,
    mode: &str,
    options: &[(String, String)],
    sources: &Arc<Sources>,
    metrics: &Arc<Metrics>,
) {
    let _active = metrics.active(Gauge::Tftp);
    let started = Instant::now();
    metrics.tftp_transfers.fetch_add(1, Relaxed);
    let socket = match UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(client = %peer, "tftp: cannot open a transfer socket: {e}");
            metrics.tftp_errors.fetch_add(1, Relaxed);
            return;
        }
    };
    let result = match socket.connect(peer).await {
        Ok(()) => run_transfer(&socket, name, mode, options, sources, metrics).await,
        Err(e) => Err(e),
    };
    let ms = started.elapsed().as_millis() as u64;
    match result {
        Ok((bytes, blksize)) => {
            tracing::info!(client = %peer, path = %name, status = %"ok", bytes, blksize, ms, "tftp")
        }
        Err(e) => {
            metrics.tftp_errors.fetch_add(1, Relaxed);
            tracing::info!(client = %peer, path = %name, status = %"error", ms, "tftp: {e}");
        }
    }
}

async fn fail(socket: &UdpSocket, code: u16, message: &str) -> io::Error {
    let _ = socket
        .send(&packet::encode(&Packet::Error {
            code,
            message: message.into(),
        }))
        .await;
    io::Error::other(message.to_string())
}

/// Send the file; returns bytes sent and the block size used.
async fn run_transfer(
    socket: &UdpSocket,
    name: &str,
    mode: &str,
    options: &[(String, String)],
    sources: &Arc<Sources>,
    metrics: &Metrics,
) -> io::Result<(u64, usize)> {
    if mode != "octet" && mode != "netascii" {
        return Err(fail(
            socket,
            ERR_ILLEGAL,
            "only octet (and netascii, sent as is) mode",
        )
        .await);
    }
    let (srcs, owned) = (sources.clone(), name.to_string());
    let peer = socket.peer_addr()?;
    let opened = tokio::task::spawn_blocking(move || srcs.open(&owned, peer))
        .await
        .map_err(io::Error::other)?;
    let (file, size) = match opened {
        Ok(x) => x,
        Err(PathError::NotFound) => return Err(fail(socket, ERR_NOT_FOUND, "file not found").await),
        Err(_) => return Err(fail(socket, ERR_ACCESS, "access violation").await),
    };
    let n = negotiate(options, size);
    let mut buf = vec![0u8; 4 + MAX_BLKSIZE.max(n.blksize) + 4];
    if !n.oack.is_empty() {
        let oack = packet::encode(&Packet::Oack {
            options: n.oack.clone(),
        });
        exchange(socket, &oack, 0, n.timeout, &mut buf).await?;
    }
    let mut reader = Reader {
        file: Arc::new(file),
        data: Vec::new(),
        at: 0,
    };
    let mut offset = 0u64;
    let mut block: u16 = 1;
    loop {
        let data = reader.block(offset, n.blksize).await?;
        let len = data.len();
        let mut pkt = Vec::with_capacity(4 + len);
        pkt.extend_from_slice(&packet::DATA.to_be_bytes());
        pkt.extend_from_slice(&block.to_be_bytes());
        pkt.extend_from_slice(&data);
        exchange(socket, &pkt, block, n.timeout, &mut buf).await?;
        offset += len as u64;
        metrics.tftp_bytes.fetch_add(len as u64, Relaxed);
        if len < n.blksize {
            return Ok((offset, n.blksize));
        }
        block = block.wrapping_add(1);
    }
}

/// File data for the blocks, read ahead on the blocking pool.
struct Reader {
    file: Arc<File>,
    /// `data` holds the file's bytes from offset `at`.
    data: Vec<u8>,
    at: u64,
}

impl Reader {
    /// Up to `len` bytes at `offset` (fewer only at the end of the file).
    async fn block(&mut self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let end = self.at + self.data.len() as u64;
        if offset < self.at || offset + len as u64 > end {
            let file = self.file.clone();
            let want = READ_AHEAD.max(len);
            self.data = tokio::task::spawn_blocking(move || -> io::Result<Vec<u8>> {
                let mut buf = vec![0u8; want];
                let mut got = 0;
                while got < want {
                    let n = file.read_at(&mut buf[got..], offset + got as u64)?;
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                buf.truncate(got);
                Ok(buf)
            })
            .await
            .map_err(io::Error::other)??;
            self.at = offset;
        }
        let from = (offset - self.at) as usize;
        let to = (from + len).min(self.data.len());
        Ok(self.data[from.min(to)..to].to_vec())
    }
}

/// Send `pkt` and wait for the ACK of `block`, retransmitting on timeout.
async fn exchange(
    socket: &UdpSocket,
    pkt: &[u8],
    block: u16,
    timeout: Duration,
    buf: &mut [u8],
) -> io::Result<()> {
    for _ in 0..=RETRIES {
        socket.send(pkt).await?;
        let deadline = Instant::now() + timeout;
        loop {
            let n = match tokio::time::timeout_at(deadline, socket.recv(buf)).await {
                Err(_) => break,
                Ok(Ok(n)) => n,
                // ICMP port unreachable: the client went away.
                Ok(Err(e)) => return Err(e),
            };
            match packet::parse(&buf[..n]) {
                Ok(Packet::Ack { block: b }) if b == block => return Ok(()),
                Ok(Packet::Error { code, message }) => {
                    let why = if code == ERR_OPTION {
                        "client refused the options"
                    } else {
                        "client sent an error"
                    };
                    return Err(io::Error::other(format!("{why}: {code} {message}")));
                }
                // Duplicate or stale ACKs, garbage: keep waiting.
                _ => {}
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "client stopped acknowledging",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn negotiates_options() {
        let n = negotiate(
            &opts(&[
                ("blksize", "1432"),
                ("tsize", "0"),
                ("timeout", "3"),
                ("windowsize", "4"),
            ]),
            1000,
        );
        assert_eq!(n.blksize, 1432);
        assert_eq!(n.timeout, Duration::from_secs(3));
        assert_eq!(
            n.oack,
            opts(&[("blksize", "1432"), ("tsize", "1000"), ("timeout", "3")])
        );
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
        let sources = Arc::new(Sources {
            roots: vec![Root::new(dir.path()).unwrap()],
            dynamic: None,
        });
        let rt = tokio::runtime::Runtime::new().unwrap();
        let socket = rt.block_on(UdpSocket::bind("127.0.0.1:0")).unwrap();
        let addr = socket.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let server = rt.spawn(serve(
            socket,
            sources,
            Arc::new(Metrics::default()),
            stopped,
        ));
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.send_to(b"garbage", addr).unwrap();
        let rrq = Packet::Request {
            write: false,
            file: "f".into(),
            mode: "octet".into(),
            options: opts(&[("blksize", "1000")]),
        };
        client.send_to(&packet::encode(&rrq), addr).unwrap();
        let mut buf = [0u8; 2048];
        let (n, tid) = client.recv_from(&mut buf).unwrap();
        assert_eq!(
            packet::parse(&buf[..n]).unwrap(),
            Packet::Oack {
                options: opts(&[("blksize", "1000")])
            }
        );
        client
            .send_to(&packet::encode(&Packet::Ack { block: 0 }), tid)
            .unwrap();
        let mut got = Vec::new();
        loop {
            let (n, _) = client.recv_from(&mut buf).unwrap();
            let Packet::Data { block, data } = packet::parse(&buf[..n]).unwrap() else {
                panic!("not data")
            };
            got.extend_from_slice(&data);
            client
                .send_to(&packet::encode(&Packet::Ack { block }), tid)
                .unwrap();
            if data.len() < 1000 {
                break;
            }
        }
        assert_eq!(got, content);
        let missing = Packet::Request {
            write: false,
            file: "../etc/passwd".into(),
            mode: "octet".into(),
            options: vec![],
        };
        client.send_to(&packet::encode(&missing), addr).unwrap();
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert!(matches!(
            packet::parse(&buf[..n]).unwrap(),
            Packet::Error {
                code: ERR_ACCESS,
                ..
            }
        ));
        stop.send(true).unwrap();
        rt.block_on(server).unwrap();
    }
}
