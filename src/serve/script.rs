//! `/boot.ipxe[?mac=…]`: pick the machine's profile, resolve it against one
//! manifest snapshot, make sure the content store has every artifact the
//! script names, add the machine's node overlay last (`identity`), and
//! render the script — so every URL and sha256 in one
//! script belongs to the same set of artifacts and stays servable.
//!
//! When no script can be made (nothing built yet, a profile naming an
//! artifact that is not there) the machine still gets a 200 and a script:
//! the retry script, which prints the reason on its console and asks again
//! after a delay. iPXE shows an HTTP error as a bare code and stops.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use http::request::Parts;
use http::Method;

use super::identity::{self, RenderError};
use super::ipxe::DEFAULT_CONSOLE;
use super::metrics::Boot;
use super::profiles::{self, normalize_mac, BootConfig, Facts, Resolved, Selected};
use super::reply::{header, query_param, AfterSent, Reply};
use super::state::State;
use super::{download, nodes, servers};
use crate::artifact::{self, Manifest};

const SCRIPT: &str = "text/plain; charset=utf-8";

/// What the machine's boot loader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An iPXE script (`/boot.ipxe`).
    Ipxe,
    /// A GRUB config for the Secure Boot path (`/grub.cfg`, see `grub`).
    Grub,
}

pub fn boot(state: &State, req: &Parts, query: &str, client: SocketAddr, format: Format) -> Reply {
    let mac = match query_param(query, "mac") {
        Some(raw) => match normalize_mac(&raw) {
            Some(m) => Some(m),
            None => return Reply::text(400, format!("mac={raw} is not a MAC address\n")),
        },
        None => None,
    };
    let base_url = base_url(req, state);
    // HEAD is a look, not a boot: no token, no stage, no one-shot used.
    let is_boot = req.method != Method::HEAD;
    let (script, record) = answer(state, mac.as_deref(), &base_url, client, format, is_boot);
    let mut reply = match script {
        Ok(script) => Reply::bytes(200, SCRIPT, script),
        Err(e) => Reply::text(500, e),
    };
    reply.mac = mac;
    reply.after_sent = record;
    reply
}

/// The script (or config) for `mac`, or the retry script when none can be
/// made yet; `Err` only when even that template fails. A boot (`is_boot`;
/// not a HEAD) gets a fresh boot token for the MAC and is counted in the
/// metrics; a one-shot profile it used is used up. Its record's new boot is
/// queued, not written ([`nodes::api::script_served`]): the second value
/// writes it, for the caller to run once the script went out.
pub fn answer(
    state: &State,
    mac: Option<&str>,
    base_url: &str,
    client: SocketAddr,
    format: Format,
    is_boot: bool,
) -> (Result<String, String>, Option<AfterSent>) {
    // In memory: valid before the machine has the script that carries it.
    let token = mac.filter(|_| is_boot).map(|m| state.tokens.issue(m));
    let token = token.as_ref().map(|t| t.as_str());
    match render(state, mac, base_url, client, format, token) {
        Ok(Made {
            script,
            profile,
            selected,
            next,
            node_failure,
        }) => {
            if let (Some(mac), Some(next), true) = (mac, &next, is_boot) {
                super::next_boot::served(state.root.dir(), mac, next);
            }
            let record = match (mac, is_boot) {
                (Some(mac), true) => {
                    let failed = node_failure.map(|f| node_failed(mac, f));
                    let ip = client.ip();
                    Some(nodes::api::script_served(
                        &state.nodes,
                        mac,
                        ip,
                        &profile,
                        selected,
                        failed,
                    ))
                }
                _ => None,
            };
            state.metrics.boot(Boot {
                time: artifact::now(),
                client: client.ip().to_string(),
                mac: mac.map(str::to_string),
                profile,
            });
            (Ok(script), record)
        }
        Err(reason) => (retry(state, mac, base_url, format, &reason), None),
    }
}

/// The retry script, for when no script can be made (`reason`).
fn retry(
    state: &State,
    mac: Option<&str>,
    base_url: &str,
    format: Format,
    reason: &str,
) -> Result<String, String> {
    tracing::warn!(
        mac = mac.unwrap_or("-"),
        "no boot script yet, the machine will retry: {reason}"
    );
    state.metrics.retry_scripts.fetch_add(1, Relaxed);
    let delay = state.retry_delay.as_secs();
    match format {
        Format::Ipxe => state
            .scripts
            .retry(reason, base_url, mac, delay)
            .map_err(|e| {
                format!(
                    "#!ipxe\necho mkimage serve: the retry script template failed: {e}\nshell\n"
                )
            }),
        Format::Grub => super::grub::retry(reason, mac, delay)
            .map_err(|e| format!("echo 'mkimage serve: the retry config template failed: {e}'\n")),
    }
}

