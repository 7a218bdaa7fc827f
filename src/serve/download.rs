//! File downloads: a path in the served dir (`/NAME`) or a content address
//! (`/sha256/HEX/NAME`), with ETag, If-None-Match, Range and If-Range.
//!
//! A plain path serves whatever file has that name now; `?sha256=` pins a
//! version and is refused once that version is gone. A content address
//! serves the content store's object for HEX (see `artifact::objects`),
//! which a republish never replaces, as immutable; an artifact that
//! `manifest.json` lists but the store lacks (built by an older mkimage, or
//! the store is not writable) is hashed and added first. An unknown hash is
//! a 404.

use std::fs::File;
use std::path::Path;

use http::header::{ACCEPT_RANGES, CACHE_CONTROL, CONTENT_RANGE, CONTENT_TYPE, ETAG};
use http::request::Parts;

use super::nodes;
use super::range::{self, ByteRange};
use super::reply::{header, query_param, Body, Reply};
use super::served_dir::{Opened, PathError, Root};
use super::state::State;
use crate::artifact::{objects, Manifest};

/// The Cache-Control of a content-addressed URL: its bytes never change.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// `GET`/`HEAD` of a file under `root` (the served dir, or `--ipxe-dir`).
pub fn file_in(state: &State, root: &Root, req: &Parts, path: &str, query: &str) -> Reply {
    let opened = match root.open(path) {
        Ok(o) => o,
        Err(e) => return Reply::text(e.status(), format!("{e}\n")),
    };
    let sha = state.sha.sha256(root, &opened);
    if let Some(want) = query_param(query, "sha256") {
        if sha.as_deref() != Some(want.as_str()) {
            return Reply::text(404, format!("{path}: version sha256={want} is no longer published; fetch the boot script again\n"));
        }
    }
    let size = opened.meta.len();
    respond(req, opened.file, size, sha.as_deref(), content_type(path))
}

/// `GET`/`HEAD` of `/sha256/HEX/NAME` (`rest` is what follows `/sha256/`).
pub fn object(state: &State, req: &Parts, rest: &str, client: std::net::SocketAddr) -> Reply {
    let (hex, name) = rest.split_once('/').unwrap_or((rest, ""));
    if name.is_empty() || name.contains('/') {
        return Reply::text(404, "content-addressed URLs are /sha256/HEX/NAME\n");
    }
    let hex = hex.to_ascii_lowercase();
    if !objects::is_sha256(&hex) {
        return Reply::text(404, format!("{hex}: not a sha256\n"));
    }
    let found = match objects::open(state.root.dir(), &hex) {
        Ok(Some(f)) => Some(f),
        Ok(None) => from_manifest(state, &hex),
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    };
    let Some(file) = found else {
        return Reply::text(404, format!("no artifact with sha256 {hex} (unknown, or superseded longer than the grace period ago)\n"));
    };
    let size = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return Reply::text(500, format!("cannot stat the object {hex}: {e}\n")),
    };
    let mut reply = respond(req, file, size, Some(&hex), content_type(name));
    if reply.status.is_success() || reply.status.as_u16() == 304 {
        reply = reply.with(CACHE_CONTROL, IMMUTABLE);
    }
    if reply.status.as_u16() == 200 && req.method == http::Method::GET {
        let kind = count_download(state, &hex);
        // The kernel and initrd stages of the machine that fetched them.
        reply.after_sent = nodes::api::fetched(&state.nodes, client.ip(), &kind);
    }
    reply
}

/// Count a whole download of the object `hex` under its manifest kind
/// (`superseded` once the manifest no longer lists it); returns the kind.
fn count_download(state: &State, hex: &str) -> String {
    let manifest = Manifest::load(state.root.dir()).unwrap_or_default();
    let kind = manifest
        .artifacts
        .values()
        .find(|e| e.sha256 == hex)
        .map_or("superseded", |e| e.kind.as_str());
    state.metrics.artifact_download(kind);
    kind.to_string()
}

/// The artifact `manifest.json` records with sha256 `hex`, if the file under
/// its name still has that content; it is added to the store on the way.
fn from_manifest(state: &State, hex: &str) -> Option<File> {
    let manifest = Manifest::load(state.root.dir()).ok()?;
    let entry = manifest.artifacts.values().find(|e| e.sha256 == hex)?;
    ensure(state, &entry.file, hex).ok()
}

/// The object for an artifact a boot script is about to name: from the
/// store, else the file `name` in the served dir if its bytes hash to `sha`
/// (then linked into the store, so later republishes do not change it).
pub fn ensure(state: &State, name: &str, sha: &str) -> Result<File, String> {
    match objects::open(state.root.dir(), sha) {
        Ok(Some(f)) => return Ok(f),
        Ok(None) => {}
        Err(e) => return Err(e.to_string()),
    }
    let opened: Opened = state.root.open_name(name).map_err(|e| match e {
        PathError::NotFound => {
            format!("{name} is listed in manifest.json but missing from the served dir")
        }
        e => format!("{name}: {e}"),
    })?;
    match state.sha.sha256(&state.root, &opened) {
        Some(got) if got == sha => {}
        Some(got) => {
            return Err(format!(
                "{name} has sha256 {got}, manifest.json says {sha} (a build in progress?)"
            ))
        }
        None => return Err(format!("cannot read {name}")),
    }
    if let Err(e) = objects::add_open(state.root.dir(), &opened.file, sha) {
        // Still served, from the file verified above; only the
        // guarantee across republishes is lost.
        tracing::warn!("{e}");
    }
    Ok(opened.file)
}

/// The conditional and range logic shared by both kinds of URL.
fn respond(
    req: &Parts,
    file: File,
    size: u64,
    sha: Option<&str>,
    content_type: &'static str,
) -> Reply {
    let etag = sha.map(|s| format!("\"{s}\""));
    if let (Some(tag), Some(inm)) = (&etag, header(&req.headers, "if-none-match")) {
        if inm.split(',').any(|t| t.trim() == tag || t.trim() == "*") {
            return Reply::new(304, Body::Empty).with(ETAG, tag);
        }
    }
    let mut range = header(&req.headers, "range")
        .map(|r| range::parse(r, size))
        .unwrap_or(ByteRange::Full);
    if let Some(if_range) = header(&req.headers, "if-range") {
        if etag.as_deref() != Some(if_range.trim()) {
            range = ByteRange::Full;
        }
    }
    let (status, start, len) = match range {
        ByteRange::Full => (200, 0, size),
        ByteRange::Part { start, end } => (206, start, end - start + 1),
        ByteRange::Unsatisfiable => {
            return Reply::new(416, Body::Empty).with(CONTENT_RANGE, format!("bytes */{size}"));
        }
    };
    let mut reply = Reply::new(status, Body::File { file, start, len })
        .with(CONTENT_TYPE, content_type)
        .with(ACCEPT_RANGES, "bytes");
    if let Some(tag) = etag {
        reply = reply.with(ETAG, tag);
    }
    if status == 206 {
        reply = reply.with(
            CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    reply
}

pub fn content_type(path: &str) -> &'static str {
    match Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
    {
        "ipxe" | "sha256" | "txt" | "log" => "text/plain; charset=utf-8",
        "json" => "application/json",
        "html" => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}
