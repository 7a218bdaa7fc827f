//! `/boot.ipxe[?mac=…]`: pick the machine's profile, resolve it against one
//! manifest snapshot and render the script, so every URL and sha256 in one
//! script belongs to the same set of artifacts.

use tiny_http::Request;

use super::http::{respond, respond_text, Outcome, State};
use super::ipxe::DEFAULT_CONSOLE;
use super::metrics::Boot;
use super::profiles::{self, normalize_mac, BootConfig, Resolved};
use crate::artifact::{self, Manifest};

pub fn boot(request: Request, state: &State, query: &str, client: &str) -> Outcome {
    let mac = match super::query_param(query, "mac") {
        Some(raw) => match normalize_mac(&raw) {
            Some(m) => Some(m),
            None => return respond_text(request, 400, &format!("mac={raw} is not a MAC address\n")),
        },
        None => None,
    };
    let base_url = base_url(&request, state);
    let rendered = render(state, mac.as_deref(), &base_url);
    let mut outcome = match rendered {
        Ok((script, profile)) => {
            state.metrics.boot(Boot { time: artifact::now(), client: client.to_string(), mac: mac.clone(), profile });
            respond(request, 200, "text/plain; charset=utf-8", script.into_bytes())
        }
        Err(e) => {
            tracing::error!(mac = mac.as_deref().unwrap_or("-"), "boot script: {e:#}");
            respond_text(request, 500, &format!("#!ipxe\necho mkimage serve cannot make a boot script: {e:#}\nshell\n"))
        }
    };
    outcome.mac = mac;
    outcome
}

/// The script and the name of the profile it boots.
fn render(state: &State, mac: Option<&str>, base_url: &str) -> anyhow::Result<(String, String)> {
    let manifest = Manifest::load(state.root.dir())?;
    let config = match &state.boot_config {
        Some(path) => Some(BootConfig::load(path)?),
        None => None,
    };
    let selected = config.as_ref().and_then(|c| c.select(mac));
    let resolved: Resolved = match selected {
        Some(profile) => profiles::resolve(profile, &manifest)?,
        None => profiles::derive_default(&manifest)?,
    };
    let console = config.as_ref().and_then(|c| c.console.clone()).unwrap_or_else(|| DEFAULT_CONSOLE.to_string());
    let script = state.scripts.render(&resolved, base_url, mac, &console)?;
    Ok((script, resolved.profile))
}

/// `--public-url`, else `http://` + the Host the client asked for (if it is
/// a plain host[:port]), else the address the server is bound to.
fn base_url(request: &Request, state: &State) -> String {
    if let Some(url) = &state.public_url {
        return url.trim_end_matches('/').to_string();
    }
    let host = request.headers().iter().find(|h| h.field.equiv("Host")).map(|h| h.value.as_str().trim().to_string());
    match host {
        Some(h) if valid_host(&h) => format!("http://{h}"),
        _ => format!("http://{}", state.local_addr),
    }
}

fn valid_host(h: &str) -> bool {
    !h.is_empty() && h.len() < 256 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_header_is_checked() {
        assert!(super::valid_host("10.0.2.2:8080"));
        assert!(super::valid_host("[::1]:80"));
        assert!(!super::valid_host("evil\nshell"));
        assert!(!super::valid_host("a b"));
        assert!(!super::valid_host(""));
    }
}
