//! `/api/nodes…`: what machines report and what the registry shows.
//!
//! - `GET /api/nodes`: every machine's summary (`{"nodes": […]}`);
//! - `GET /api/nodes/MAC`: its whole record;
//! - `GET /api/nodes/MAC/event?stage=NAME[&step=STEP&reason=TEXT]`: a stage
//!   the machine reached (the init and the booted system, with busybox
//!   `wget` or curl; `failed` carries the reason);
//! - `POST /api/nodes/MAC/inventory`: the discovery overlay's JSON.
//!
//! Reads need the admin token (`serve::admin`); a machine's reports need
//! the boot token its boot script carried (`serve::tokens`), sent as
//! `Authorization: Bearer TOKEN`: without it, 403 and nothing changes.
//! HEAD on `…/event` checks the request but records nothing.
//!
//! Bad input (a MAC that is not one, an unknown stage, text with control
//! characters, a body that is not an inventory) is a 4xx naming what is
//! wrong, and changes nothing. The server's own observations — a script
//! served, a kernel or initrd fetched — come in through [`script_served`]
//! and [`fetched`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::request::Parts;
use http::Method;

use super::record::{self, Failure, Inventory, Record};
use super::show::Summary;
use super::stage::Stage;
use super::store::{Change, NodeError, Store};
use crate::artifact::{now, now_ms};
use crate::serve::admin::{self, Admin};
use crate::serve::http::RequestBody;
use crate::serve::profiles::{normalize_mac, Facts, Selected};
use crate::serve::reply::{query_param, AfterSent, Reply};
use crate::serve::tokens::{self, Tokens};

const JSON: &str = "application/json";

impl Facts for Inventory {
    fn fact(&self, name: &str) -> Option<&str> {
        Inventory::fact(self, name)
    }
}

/// Who may do what: the admin token for reads, boot tokens for reports.
pub struct Guards<'a> {
    pub admin: &'a Admin,
    pub tokens: &'a Tokens,
}

