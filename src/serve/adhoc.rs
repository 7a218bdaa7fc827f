//! A tiny HTTP server for a few fixed files held in memory, on a port of
//! its own, run from a background thread on the boot server's own HTTP
//! stack. `mkimage boot-test` serves the VM's check script with it, beside
//! the real server, so production images and boot configs carry no test
//! hook.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::http::{self, Handler};
use super::metrics::Metrics;
use super::reply::Reply;

/// Serve `files` (URL path → bytes) on `addr` (port 0 picks one) until the
/// process ends; returns the bound address.
pub fn spawn(addr: SocketAddr, files: HashMap<String, Bytes>) -> std::io::Result<SocketAddr> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
    let bound = listener.local_addr()?;
    let handler: Arc<Handler> = Arc::new(move |req, _| match files.get(req.uri.path()) {
        Some(body) => Reply::bytes(200, "application/octet-stream", body.clone()),
        None => Reply::text(404, "not found\n"),
    });
    std::thread::Builder::new()
        .name("adhoc-http".into())
        .spawn(move || {
            let (_stop, stopped) = tokio::sync::watch::channel(false);
            let metrics = Arc::new(Metrics::default());
            runtime.block_on(http::serve(
                listener,
                handler,
                metrics,
                Duration::from_secs(30),
                stopped,
            ));
        })?;
    Ok(bound)
}
