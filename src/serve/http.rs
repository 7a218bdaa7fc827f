//! HTTP: a dispatcher pulls requests from tiny_http and hands file
//! downloads to a bounded pool of bulk workers and everything else (scripts,
//! status, metrics, HEAD, errors) to a small pool of its own, so a boot
//! script is answered at once even while every bulk worker is streaming.
//!
//! A stalled client holds at most one bulk worker, and only until the socket
//! write timeout (set on the listening socket, inherited by every accepted
//! one) fails its write.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};

use anyhow::Context;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tiny_http::{Header, Method, Request, Response};

use super::files::{Root, ShaCache};
use super::ipxe::Scripts;
use super::metrics::Metrics;
use super::range::{self, ByteRange};
use super::sendfile;
use super::{pages, script};

/// Bytes per read/write of a file body: large, so a 100 MB file is a few
/// hundred syscalls rather than tens of thousands.
const CHUNK: usize = 512 * 1024;

/// Bodies at least this large are sent with sendfile (see `sendfile`).
const ZERO_COPY_MIN: u64 = 256 * 1024;

/// Everything a request handler needs.
pub struct State {
    pub root: Root,
    pub sha: ShaCache,
    pub metrics: Arc<Metrics>,
    pub scripts: Scripts,
    pub boot_config: Option<PathBuf>,
    pub public_url: Option<String>,
    pub local_addr: SocketAddr,
    pub stop: Arc<AtomicBool>,
    pub watchdog: Arc<sendfile::Watchdog>,
}

/// What a handler did, for the log line and the metrics.
pub struct Outcome {
    pub status: u16,
    pub bytes: u64,
    pub mac: Option<String>,
}

impl Outcome {
    pub fn new(status: u16, bytes: u64) -> Outcome {
        Outcome { status, bytes, mac: None }
    }
}

/// Start tiny_http on `listener`, the dispatcher and the worker pools; they
/// run until `state.stop`.
pub fn start(listener: TcpListener, state: Arc<State>, bulk_workers: usize) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut server = new_server(&listener)?;
    let (bulk_tx, bulk_rx) = mpsc::channel::<Request>();
    let (light_tx, light_rx) = mpsc::channel::<Request>();
    let mut handles = Vec::new();
    for (rx, n, name) in [(bulk_rx, bulk_workers.max(1), "http-bulk"), (light_rx, 4, "http-light")] {
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n {
            let (rx, state) = (rx.clone(), state.clone());
            if let Ok(h) = thread::Builder::new().name(format!("{name}-{i}")).spawn(move || worker(&rx, &state)) {
                handles.push(h);
            }
        }
    }
    // tiny_http's accept thread ends on any accept error (EMFILE, say); its
    // error arrives here, and a new server takes over the same listening
    // socket while the old one's open connections are still drained.
    let dispatcher = thread::Builder::new().name("http-dispatch".into()).spawn(move || {
        let mut retired: Vec<tiny_http::Server> = Vec::new();
        while !state.stop.load(Relaxed) {
            let mut got = Vec::new();
            for old in &retired {
                while let Ok(Some(request)) = old.try_recv() {
                    got.push(request);
                }
            }
            match server.recv_timeout(Duration::from_millis(200)) {
                Ok(Some(request)) => got.push(request),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!("http: accepting connections failed ({e}); restarting the listener");
                    thread::sleep(Duration::from_millis(100));
                    match new_server(&listener) {
                        Ok(fresh) => retired.push(std::mem::replace(&mut server, fresh)),
                        Err(e) => tracing::error!("http: {e:#}"),
                    }
                }
            }
            for request in got {
                let tx = if is_download(&request) { &bulk_tx } else { &light_tx };
                if tx.send(request).is_err() {
                    return;
                }
            }
        }
    })?;
    handles.push(dispatcher);
    Ok(handles)
}

