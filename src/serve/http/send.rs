//! Writing a [`Reply`] on the connection's own socket: the head, then the
//! body — bytes with one write, a file range with `sendfile(2)` straight
//! from the descriptor the handler opened (zero-copy; a rebuild that
//! renames a new file over the name does not change a download in
//! progress). Every write must make progress within the timeout, or the
//! client is dropped: one that stops reading holds nothing but its socket.

use std::time::Duration;

use http::header::{CONNECTION, CONTENT_LENGTH, SERVER};
use http::{HeaderValue, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::sendfile::within;
use crate::serve::reply::{Body, Reply};

/// What went out.
pub struct Sent {
    /// Body bytes written.
    pub bytes: u64,
    /// The whole response was written.
    pub complete: bool,
    /// The body went out with sendfile.
    pub zero_copy: bool,
}

/// Write `reply`; `head_only` for HEAD (the head says how long the body
/// would be). `Connection: close` when the connection ends after it.
pub async fn reply(
    stream: &mut TcpStream,
    reply: Reply,
    head_only: bool,
    keep_alive: bool,
    timeout: Duration,
) -> Sent {
    let length = reply.body.len();
    let head = head(reply.status, reply.headers, length, keep_alive);
    let mut sent = Sent {
        bytes: 0,
        complete: false,
        zero_copy: false,
    };
    if let Err(e) = within(timeout, stream.write_all(&head)).await {
        tracing::debug!("http: writing a response head failed: {e}");
        return sent;
    }
    let written = match reply.body {
        _ if head_only => Ok(()),
        Body::Empty => Ok(()),
        Body::Bytes(b) => within(timeout, stream.write_all(&b))
            .await
            .map(|()| sent.bytes = b.len() as u64),
        Body::File { file, start, len } => {
            sent.zero_copy = true;
            super::bulk::send_file(stream, file, start, len, timeout, &mut sent.bytes).await
        }
    };
    match written {
        Ok(()) => sent.complete = true,
        Err(e) => tracing::debug!("http: response cut after {} body bytes: {e}", sent.bytes),
    }
    sent
}

/// A complete response for a request that could not be parsed.
pub async fn refuse(stream: &mut TcpStream, status: u16, why: &str, timeout: Duration) {
    let _ = reply(
        stream,
        Reply::text(status, format!("{why}\n")),
        false,
        false,
        timeout,
    )
    .await;
}

/// How long [`linger`] waits for the client to close.
const LINGER: Duration = Duration::from_secs(2);
/// The most bytes [`linger`] reads away.
const LINGER_BYTES: usize = 256 * 1024;

/// Close after a final reply without a reset: send FIN, then read and drop
/// what the client still sends (a body not read, pipelined requests) until
/// it closes, for at most [`LINGER`] and [`LINGER_BYTES`]. Nothing read
/// here is taken as a request.
pub async fn linger(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let drain = async {
        let mut chunk = [0u8; 8192];
        let mut total = 0;
        while total < LINGER_BYTES {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

fn head(
    status: StatusCode,
    mut headers: http::HeaderMap,
    length: u64,
    keep_alive: bool,
) -> Vec<u8> {
    headers.insert(SERVER, HeaderValue::from_static("mkimage"));
    if status != StatusCode::NOT_MODIFIED {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    if !keep_alive {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in &headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}
