//! Where the power commands read and write what the boot server knows of a
//! machine: the served dir itself (`--dir`, on the server's host, as
//! `mkimage nodes` reads it) or the server's node API (`--server URL`).
//! Three things: the profile for its next boot (`serve::next_boot`), its
//! power as last seen (on its record, for the status page), and its record
//! (to follow its boot's stages).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::bmc::PowerState;
use crate::artifact::now;
use crate::serve::next_boot::{self, NextBoot};
use crate::serve::nodes::{Power, Record, Store};

pub enum Registry {
    /// The served dir (`DIR/.state/…`).
    Dir { served: PathBuf, store: Store },
    /// `mkimage serve`'s base URL, and its admin token (never logged).
    Server {
        url: String,
        agent: ureq::Agent,
        token: Option<String>,
    },
}

impl Registry {
    pub fn dir(served: PathBuf) -> Registry {
        let store = Store::new(&served);
        Registry::Dir { served, store }
    }

    /// The node API at `url`, with the server's admin token (`serve
    /// --admin-token-file`) when there is one.
    pub fn server(url: &str, token: Option<String>) -> Registry {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        Registry::Server {
            url: url.trim_end_matches('/').to_string(),
            agent,
            token,
        }
    }

    /// `mac`'s next boot is into `profile` (once, or until changed).
    pub fn set_next_boot(&self, mac: &str, profile: &str, once: bool) -> Result<(), String> {
        match self {
            Registry::Dir { served, .. } => {
                let next = NextBoot {
                    profile: profile.to_string(),
                    once,
                    set: now(),
                };
                next_boot::set(served, mac, Some(&next)).map_err(|e| {
                    format!(
                        "cannot store its next-boot profile in {}: {e}",
                        served.display()
                    )
                })
            }
            Registry::Server { .. } => self.post(
                mac,
                "next-boot",
                json!({ "profile": profile, "once": once }),
            ),
        }
    }

    /// Drop `mac`'s next-boot profile (a reprovision whose BMC failed).
    pub fn clear_next_boot(&self, mac: &str) -> Result<(), String> {
        match self {
            Registry::Dir { served, .. } => next_boot::set(served, mac, None)
                .map_err(|e| format!("cannot drop its next-boot profile: {e}")),
            Registry::Server { .. } => self.post(mac, "next-boot", json!({ "profile": null })),
        }
    }

    /// Keep what the BMC said of `mac`'s power (best effort: a failure is logged).
    pub fn note_power(&self, mac: &str, state: Option<PowerState>, error: Option<String>) {
        let state = state.map(|s| s.name().to_string());
        let result = match self {
            Registry::Dir { store, .. } => store
                .update(mac, now(), |r| {
                    r.power = Some(Power {
                        state,
                        error,
                        time: now(),
                    })
                })
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Registry::Server { .. } => {
                self.post(mac, "power", json!({ "state": state, "error": error }))
            }
        };
        if let Err(e) = result {
            tracing::warn!("cannot note the power of {mac}: {e}");
        }
    }

    /// `mac`'s record, if the server has one.
    pub fn record(&self, mac: &str) -> Result<Option<Record>, String> {
        match self {
            Registry::Dir { store, .. } => store.get(mac).map_err(|e| e.to_string()),
            Registry::Server { url, agent, token } => {
                let target = format!("{url}/api/nodes/{mac}");
                let mut req = agent.get(&target);
                if let Some(t) = token {
                    req = req.header("Authorization", &format!("Bearer {t}"));
                }
                let mut resp = req.call().map_err(|e| format!("{target}: {e}"))?;
                match resp.status().as_u16() {
                    404 => Ok(None),
                    200 => resp
                        .body_mut()
                        .read_json::<Record>()
                        .map(Some)
                        .map_err(|e| format!("{target}: {e}")),
                    s => Err(format!(
                        "{target}: HTTP {s}: {}",
                        resp.body_mut().read_to_string().unwrap_or_default().trim()
                    )),
                }
            }
        }
    }

    fn post(&self, mac: &str, what: &str, body: serde_json::Value) -> Result<(), String> {
        let Registry::Server { url, agent, token } = self else {
            return Ok(());
        };
        let target = format!("{url}/api/nodes/{mac}/{what}");
        let mut req = agent.post(&target);
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut resp = req.send_json(body).map_err(|e| format!("{target}: {e}"))?;
        match resp.status().as_u16() {
            200 => Ok(()),
            s => Err(format!(
                "{target}: HTTP {s}: {}",
                resp.body_mut().read_to_string().unwrap_or_default().trim()
            )),
        }
    }
}
