//! The status page at `/`: what is published (from manifest.json), which
//! boot config decides who gets which overlays (and how to write one), the
//! machines the node registry knows, and who fetched a boot script recently. Plain HTML, escaped; the live section (`live`)
//! polls for itself.

use std::fmt::Write as _;

use http::request::Parts;

use super::http::RequestBody;
use super::reply::{query_param, Reply};
use super::state::State;
use crate::artifact::Manifest;

/// Whether `req` may see the machines: `--public-status`, or the admin
/// token (header, or the cookie the sign-in form sets).
pub fn machines_shown(state: &State, req: &Parts) -> bool {
    state.admin.public_status || state.admin.allows(&req.headers)
}

/// `POST /api/login` (the status page's form, `token=…`): the HttpOnly,
/// SameSite cookie, then back to the page; a wrong token is a 401.
pub fn login(state: &State, req: &Parts) -> Reply {
    if req.method != http::Method::POST {
        return Reply::text(405, "/api/login takes POST\n").with(http::header::ALLOW, "POST");
    }
    let body = req
        .extensions
        .get::<RequestBody>()
        .map(|b| b.0.as_slice())
        .unwrap_or_default();
    let form = String::from_utf8_lossy(body);
    let token = form
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .and_then(|v| query_param(&format!("t={v}"), "t"))
        .unwrap_or_default();
    if !state.admin.is_token(&token) {
        return Reply::text(
            401,
            "wrong admin token (see serve's log for where it is kept)\n",
        );
    }
    let cookie = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000",
        super::admin::COOKIE,
        state.admin.cookie()
    );
    Reply::new(303, super::reply::Body::Empty)
        .with(http::header::LOCATION, "/")
        .with(http::header::SET_COOKIE, &cookie)
}

const SIGN_IN: &str = "<h2>Machines</h2>\n<p>The machines, their timelines and recent boots need the server's admin token \
(<code>serve --admin-token-file</code>, else <code>DIR/.state/admin.token</code> on the server).</p>\n\
<form method=\"post\" action=\"/api/login\"><input type=\"password\" name=\"token\" autocomplete=\"current-password\"> \
<button>Sign in</button></form>\n";

pub fn status(state: &State, req: &Parts) -> Reply {
    let mut html = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>mkimage serve</title>\n\
         <style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}code{font-size:90%}</style></head><body>\n",
    );
    let _ = writeln!(html, "<h1>mkimage serve</h1>\n<p>Serving <code>{}</code>. Boot script: <a href=\"/boot.ipxe\">/boot.ipxe</a> (per machine: <code>/boot.ipxe?mac=${{net0/mac}}</code>). <a href=\"/metrics\">Metrics</a>.</p>", esc(&state.root.dir().display().to_string()));
    html.push_str(&profiles_section(state));
    html.push_str("<h2>Artifacts</h2>\n");
    match Manifest::load(state.root.dir()) {
        Ok(m) if m.artifacts.is_empty() => {
            html.push_str("<p>manifest.json lists no artifacts yet.</p>\n")
        }
        Ok(m) => {
            html.push_str("<table><tr><th>file</th><th>kind</th><th>name</th><th>size</th><th>sha256 (immutable URL)</th><th>built (UTC)</th></tr>\n");
            for e in m.artifacts.values() {
                let file = esc(&super::cmdline::encode_path(&e.file));
                let _ = writeln!(
                    html,
                    "<tr><td><a href=\"/{file}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/sha256/{}/{file}\"><code>{}</code></a></td><td>{}</td></tr>",
                    esc(&e.file),
                    esc(&e.kind),
                    esc(&e.name),
                    human_size(e.size),
                    esc(&e.sha256),
                    esc(&e.sha256),
                    utc(e.build_time)
                );
            }
            html.push_str("</table>\n");
        }
        Err(e) => {
            let _ = writeln!(
                html,
                "<p>Cannot read manifest.json: {}</p>",
                esc(&format!("{e:#}"))
            );
        }
    }
    if !machines_shown(state, req) {
        html.push_str(SIGN_IN);
        html.push_str("</body></html>\n");
        return Reply::bytes(200, "text/html; charset=utf-8", html)
            .with(http::header::CACHE_CONTROL, "no-store");
    }
    html.push_str(&super::live::section(state, esc));
    match state.nodes.all() {
        Ok(records) => html.push_str(&super::nodes::show::html(
            &records
                .iter()
                .map(super::nodes::Summary::of)
                .collect::<Vec<_>>(),
            esc,
        )),
        Err(e) => {
            let _ = writeln!(html, "<h2>Nodes</h2>\n<p>{}</p>", esc(&e.to_string()));
        }
    }
    html.push_str("<h2>Recent boots</h2>\n");
    let boots = state.metrics.recent_boots();
    if boots.is_empty() {
        html.push_str("<p>No boot script fetched yet.</p>\n");
    } else {
        html.push_str(
            "<table><tr><th>time (UTC)</th><th>client</th><th>MAC</th><th>profile</th></tr>\n",
        );
        for b in boots {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                utc(b.time),
                esc(&b.client),
                esc(b.mac.as_deref().unwrap_or("-")),
                esc(&b.profile)
            );
        }
        html.push_str("</table>\n");
    }
    html.push_str("</body></html>\n");
    Reply::bytes(200, "text/html; charset=utf-8", html)
}

