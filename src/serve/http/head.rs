//! Reading and parsing one request head (httparse): the request line and
//! headers become `http::request::Parts`, plus what the connection loop
//! needs to know — keep the connection open, and whether a body follows
//! (a read-only server takes none).
//!
//! Framing follows RFC 9112 §6.3: a head with more than one Content-Length
//! value, one that is not plain digits (a sign, a blank), or both
//! Transfer-Encoding and Content-Length is refused (400, then the
//! connection closes), so no byte after it is ever read as a request. The
//! head is parsed once, when its end has arrived, not on every read.

use std::io;

use http::request::Parts;
use http::{Request, Version};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The largest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// The most header lines accepted.
const MAX_HEADERS: usize = 64;

/// A parsed request head.
#[derive(Debug)]
pub struct Head {
    pub parts: Parts,
    /// The connection stays open after the response.
    pub keep_alive: bool,
    /// The client announced a body (Content-Length > 0 or Transfer-Encoding).
    pub has_body: bool,
    /// `Expect: 100-continue`: the client waits for a go before its body.
    pub expect_continue: bool,
}

/// Why a head was refused: the status to answer before closing.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// 400: not HTTP/1.x, or a request line or header httparse rejects.
    Malformed(String),
    /// 431: larger than [`MAX_HEAD`] or more than 64 headers.
    TooLarge,
}

/// Read from `stream` into `buf` until `buf` starts with a complete head;
/// returns it and its length in `buf` (`Ok(None)`: the client closed the
/// connection between requests). Bytes after the head stay in `buf`
/// (pipelined requests).
pub async fn read(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> io::Result<Option<Result<(Head, usize), Refused>>> {
    // Bytes of `buf` already searched for the head's end.
    let mut scanned = 0;
    loop {
        if let Some(end) = head_end(buf, scanned) {
            return Ok(Some(match parse(&buf[..end]) {
                Ok(Some(done)) => Ok(done),
                Ok(None) => Err(Refused::Malformed("bad request head".into())),
                Err(refused) => Err(refused),
            }));
        }
        if buf.len() > MAX_HEAD {
            return Ok(Some(Err(Refused::TooLarge)));
        }
        scanned = buf.len();
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return match buf.is_empty() {
                true => Ok(None),
                false => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in a request head",
                )),
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Where the head in `buf` ends (after its blank line), looking only at
/// bytes from `scanned` on (and the 2 before, which may start the end).
fn head_end(buf: &[u8], scanned: usize) -> Option<usize> {
    let from = scanned.saturating_sub(2);
    let window = &buf[from..buf.len().min(MAX_HEAD + 2)];
    (0..window.len()).find_map(|i| {
        let rest = &window[i..];
        if rest.starts_with(b"\n\n") {
            Some(from + i + 2)
        } else if rest.starts_with(b"\n\r\n") {
            Some(from + i + 3)
        } else {
            None
        }
    })
}

/// Parse a head at the start of `bytes`: `Ok(None)` while it is incomplete.
pub fn parse(bytes: &[u8]) -> Result<Option<(Head, usize)>, Refused> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refused::TooLarge),
        Err(e) => return Err(Refused::Malformed(format!("bad request head: {e}"))),
    };
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut builder = Request::builder()
        .method(req.method.unwrap_or("GET"))
        .uri(req.path.unwrap_or("/"))
        .version(version);
    let (mut close, mut keep) = (false, false);
    let (mut chunked, mut lengths, mut expect_continue) = (false, Vec::new(), false);
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
        if h.name.eq_ignore_ascii_case("connection") {
            close |= value.split(',').any(|t| t.trim() == "close");
            keep |= value.split(',').any(|t| t.trim() == "keep-alive");
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            lengths.extend(value.split(',').map(|v| v.trim().to_string()));
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue |= value.trim() == "100-continue";
        }
        builder = builder.header(h.name, h.value);
    }
    let length = framing(chunked, &lengths)?;
    let has_body = chunked || length > 0;
    let request = builder
        .body(())
        .map_err(|e| Refused::Malformed(format!("bad request: {e}")))?;
    let keep_alive = !close && (version == Version::HTTP_11 || keep);
    Ok(Some((
        Head {
            parts: request.into_parts().0,
            keep_alive,
            has_body,
            expect_continue,
        },
        len,
    )))
}

/// The body's length as the head frames it (RFC 9112 §6.3), or why the
/// framing is ambiguous: several Content-Length values, one that is not
/// plain digits, or Content-Length beside Transfer-Encoding.
fn framing(chunked: bool, lengths: &[String]) -> Result<u64, Refused> {
    let bad = |why: &str| Err(Refused::Malformed(why.to_string()));
    match lengths {
        [] => Ok(0),
        _ if chunked => bad("both Transfer-Encoding and Content-Length: send one"),
        [one] if !one.is_empty() && one.len() <= 19 && one.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(one.parse().unwrap_or(u64::MAX))
        }
        [one] => bad(&format!(
            "Content-Length `{}` is not a plain number",
            one.escape_debug()
        )),
        _ => bad("more than one Content-Length: send one"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head `raw` parses to (it must be complete and valid).
    fn first(raw: &[u8]) -> Head {
        parse(raw).unwrap().unwrap().0
    }

    #[test]
    fn heads_parse_once_complete_with_either_line_end() {
        assert!(
            parse(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none(),
            "incomplete"
        );
        let (head, len) = parse(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\nGET /next")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                head.parts.uri.path(),
                head.parts.uri.query(),
                head.keep_alive,
                head.has_body,
                len
            ),
            ("/a", Some("b=c"), true, false, 32)
        );
        assert!(
            parse(b"GET / HTTP/1.1\nHost: x\n\n").unwrap().is_some(),
            "bare LF line ends"
        );
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let head = first(b"HEAD /x HTTP/1.0\r\n\r\n");
        assert_eq!(
            (head.parts.method.as_str(), head.keep_alive),
            ("HEAD", false)
        );
        assert!(first(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!first(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
    }

    #[test]
    fn bodies_and_expect_continue_are_seen() {
        assert!(first(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").has_body);
        assert!(first(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").has_body);
        assert!(
            first(b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
                .expect_continue
        );
    }

    #[test]
    fn bad_targets_and_lengths_are_refused() {
        assert_eq!(
            first(b"GET http://evil/../x HTTP/1.1\r\n\r\n")
                .parts
                .uri
                .path(),
            "/../x"
        );
        assert!(matches!(
            parse(b"GET ../x HTTP/1.1\r\n\r\n"),
            Err(Refused::Malformed(_))
        ));
        assert!(matches!(
            parse(b"\x00\x01garbage\r\n\r\n"),
            Err(Refused::Malformed(_))
        ));
        for bad in [
            "Content-Length: 0\r\nContent-Length: 37",
            "Content-Length: 5, 5",
            "Content-Length: +2",
            "Content-Length: 1 2",
            "Content-Length: -1",
            "Content-Length: 2\r\nTransfer-Encoding: chunked",
        ] {
            let head = format!("POST /api/x HTTP/1.1\r\n{bad}\r\n\r\n");
            assert!(
                matches!(parse(head.as_bytes()), Err(Refused::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_head_ends_at_the_blank_line_and_has_a_size_limit() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\nrest", 20), Some(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            parse(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()).err(),
            Some(Refused::TooLarge)
        );
    }
}