fn new_server(listener: &TcpListener) -> anyhow::Result<tiny_http::Server> {
    let clone = listener.try_clone().context("cannot share the HTTP listening socket")?;
    tiny_http::Server::from_listener(clone, None).map_err(|e| anyhow::anyhow!("cannot start the HTTP server: {e}"))
}

/// A GET of something that is not one of the server's own pages.
fn is_download(request: &Request) -> bool {
    let path = request.url().split('?').next().unwrap_or("");
    *request.method() == Method::Get && !matches!(path, "/" | "/boot.ipxe" | "/metrics")
}

fn worker(rx: &Mutex<Receiver<Request>>, state: &State) {
    loop {
        let request = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(request) = request else { return };
        let started = Instant::now();
        let client = request.remote_addr().map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        let method = request.method().to_string();
        let url = request.url().to_string();
        let outcome = handle(request, state, &client);
        state.metrics.request(outcome.status, outcome.bytes);
        tracing::info!(
            client = %client,
            mac = %outcome.mac.as_deref().unwrap_or("-"),
            method = %method,
            path = %url,
            status = outcome.status,
            bytes = outcome.bytes,
            ms = started.elapsed().as_millis() as u64,
            "http"
        );
    }
}

fn handle(request: Request, state: &State, client: &str) -> Outcome {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    if !path.starts_with('/') {
        return respond_text(request, 400, "request target must be a path\n");
    }
    if !matches!(request.method(), Method::Get | Method::Head) {
        return respond_text(request, 405, "read-only server: GET and HEAD only\n");
    }
    match path {
        "/" => pages::status(request, state),
        "/metrics" => {
            let body = state.metrics.render();
            respond(request, 200, "text/plain; version=0.0.4", body.into_bytes())
        }
        "/boot.ipxe" => script::boot(request, state, query, client),
        _ => serve_file(request, state, path, query),
    }
}

/// A small in-memory response.
pub fn respond(request: Request, status: u16, content_type: &str, body: Vec<u8>) -> Outcome {
    let len = if *request.method() == Method::Head { 0 } else { body.len() as u64 };
    let mut response = Response::from_data(body).with_status_code(status);
    if let Ok(h) = Header::from_bytes("Content-Type", content_type) {
        response.add_header(h);
    }
    match request.respond(response) {
        Ok(()) => Outcome::new(status, len),
        Err(_) => Outcome::new(status, 0),
    }
}

