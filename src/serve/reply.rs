//! A handler's answer, independent of the HTTP stack that sends it: status,
//! headers and a body that is either bytes in memory or a byte range of an
//! open file (streamed by the front-end). Plus the small request helpers the
//! handlers share.

use std::fs::File;

use bytes::Bytes;
use http::header::{HeaderName, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, StatusCode};

use super::served_dir;

/// What a response carries after its head.
pub enum Body {
    Empty,
    Bytes(Bytes),
    /// `len` bytes of `file` from `start`.
    File {
        file: File,
        start: u64,
        len: u64,
    },
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        }
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Body,
    /// The machine the request was for, when known (for the log line).
    pub mac: Option<String>,
    /// Run (on the blocking pool) once the whole body of a GET went out.
    pub after_sent: Option<AfterSent>,
}

/// What a handler wants done once its response was sent in full.
pub type AfterSent = Box<dyn FnOnce() + Send + 'static>;

impl Reply {
    pub fn new(status: u16, body: Body) -> Reply {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Reply {
            status,
            headers: HeaderMap::new(),
            body,
            mac: None,
            after_sent: None,
        }
    }

    /// A small in-memory response.
    pub fn bytes(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
        Reply::new(status, Body::Bytes(body.into())).with(CONTENT_TYPE, content_type)
    }

    pub fn text(status: u16, text: impl Into<String>) -> Reply {
        Reply::bytes(status, "text/plain; charset=utf-8", text.into())
    }

    /// Add a header; a value that is not a valid header value is left out.
    pub fn with(mut self, name: HeaderName, value: impl AsRef<str>) -> Reply {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.insert(name, v);
        }
        self
    }
}

/// A request header's value, if present and text.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A query parameter's percent-decoded value.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| served_dir::percent_decode(v).ok())
}
