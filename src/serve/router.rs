//! Which handler answers a request: the server's own pages (`/`,
//! `/metrics`, `/boot.ipxe`, `/grub.cfg`), content-addressed artifacts
//! (`/sha256/…`), node overlays (`/node/…`, each to its own machine only),
//! the iPXE binaries (`/ipxe/…`, for UEFI HTTP boot), the node registry's
//! API (`/api/nodes…`, which alone takes POST) and files in the served
//! dir. Otherwise read-only: GET and HEAD only. Runs on the
//! blocking pool (handlers open, read and sometimes hash files).

use std::net::SocketAddr;

use http::request::Parts;
use http::Method;

use super::reply::Reply;
use super::state::State;
use super::{dhcp, download, identity, nodes, operator, pages, script};

pub fn route(state: &State, req: &Parts, client: SocketAddr) -> Reply {
    let path = req.uri.path();
    let query = req.uri.query().unwrap_or("");
    if !path.starts_with('/') {
        return Reply::text(400, "request target must be a path\n");
    }
    if path.starts_with("/api/") {
        if path == "/api/login" {
            return pages::login(state, req);
        }
        if let Some(reply) = operator::route(state, req) {
            return reply;
        }
        let guards = nodes::api::Guards {
            admin: &state.admin,
            tokens: &state.tokens,
        };
        return nodes::api::route(&state.nodes, &guards, req, query, client);
    }
    if req.method != Method::GET && req.method != Method::HEAD {
        return Reply::text(405, "read-only server: GET and HEAD only\n")
            .with(http::header::ALLOW, "GET, HEAD");
    }
    match path {
        "/" => pages::status(state, req),
        "/status/nodes" => match pages::machines_shown(state, req) {
            true => pages::nodes_fragment(state),
            false => Reply::text(401, "sign in on the status page (/) with the admin token\n"),
        },
        "/metrics" => {
            // Counted from the registry's tallies, not read record by record.
            let tallies = state.nodes.tallies().unwrap_or_else(|e| {
                tracing::warn!("{e}");
                Vec::new()
            });
            Reply::bytes(
                200,
                "text/plain; version=0.0.4",
                state.metrics.render() + &nodes::show::metrics_of(&tallies),
            )
        }
        "/boot.ipxe" => script::boot(state, req, query, client, script::Format::Ipxe),
        "/grub.cfg" => script::boot(state, req, query, client, script::Format::Grub),
        _ if path.starts_with(identity::PREFIX) => {
            identity::route::node_overlay(state, req, &path[identity::PREFIX.len()..], client)
        }
        _ => match (
            path.strip_prefix("/sha256/"),
            path.strip_prefix(dhcp::HTTP_IPXE_PREFIX),
        ) {
            (Some(rest), _) => download::object(state, req, rest, client),
            (_, Some(name)) => match &state.ipxe {
                Some(ipxe) => download::file_in(state, ipxe, req, &format!("/{name}"), query),
                None => Reply::text(404, "no --ipxe-dir to serve iPXE from\n"),
            },
            _ => download::file_in(state, &state.root, req, path, query),
        },
    }
}
