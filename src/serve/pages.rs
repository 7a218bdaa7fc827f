//! The status page at `/`: what is published (from manifest.json) and who
//! fetched a boot script recently. Plain HTML, no scripts, escaped.

use std::fmt::Write as _;

use tiny_http::Request;

use super::http::{respond, Outcome, State};
use crate::artifact::Manifest;

pub fn status(request: Request, state: &State) -> Outcome {
    let mut html = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>mkimage serve</title>\n\
         <style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}code{font-size:90%}</style></head><body>\n",
    );
    let _ = writeln!(html, "<h1>mkimage serve</h1>\n<p>Serving <code>{}</code>. Boot script: <a href=\"/boot.ipxe\">/boot.ipxe</a> (per machine: <code>/boot.ipxe?mac=${{net0/mac}}</code>). <a href=\"/metrics\">Metrics</a>.</p>", esc(&state.root.dir().display().to_string()));
    html.push_str("<h2>Artifacts</h2>\n");
    match Manifest::load(state.root.dir()) {
        Ok(m) if m.artifacts.is_empty() => html.push_str("<p>manifest.json lists no artifacts yet.</p>\n"),
        Ok(m) => {
            html.push_str("<table><tr><th>file</th><th>kind</th><th>name</th><th>size</th><th>sha256</th><th>built (UTC)</th></tr>\n");
            for e in m.artifacts.values() {
                let _ = writeln!(
                    html,
                    "<tr><td><a href=\"/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                    esc(&super::ipxe::encode_path(&e.file)),
                    esc(&e.file),
                    esc(&e.kind),
                    esc(&e.name),
                    human_size(e.size),
                    esc(&e.sha256),
                    utc(e.build_time)
                );
            }
            html.push_str("</table>\n");
        }
        Err(e) => {
            let _ = writeln!(html, "<p>Cannot read manifest.json: {}</p>", esc(&format!("{e:#}")));
        }
    }
    html.push_str("<h2>Recent boots</h2>\n");
    let boots = state.metrics.recent_boots();
    if boots.is_empty() {
        html.push_str("<p>No boot script fetched yet.</p>\n");
    } else {
        html.push_str("<table><tr><th>time (UTC)</th><th>client</th><th>MAC</th><th>profile</th></tr>\n");
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
    respond(request, 200, "text/html; charset=utf-8", html.into_bytes())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
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

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        assert_eq!(super::human_size(1536), "1.5 KiB");
        assert_eq!(super::esc("<a&\">"), "&lt;a&amp;&quot;&gt;");
    }
}