/// Answer a request under `/api/`.
pub fn route(
    store: &Store,
    guards: &Guards,
    req: &Parts,
    query: &str,
    client: SocketAddr,
) -> Reply {
    let path = req.uri.path();
    let Some(rest) = path.strip_prefix("/api/nodes") else {
        return Reply::text(404, format!("{path}: no such API (see /api/nodes)\n"));
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (get, post) = (
        req.method == Method::GET || req.method == Method::HEAD,
        req.method == Method::POST,
    );
    let mac = match segments.first() {
        Some(raw) => match normalize_mac(raw) {
            Some(m) => Some(m),
            None => {
                return Reply::text(
                    400,
                    format!("`{raw}` is not a MAC address (use aa:bb:cc:dd:ee:ff)\n"),
                )
            }
        },
        None => None,
    };
    let allow = |methods: &str| {
        Reply::text(405, format!("{path} takes {methods}\n")).with(http::header::ALLOW, methods)
    };
    let read =
        |answer: &dyn Fn() -> Reply| admin::refusal(guards.admin, req).unwrap_or_else(answer);
    let report = |mac: &str, answer: &dyn Fn() -> Reply| match own_token(guards.tokens, req, mac) {
        Some(refused) => refused,
        None => answer(),
    };
    let record = req.method != Method::HEAD;
    match (segments.as_slice(), mac) {
        ([], _) if get => read(&|| list(store)),
        ([_], Some(mac)) if get => read(&|| one(store, &mac)),
        ([_, "event"], Some(mac)) if get => {
            report(&mac, &|| event(store, &mac, query, client.ip(), record))
        }
        ([_, "inventory"], Some(mac)) if post => {
            report(&mac, &|| inventory(store, &mac, req, client.ip()))
        }
        ([] | [_], _) | ([_, "event"], _) => allow("GET, HEAD"),
        ([_, "inventory"], _) => allow("POST"),
        _ => Reply::text(404, format!("{path}: no such API (see /api/nodes)\n")),
    }
}

/// `None` when `req` carries a boot token issued to `mac`; else the 403.
fn own_token(tokens: &Tokens, req: &Parts, mac: &str) -> Option<Reply> {
    let presented = tokens::bearer(&req.headers);
    if presented.is_some_and(|t| tokens.verify(mac, t)) {
        return None;
    }
    let why = match presented {
        None => "no boot token",
        Some(_) => "a boot token that is not",
    };
    let mut reply = Reply::text(
        403,
        format!(
            "report for {mac} refused: {why} issued to it in its current boot; send the \
             mkimage.token= of its boot script as `Authorization: Bearer TOKEN`\n"
        ),
    );
    reply.mac = Some(mac.to_string());
    Some(reply)
}

fn list(store: &Store) -> Reply {
    match store.all() {
        Ok(records) => Reply::bytes(
            200,
            JSON,
            super::show::json(&records.iter().map(Summary::of).collect::<Vec<_>>()),
        ),
        Err(e) => Reply::text(500, format!("{e}\n")),
    }
}

fn one(store: &Store, mac: &str) -> Reply {
    match store.get(mac) {
        Ok(Some(r)) => Reply::bytes(
            200,
            JSON,
            serde_json::to_string_pretty(&r).unwrap_or_default(),
        ),
        Ok(None) => Reply::text(404, format!("no record of {mac}\n")),
        Err(e) => Reply::text(500, format!("{e}\n")),
    }
}

/// `?stage=…`: checked whole before the record is touched.
fn event(store: &Store, mac: &str, query: &str, ip: IpAddr, record: bool) -> Reply {
    let Some(name) = query_param(query, "stage") else {
        return Reply::text(
            400,
            format!("give ?stage=NAME (one of {})\n", Stage::reported_names()),
        );
    };
    let Some(stage) = Stage::reported(&name) else {
        return Reply::text(
            400,
            format!(
                "stage `{}` is not one a machine reports (one of {})\n",
                name.escape_debug(),
                Stage::reported_names()
            ),
        );
    };
    let text = |key: &str| -> Result<Option<String>, Box<Reply>> {
        match (
            query_param(query, key),
            query.split('&').any(|kv| kv.split('=').next() == Some(key)),
        ) {
            (Some(v), _) => record::text(&v)
                .map(|()| Some(v))
                .map_err(|e| Box::new(Reply::text(400, format!("{key}=: {e}\n")))),
            (None, true) => Err(Box::new(Reply::text(
                400,
                format!("{key}=: not valid percent-encoded UTF-8\n"),
            ))),
            (None, false) => Ok(None),
        }
    };
    let (step, reason) = match (text("step"), text("reason")) {
        (Ok(s), Ok(r)) => (s, r),
        (Err(reply), _) | (_, Err(reply)) => return *reply,
    };
    let failure = match (stage, reason) {
        (Stage::Failed, Some(reason)) if !reason.trim().is_empty() => Some(Failure {
            time: now(),
            step,
            reason,
        }),
        (Stage::Failed, _) => return Reply::text(400, "stage=failed needs &reason=WHY\n"),
        (_, Some(_)) => return Reply::text(400, "reason= goes with stage=failed only\n"),
        (_, None) => None,
    };
    if !record {
        return Reply::text(200, "ok\n");
    }
    let ms = now_ms();
    let t = ms / 1000;
    let updated = store.update(mac, t, |r| {
        r.saw_ms(stage, ms);
        r.ip = Some(ip.to_string());
        if failure.is_some() {
            r.failure = failure;
        }
    });
    saved(updated, mac, |_| Reply::text(200, "ok\n"))
}

fn inventory(store: &Store, mac: &str, req: &Parts, ip: IpAddr) -> Reply {
    let body = req
        .extensions
        .get::<RequestBody>()
        .map(|b| b.0.as_slice())
        .unwrap_or_default();
    if body.is_empty() {
        return Reply::text(400, "POST the inventory as a JSON object in the body\n");
    }
    let inventory = match Inventory::parse(body) {
        Ok(i) => i,
        Err(e) => return Reply::text(400, format!("inventory of {mac}: {e}\n")),
    };
    let ms = now_ms();
    let t = ms / 1000;
    let updated = store.update(mac, t, |r| {
        r.inventory = Some(inventory);
        r.inventory_authenticated = true;
        r.saw_ms(Stage::Inventory, ms);
        r.ip = Some(ip.to_string());
    });
    saved(updated, mac, |r| {
        Reply::bytes(
            200,
            JSON,
            serde_json::to_string(&Summary::of(r)).unwrap_or_default(),
        )
    })
}

fn saved(
    updated: Result<Record, NodeError>,
    mac: &str,
    ok: impl FnOnce(&Record) -> Reply,
) -> Reply {
    let mut reply = match updated {
        Ok(r) => ok(&r),
        Err(e) => {
            tracing::warn!("{e}");
            Reply::text(500, format!("{e}\n"))
        }
    };
    reply.mac = Some(mac.to_string());
    reply
}

/// A boot script for `mac` is going to `ip`: a new boot on its record, with
/// the profile and whether a selector chose it, and `more` (if any) after
/// that. Only memory is touched here, on the script's latency path: its
/// kernel and initrd fetches from `ip` are the machine's from now on, and
/// the record's change is queued ([`Store::defer`]); the returned action,
/// run once the reply is out, hands it to the registry's writer thread
/// ([`Store::flush_later`]). Any earlier read or change of the
/// record writes it first, so the queue keeps the boot's stages in order.
pub fn script_served(
    store: &Arc<Store>,
    mac: &str,
    ip: IpAddr,
    profile: &str,
    selected: Selected,
    more: Option<Change>,
) -> AfterSent {
    store.remember_fetcher(ip, mac);
    let ms = now_ms();
    let profile = profile.to_string();
    let change: Change = Box::new(move |r: &mut Record| {
        r.saw_ms(Stage::Script, ms);
        r.ip = Some(ip.to_string());
        r.boot_ip = Some(ip.to_string());
        r.profile = Some(profile);
        r.new = selected == Selected::Default;
        if let Some(more) = more {
            more(r);
        }
    });
    if let Err(e) = store.defer(mac, ms / 1000, change) {
        tracing::warn!("{e}");
    }
    let (store, mac) = (store.clone(), mac.to_string());
    Box::new(move || store.flush_later(&mac))
}

/// What to do once an artifact of `kind` went out whole to `ip`: the
/// kernel or initrd stage on the record of the machine that fetched its
/// boot script from that address (`None`: another kind, or no such machine).
pub fn fetched(store: &Arc<Store>, ip: IpAddr, kind: &str) -> Option<AfterSent> {
    let stage = match kind {
        "kernel" => Stage::Kernel,
        "initrd" => Stage::Initrd,
        _ => return None,
    };
    let mac = store.fetcher(ip)?;
    let store = store.clone();
    Some(Box::new(move || {
        let ms = now_ms();
        let t = ms / 1000;
        if let Err(e) = store.update_fast(&mac, t, |r| r.saw_ms(stage, ms)) {
            tracing::warn!("{e}");
        }
    }))
}

/// The recorded inventory of `mac`, for selecting its profile by facts:
/// only one that came with a valid boot token.
pub fn inventory_of(store: &Store, mac: &str) -> Option<Inventory> {
    store
        .get(mac)
        .ok()
        .flatten()
        .filter(|r| r.inventory_authenticated)
        .and_then(|r| r.inventory)
}
