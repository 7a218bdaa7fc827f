//! What an operator changes about a machine through the node API, each
//! route asking `serve::admin` first:
//!
//! - `POST /api/nodes/MAC/next-boot` — `{"profile": "P", "once": true}`:
//!   the profile its next boot script is made for (`serve::next_boot`);
//!   `{"profile": null}` drops it. A profile the boot config does not have
//!   is refused (400).
//! - `POST /api/nodes/MAC/power` — `{"state": "on"|"off"|null, "error":
//!   "…"}`: its power as `mkimage power`/`reprovision` last saw it through
//!   the BMC, kept on its record for the status page.

use std::path::Path;

use http::request::Parts;
use http::Method;
use serde::Deserialize;

use super::http::RequestBody;
use super::nodes::{record, Power};
use super::profiles::{normalize_mac, BootConfig};
use super::reply::Reply;
use super::state::State;
use super::{admin, next_boot};
use crate::artifact::now;

/// The reply, when the request is one of these routes.
pub fn route(state: &State, req: &Parts) -> Option<Reply> {
    let rest = req.uri.path().strip_prefix("/api/nodes/")?;
    let (raw, what) = rest.split_once('/')?;
    if !matches!(what, "next-boot" | "power") {
        return None;
    }
    if req.method != Method::POST {
        return Some(
            Reply::text(405, format!("{} takes POST\n", req.uri.path()))
                .with(http::header::ALLOW, "POST"),
        );
    }
    if let Some(reply) = admin::refusal(&state.admin, req) {
        return Some(reply);
    }
    let Some(mac) = normalize_mac(raw) else {
        return Some(Reply::text(
            400,
            format!("`{raw}` is not a MAC address (use aa:bb:cc:dd:ee:ff)\n"),
        ));
    };
    let body = req
        .extensions
        .get::<RequestBody>()
        .map(|b| b.0.as_slice())
        .unwrap_or_default();
    let mut reply = match what {
        "next-boot" => next(state, &mac, body),
        _ => power(state, &mac, body),
    };
    reply.mac = Some(mac);
    Some(reply)
}

fn next(state: &State, mac: &str, body: &[u8]) -> Reply {
    let req: next_boot::Request = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return Reply::text(
                400,
                format!("give {{\"profile\": \"NAME\", \"once\": true}}: {e}\n"),
            )
        }
    };
    let entry = match req.profile {
        None => None,
        Some(profile) => {
            if let Err(e) = profile_exists(state.boot_config.as_deref(), &profile) {
                return Reply::text(400, format!("{e}\n"));
            }
            Some(next_boot::NextBoot {
                profile,
                once: req.once,
                set: now(),
            })
        }
    };
    match next_boot::set(state.root.dir(), mac, entry.as_ref()) {
        Ok(()) => {
            tracing::info!(
                mac,
                profile = entry.as_ref().map(|e| e.profile.as_str()).unwrap_or("-"),
                "next-boot profile set"
            );
            Reply::text(200, "ok\n")
        }
        Err(e) => Reply::text(
            500,
            format!("cannot store the next-boot profile of {mac}: {e}\n"),
        ),
    }
}

/// A profile name the boot config `path` defines.
pub fn profile_exists(path: Option<&Path>, profile: &str) -> Result<(), String> {
    let path = path.ok_or_else(|| {
        format!("profile `{profile}`: the server has no boot config (serve --boot-config FILE)")
    })?;
    let config = BootConfig::load(path).map_err(|e| e.to_string())?;
    if config.profiles.iter().any(|p| p.name == profile) {
        Ok(())
    } else {
        Err(format!(
            "no profile `{profile}` in {} (it has: {})",
            path.display(),
            config
                .profiles
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PowerReport {
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

fn power(state: &State, mac: &str, body: &[u8]) -> Reply {
    let report: PowerReport = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return Reply::text(
                400,
                format!("give {{\"state\": \"on\"|\"off\"|null, \"error\": \"…\"}}: {e}\n"),
            )
        }
    };
    if let Some(s) = report
        .state
        .as_deref()
        .filter(|s| !matches!(*s, "on" | "off"))
    {
        return Reply::text(
            400,
            format!("state `{}`: on, off or null\n", s.escape_debug()),
        );
    }
    if let Some(Err(e)) = report.error.as_deref().map(record::text) {
        return Reply::text(400, format!("error: {e}\n"));
    }
    let seen = Power {
        state: report.state,
        error: report.error,
        time: now(),
    };
    match state.nodes.update(mac, now(), |r| r.power = Some(seen)) {
        Ok(_) => Reply::text(200, "ok\n"),
        Err(e) => Reply::text(500, format!("{e}\n")),
    }
}