/// Who gets which overlays, and how to change it.
fn profiles_section(state: &State) -> String {
    let mut html = String::from("<h2>Profiles</h2>\n");
    match &state.boot_config {
        None => html.push_str(
            "<p><b>No boot config:</b> every machine boots the newest kernel, initrd and basefs, <b>with no overlay</b>. \
             To give machines overlays, write a boot config — profiles that list <code>overlays:</code>, selected by \
             <code>macs:</code> or by <code>tags:</code> (with <code>hosts:</code> mapping MACs to tags), see \
             <code>vars/boot.yml</code> in the mkimage repository — and start the server with \
             <code>mkimage serve --boot-config FILE</code> (or from a directory holding <code>vars/boot.yml</code>).</p>\n",
        ),
        Some(path) => {
            let _ = write!(html, "<p>Boot config <code>{}</code> (re-read on every boot script request)", esc(&path.display().to_string()));
            match super::profiles::BootConfig::load(path) {
                Ok(c) => {
                    let _ = writeln!(html, ", default profile <code>{}</code>:</p>\n<ul>", esc(c.select(None).map(|p| p.name.as_str()).unwrap_or("-")));
                    for p in &c.profiles {
                        let overlays: Vec<String> = p.overlays.iter().map(|o| match o {
                            super::profiles::OverlayRef::Artifact(name) => name.clone(),
                            super::profiles::OverlayRef::Remote { url, .. } => url.clone(),
                        }).collect();
                        let _ = writeln!(html, "<li><code>{}</code>: overlays [{}], {} MAC(s), tags [{}]</li>", esc(&p.name), esc(&overlays.join(", ")), p.macs.len(), esc(&p.tags.join(", ")));
                    }
                    html.push_str("</ul>\n");
                }
                Err(e) => {
                    let _ = writeln!(html, ": <b>invalid</b>, machines get a retry script until it is fixed: {}</p>", esc(&e.to_string()));
                }
            }
        }
    }
    html
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn human_size(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

pub use crate::artifact::utc;

/// `/status/nodes`: the live section alone, for the page to poll.
pub fn nodes_fragment(state: &State) -> Reply {
    Reply::bytes(
        200,
        "text/html; charset=utf-8",
        super::live::fragment(state, esc),
    )
    .with(http::header::CACHE_CONTROL, "no-store")
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        assert_eq!(super::human_size(1536), "1.5 KiB");
        assert_eq!(super::esc("<a&\">"), "&lt;a&amp;&quot;&gt;");
    }
}