/// A boot script and what went into it.
struct Made {
    script: String,
    /// The profile it boots.
    profile: String,
    /// How that profile was chosen (by the machine's recorded inventory too).
    selected: Selected,
    next: Option<super::next_boot::NextBoot>,
    /// Why the machine's node overlay is left out of it.
    node_failure: Option<RenderError>,
}

/// The node overlay could not be made: the server log names node and
/// template, and the machine's record shows the boot failed and why (it
/// boots without its node overlay, never with an empty value in it).
fn node_failed(mac: &str, failure: RenderError) -> nodes::Change {
    tracing::warn!(mac = %mac, node = %failure.node, template = %failure.template, "node overlay left out: {failure}");
    let ms = artifact::now_ms();
    Box::new(move |r: &mut nodes::Record| {
        r.saw_ms(nodes::Stage::Failed, ms);
        r.failure = Some(nodes::record::Failure {
            time: ms / 1000,
            step: Some("node overlay".into()),
            reason: failure.to_string(),
        });
    })
}

/// The script for a machine, or why there is none.
fn render(
    state: &State,
    mac: Option<&str>,
    base_url: &str,
    client: SocketAddr,
    format: Format,
    token: Option<&str>,
) -> Result<Made, String> {
    let manifest = Manifest::load(state.root.dir()).map_err(|e| format!("{e:#}"))?;
    let config = match &state.boot_config {
        Some(path) => Some(BootConfig::load(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let (mut resolved, selected, next) = select(state, config.as_ref(), &manifest, mac)?;
    let node_failure = match (&config, &state.boot_config, mac) {
        (Some(c), Some(path), Some(mac)) => {
            identity::personalize(&mut resolved, &state.node_overlays, c, path, mac, base_url).err()
        }
        _ => None,
    };
    let local = [&resolved.kernel, &resolved.initrd, &resolved.basefs]
        .into_iter()
        .chain(&resolved.overlays);
    for art in local.filter(|a| a.remote.is_none()) {
        download::ensure(state, &art.file, &art.sha256)?;
    }
    let console = config
        .as_ref()
        .and_then(|c| c.console.clone())
        .unwrap_or_else(|| DEFAULT_CONSOLE.to_string());
    let servers = config
        .as_ref()
        .map(|c| servers::for_client(&c.servers, &c.servers_by_subnet, Some(client.ip())))
        .unwrap_or_default();
    let script = match format {
        Format::Ipxe => state
            .scripts
            .render(&resolved, base_url, &servers, mac, &console, token)
            .map_err(|e| e.to_string())?,
        Format::Grub => super::grub::render(&resolved, base_url, &servers, mac, &console, token)
            .map_err(|e| e.to_string())?,
    };
    Ok(Made {
        script,
        profile: resolved.profile,
        selected,
        next,
        node_failure,
    })
}

/// The profile a machine boots, resolved, how it was chosen, and the
/// operator's next-boot entry it came from: an operator's profile for its
/// next boot first, then the boot config's selection by MAC, the inventory
/// facts it reported (only those that came with its boot token), tags,
/// default. The one selection every boot path shares (iPXE scripts, GRUB
/// configs, the UKI the proxyDHCP offers an HTTP boot client).
pub fn select(
    state: &State,
    config: Option<&BootConfig>,
    manifest: &Manifest,
    mac: Option<&str>,
) -> Result<(Resolved, Selected, Option<super::next_boot::NextBoot>), String> {
    let inventory = mac.and_then(|m| nodes::api::inventory_of(&state.nodes, m));
    let facts = inventory.as_ref().map(|i| i as &dyn Facts);
    let next = mac.and_then(|m| super::next_boot::pick(state.root.dir(), config, m));
    let (resolved, selected) = match &next {
        Some((profile, _)) => (
            profiles::resolve(profile, manifest).map_err(|e| e.to_string())?,
            Selected::Mac,
        ),
        None => {
            profiles::for_known_machine(config, mac, facts, manifest).map_err(|e| e.to_string())?
        }
    };
    Ok((resolved, selected, next.map(|(_, n)| n)))
}

/// `--public-url`, else `http://` + the Host the client asked for (if it is
/// a plain host[:port]), else the address the server is bound to.
fn base_url(req: &Parts, state: &State) -> String {
    if let Some(url) = &state.public_url {
        return url.trim_end_matches('/').to_string();
    }
    match header(&req.headers, "host").map(str::trim) {
        Some(h) if valid_host(h) => format!("http://{h}"),
        _ => format!("http://{}", state.local_addr),
    }
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() < 256
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
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