pub fn respond_text(request: Request, status: u16, text: &str) -> Outcome {
    respond(request, status, "text/plain; charset=utf-8", text.as_bytes().to_vec())
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "ipxe" | "sha256" | "txt" | "log" => "text/plain; charset=utf-8",
        "json" => "application/json",
        "html" => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn header<'a>(request: &'a Request, name: &'static str) -> Option<&'a str> {
    request.headers().iter().find(|h| h.field.equiv(name)).map(|h| h.value.as_str())
}

/// Whether the connection ends after this response (as tiny_http decides).
fn closes(request: &Request) -> bool {
    match header(request, "Connection").map(|v| v.to_ascii_lowercase()) {
        Some(v) if v.contains("close") => true,
        Some(v) if v.contains("keep-alive") => false,
        _ => request.http_version().0 == 1 && request.http_version().1 == 0,
    }
}

fn serve_file(request: Request, state: &State, path: &str, query: &str) -> Outcome {
    let opened = match state.root.open(path) {
        Ok(o) => o,
        Err(e) => return respond_text(request, e.status(), &format!("{e}\n")),
    };
    let size = opened.meta.len();
    let sha = state.sha.sha256(&state.root, &opened);
    if let Some(want) = super::query_param(query, "sha256") {
        if sha.as_deref() != Some(want.as_str()) {
            let msg = format!("{path}: version sha256={want} is no longer published; fetch the boot script again\n");
            return respond_text(request, 404, &msg);
        }
    }
    let etag = sha.as_ref().map(|s| format!("\"{s}\""));
    if let (Some(tag), Some(inm)) = (&etag, header(&request, "If-None-Match")) {
        if inm.split(',').any(|t| t.trim() == tag || t.trim() == "*") {
            return write_head(request, 304, &[("ETag", tag.clone())], None);
        }
    }
    let mut range = header(&request, "Range").map(|r| range::parse(r, size)).unwrap_or(ByteRange::Full);
    if let (Some(if_range), Some(tag)) = (header(&request, "If-Range"), &etag) {
        if if_range.trim() != tag {
            range = ByteRange::Full;
        }
    }
    let mut headers = vec![("Content-Type", content_type(path).to_string()), ("Accept-Ranges", "bytes".to_string())];
    if let Some(tag) = &etag {
        headers.push(("ETag", tag.clone()));
    }
    let (status, start, len) = match range {
        ByteRange::Full => (200, 0, size),
        ByteRange::Part { start, end } => {
            headers.push(("Content-Range", format!("bytes {start}-{end}/{size}")));
            (206, start, end - start + 1)
        }
        ByteRange::Unsatisfiable => {
            headers.push(("Content-Range", format!("bytes */{size}")));
            return write_head(request, 416, &headers, Some(0));
        }
    };
    let body = (*request.method() == Method::Get).then_some((&opened.file, start, len));
    let _active = Metrics::active(&state.metrics.active_downloads);
    // Large bodies go out with sendfile on the connection's own socket.
    let socket = match (body, request.remote_addr()) {
        (Some(_), Some(peer)) if len >= ZERO_COPY_MIN => {
            sendfile::find_socket(*peer, state.local_addr.port()).map(|s| (s, &*state.watchdog))
        }
        _ => None,
    };
    if socket.is_some() {
        state.metrics.zero_copy.fetch_add(1, Relaxed);
    }
    let outcome = write_response(request, status, &headers, len, body, socket);
    if outcome.status == 0 {
        state.metrics.http_errors.fetch_add(1, Relaxed);
        return Outcome::new(status, outcome.bytes);
    }
    outcome
}

fn write_head(request: Request, status: u16, headers: &[(&str, String)], len: Option<u64>) -> Outcome {
    let mut outcome = write_response(request, status, headers, len.unwrap_or(0), None, None);
    outcome.status = status;
    outcome
}

/// Write status line, headers and (for GET) `len` bytes of `file` from
/// `start` straight to the connection. Status 0 in the outcome means the
/// connection failed part way.
fn write_response(
    request: Request,
    status: u16,
    headers: &[(&str, String)],
    len: u64,
    body: Option<(&std::fs::File, u64, u64)>,
    socket: Option<(OwnedFd, &sendfile::Watchdog)>,
) -> Outcome {
    let close = closes(&request);
    let mut head = format!("HTTP/1.1 {status} {}\r\nServer: mkimage\r\nContent-Length: {len}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut writer = request.into_writer();
    let mut sent = 0u64;
    let result = (|| -> io::Result<()> {
        writer.write_all(head.as_bytes())?;
        if let (Some((file, start, len)), Some((socket, dog))) = (body, socket) {
            writer.flush()?;
            return sendfile::send(dog, socket, file, start, len, &mut sent);
        }
        if let Some((file, start, len)) = body {
            let mut buf = vec![0u8; CHUNK.min(len as usize).max(1)];
            while sent < len {
                let want = buf.len().min((len - sent) as usize);
                let n = file.read_at(&mut buf[..want], start + sent)?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while serving it"));
                }
                writer.write_all(&buf[..n])?;
                sent += n as u64;
            }
        }
        writer.flush()
    })();
    match result {
        Ok(()) => Outcome::new(status, sent),
        Err(e) => {
            tracing::debug!("http: write failed after {sent} bytes: {e}");
            Outcome::new(0, sent)
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        416 => "Range Not Satisfiable",
        _ => "",
    }
}
