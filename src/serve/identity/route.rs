//! `GET /node/MAC/SHA256/node.cpio.gz`: a node overlay, to its machine only
//! ([`super::node_overlay_allowed`]); immutable, but for no shared cache.
//! `…/node.cpio.gz.sig`: its signature (`serve --node-signing-key`), on
//! the same terms.

use std::net::SocketAddr;

use http::request::Parts;

use super::super::reply::Reply;
use super::super::state::State;
use super::{node_overlay_allowed, FILE, SIG_FILE};
use crate::artifact::objects::is_sha256;
use crate::inventory::normalize_mac;

/// One machine's bytes: no shared cache (an nginx tier) may keep them.
const PRIVATE: &str = "private, max-age=31536000, immutable";

/// `rest` is what follows `/node/`.
pub fn node_overlay(state: &State, req: &Parts, rest: &str, client: SocketAddr) -> Reply {
    let parts: Vec<&str> = rest.split('/').collect();
    let [mac, sha, file] = parts[..] else {
        return Reply::text(404, format!("node overlays are /node/MAC/SHA256/{FILE}\n"));
    };
    let sig = file == SIG_FILE;
    let (Some(mac), true, true) = (normalize_mac(mac), is_sha256(sha), file == FILE || sig) else {
        return Reply::text(404, format!("node overlays are /node/MAC/SHA256/{FILE}\n"));
    };
    if !node_overlay_allowed(&state.tokens, &mac, req) {
        tracing::warn!(
            mac = %mac,
            client = %client.ip(),
            "node overlay refused: no boot token of that machine"
        );
        let mut reply = Reply::text(403, format!("{mac}'s node overlay is for {mac} only\n"));
        reply.mac = Some(mac);
        return reply;
    }
    let found = if sig {
        state.node_overlays.signature(&mac, sha)
    } else {
        state.node_overlays.get(&mac, sha)
    };
    let mut reply = match found {
        Some(bytes) => Reply::bytes(200, "application/octet-stream", bytes)
            .with(http::header::CACHE_CONTROL, PRIVATE),
        None if sig && !state.node_overlays.signs() => Reply::text(
            404,
            "this server signs no node overlays: start it with --node-signing-key FILE (the node.key of `mkimage keys init`)\n".to_string(),
        ),
        None => Reply::text(
            404,
            format!("no node overlay {sha} for {mac} (the server restarted, or the node changed): fetch the boot script again\n"),
        ),
    };
    reply.mac = Some(mac);
    reply
}
