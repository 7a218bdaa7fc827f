//! Request bodies, for the one kind of request that carries one: a small
//! POST to the API (`/api/…`, e.g. a node's inventory). The body must say
//! its length up front (`Content-Length`, at most [`MAX_BODY`] bytes; a
//! chunked body is refused with 411) and arrive within the timeout. It is
//! handed to the handler in the request's extensions as [`RequestBody`],
//! so handlers keep one signature.

use std::io;

use http::request::Parts;
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// The bytes of a request's body (in `Parts::extensions`).
#[derive(Debug, Clone)]
pub struct RequestBody(pub Vec<u8>);

/// Why a body was not read: the status and text to answer with, after
/// which the connection closes (the unread body is still on the wire).
#[derive(Debug, PartialEq)]
pub struct Refused(pub u16, pub String);

/// Whether a request may carry a body at all.
pub fn accepted(parts: &Parts) -> bool {
    parts.method == Method::POST && parts.uri.path().starts_with("/api/")
}

/// How long the announced body is.
fn announced(parts: &Parts) -> Result<usize, Refused> {
    if parts.headers.contains_key(http::header::TRANSFER_ENCODING) {
        return Err(Refused(
            411,
            "send the body with a Content-Length, not chunked".into(),
        ));
    }
    let raw = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0");
    let len: usize = raw
        .trim()
        .parse()
        .map_err(|_| Refused(400, format!("Content-Length `{raw}` is not a number")))?;
    if len > MAX_BODY {
        return Err(Refused(
            413,
            format!("request body of {len} bytes is over the limit of {MAX_BODY}"),
        ));
    }
    Ok(len)
}

/// Read the body the head announced: first what already sits in `buf`
/// after the head (the caller drained the head), then from the socket.
/// The bytes taken are removed from `buf`. With `expect_continue` (the
/// client sent `Expect: 100-continue`), a `100 Continue` goes out first,
/// once the length is known to be acceptable.
pub async fn read(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    parts: &Parts,
    expect_continue: bool,
) -> io::Result<Result<RequestBody, Refused>> {
    let len = match announced(parts) {
        Ok(len) => len,
        Err(refused) => return Ok(Err(refused)),
    };
    if expect_continue && buf.len() < len {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    while buf.len() < len {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed in a request body",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Ok(RequestBody(buf.drain(..len).collect())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(head: &[u8]) -> Parts {
        super::super::head::parse(head).unwrap().unwrap().0.parts
    }

    #[test]
    fn lengths_are_checked_before_reading() {
        assert_eq!(
            announced(&parts(
                b"POST /api/x HTTP/1.1\r\nContent-Length: 12\r\n\r\n"
            )),
            Ok(12)
        );
        assert_eq!(announced(&parts(b"POST /api/x HTTP/1.1\r\n\r\n")), Ok(0));
        assert_eq!(
            announced(&parts(
                b"POST /api/x HTTP/1.1\r\nContent-Length: 70000\r\n\r\n"
            ))
            .unwrap_err()
            .0,
            413
        );
        assert!(
            super::super::head::parse(b"POST /api/x HTTP/1.1\r\nContent-Length: x\r\n\r\n")
                .is_err(),
            "refused with the head"
        );
        assert_eq!(
            announced(&parts(
                b"POST /api/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            ))
            .unwrap_err()
            .0,
            411
        );
        assert!(accepted(&parts(b"POST /api/nodes HTTP/1.1\r\n\r\n")));
        assert!(!accepted(&parts(b"POST /boot.ipxe HTTP/1.1\r\n\r\n")));
        assert!(!accepted(&parts(b"GET /api/nodes HTTP/1.1\r\n\r\n")));
    }
}
