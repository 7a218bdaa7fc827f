//! HTTP/1.1 on sockets the server owns, on the tokio runtime: one task per
//! connection (no thread per connection, so thousands of idle or trickling
//! clients cost only memory), request heads parsed by httparse, file bodies
//! sent with `sendfile` from the opened file, by tasks on a runtime of their
//! own (`bulk`) so streaming never delays a boot script.
//!
//! Not hyper: with the same handlers, hyper's streamed body (the file read
//! into memory, then written) took 1.3–1.6× the time of sendfile on the
//! owned socket for 64 × 100 MiB, at 1.5× its CPU, and answered
//! `/boot.ipxe` 5–8× slower meanwhile (bench/serve.sh, numbers in the
//! README). The protocol surface a boot server needs is small: GET and
//! HEAD, keep-alive, and small POST bodies to the API only (`body`).
//!
//! A client must send its whole request head within the timeout (counted
//! from when the server starts waiting for it, so it also bounds a
//! keep-alive connection's idle time) and every write must make progress
//! within it. Handlers run on the blocking pool (they open, read and
//! sometimes hash files) and return a [`Reply`].

mod body;
mod bulk;
mod head;
mod send;
mod sendfile;

pub use body::RequestBody;
#[cfg(test)]
pub use head::parse as parse_head;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::request::Parts;
use http::Method;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::metrics::{Gauge, Metrics};
use super::reply::Reply;
use head::Refused;

/// What answers a request (the router, or a fixed set of files).
pub type Handler = dyn Fn(&Parts, SocketAddr) -> Reply + Send + Sync;

/// Accept connections until `stop` turns true; each runs as its own task.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<Handler>,
    metrics: Arc<Metrics>,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(connection(
                    stream,
                    peer,
                    handler.clone(),
                    metrics.clone(),
                    timeout,
                ));
            }
            Err(e) => {
                // Out of descriptors (EMFILE) or memory: existing
                // connections go on; new ones wait in the backlog.
                tracing::warn!("http: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<Handler>,
    metrics: Arc<Metrics>,
    timeout: Duration,
) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let (head, len) =
            match tokio::time::timeout(timeout, head::read(&mut stream, &mut buf)).await {
                Ok(Ok(Some(Ok(parsed)))) => parsed,
                Ok(Ok(Some(Err(Refused::TooLarge)))) => {
                    send::refuse(&mut stream, 431, "request head too large", timeout).await;
                    return send::linger(stream).await;
                }
                Ok(Ok(Some(Err(Refused::Malformed(why))))) => {
                    send::refuse(&mut stream, 400, &why, timeout).await;
                    return send::linger(stream).await;
                }
                // Closed, reset, or no complete head within the timeout.
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return,
            };
        buf.drain(..len);
        let started = Instant::now();
        let (mut parts, mut keep_alive) = (head.parts, head.keep_alive);
        let head_only = parts.method == Method::HEAD;
        let (method, target) = request_line(&parts);
        let Ok(refused) = take_body(
            &mut stream,
            &mut buf,
            &mut parts,
            (head.has_body, head.expect_continue),
            timeout,
        )
        .await
        else {
            return;
        };
        // Not reading the body means the connection cannot be reused.
        keep_alive &= refused.is_none();
        let mut reply = match refused {
            Some(reply) => reply,
            None => answer(&handler, parts, peer).await,
        };
        let after_sent = reply.after_sent.take();
        let (status, mac) = (reply.status.as_u16(), reply.mac.clone());
        let download = matches!(reply.body, super::reply::Body::File { .. }) && !head_only;
        let active = download.then(|| metrics.active(Gauge::Downloads));
        let sent = send::reply(&mut stream, reply, head_only, keep_alive, timeout).await;
        drop(active);
        count(&metrics, status, &sent);
        if let Some(after) = after_sent.filter(|_| sent.complete && !head_only) {
            tokio::task::spawn_blocking(after);
        }
        tracing::info!(
            client = %peer,
            mac = %mac.as_deref().unwrap_or("-"),
            method = %method,
            path = %target,
            status,
            bytes = sent.bytes,
            ms = started.elapsed().as_millis() as u64,
            complete = sent.complete,
            "http"
        );
        if !sent.complete {
            return;
        }
        if !keep_alive {
            // An unread body may still be on the wire: read it away
            // briefly, so the client gets the reply, not a reset.
            return send::linger(stream).await;
        }
    }
}

/// The method and the target (path and query) a request log line names.
fn request_line(parts: &Parts) -> (String, String) {
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| parts.uri.to_string());
    (parts.method.to_string(), target)
}

/// The handler's reply, made on a blocking thread.
async fn answer(handler: &Arc<Handler>, parts: Parts, peer: SocketAddr) -> Reply {
    let h = handler.clone();
    tokio::task::spawn_blocking(move || h(&parts, peer))
        .await
        .unwrap_or_else(|e| Reply::text(500, format!("the request handler failed: {e}\n")))
}

/// The request's body read into its extensions (a request `body::accepted`
/// takes), or the reply refusing it; `Err` when the connection is gone or
/// stalled.
async fn take_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    parts: &mut Parts,
    (has_body, expect_continue): (bool, bool),
    timeout: Duration,
) -> Result<Option<Reply>, ()> {
    if parts.headers.get(http::header::EXPECT).is_some() && !expect_continue {
        return Ok(Some(Reply::text(
            417,
            "the only expectation served is 100-continue\n",
        )));
    }
    if has_body && body::accepted(parts) {
        let reading = body::read(stream, buf, parts, expect_continue);
        return match tokio::time::timeout(timeout, reading).await {
            Ok(Ok(Ok(bytes))) => {
                parts.extensions.insert(bytes);
                Ok(None)
            }
            Ok(Ok(Err(body::Refused(status, why)))) => {
                Ok(Some(Reply::text(status, format!("{why}\n"))))
            }
            Ok(Err(_)) | Err(_) => Err(()),
        };
    }
    if has_body {
        return Ok(Some(Reply::text(
            413,
            "request bodies are accepted only by POST /api/…\n",
        )));
    }
    Ok(None)
}

/// A reply's part in the counters.
fn count(metrics: &Metrics, status: u16, sent: &send::Sent) {
    metrics.request(status, sent.bytes);
    if sent.zero_copy {
        metrics.zero_copy.fetch_add(1, Relaxed);
    }
    if !sent.complete {
        metrics.http_errors.fetch_add(1, Relaxed);
    }
}
