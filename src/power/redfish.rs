//! Redfish (DMTF DSP0266) over HTTP(S) with `ureq`: the ComputerSystem's
//! `PowerState`, `ComputerSystem.Reset`, and a one-time boot override
//! (`BootSourceOverrideTarget: Pxe`, `BootSourceOverrideEnabled: Once`).
//! Basic authentication on every request (no session to leak or expire).
//! An answer that is not Redfish — not JSON, or JSON without the fields
//! the standard promises — is a protocol error naming what was missing.

use std::time::Duration;

use serde_json::{json, Value};

use super::bmc::{Action, Bmc, BmcError, PowerState};
use super::credentials::Credential;
use crate::inventory;

/// The longest body read from a BMC.
const MAX_BODY: u64 = 4 << 20;

pub struct Redfish {
    base: String,
    system: Option<String>,
    uefi: bool,
    credentials: String,
    credential: Credential,
    timeout: Duration,
    agent: ureq::Agent,
}

impl Redfish {
    pub fn new(
        bmc: &inventory::Bmc,
        name: &str,
        credential: Credential,
        timeout: Duration,
    ) -> Result<Redfish, String> {
        let base = base_url(&bmc.address, bmc.port)?;
        let tls = ureq::tls::TlsConfig::builder()
            .disable_verification(!bmc.verify_tls)
            .build();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .tls_config(tls)
            .build()
            .into();
        Ok(Redfish {
            base,
            system: bmc.system.clone(),
            uefi: bmc.uefi,
            credentials: name.to_string(),
            credential,
            timeout,
            agent,
        })
    }

    fn authorization(&self) -> String {
        let pair = format!(
            "{}:{}",
            self.credential.username,
            self.credential.password.expose()
        );
        format!("Basic {}", base64(pair.as_bytes()))
    }

    /// One request; the JSON answer (`Value::Null` for an empty one).
    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, BmcError> {
        let url = format!("{}{path}", self.base);
        let auth = self.authorization();
        let result = match (method, body) {
            ("GET", _) => self
                .agent
                .get(&url)
                .header("Authorization", &auth)
                .header("Accept", "application/json")
                .call(),
            ("PATCH", Some(b)) => self
                .agent
                .patch(&url)
                .header("Authorization", &auth)
                .send_json(b),
            (_, b) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(b.unwrap_or(Value::Null)),
        };
        let what = format!("{method} {path}");
        let mut response = result.map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| self.transport(e))?;
        match status {
            200..=299 if text.trim().is_empty() => Ok(Value::Null),
            200..=299 => serde_json::from_str(&text).map_err(|e| {
                self.junk(format!(
                    "{what} answered {status} with a body that is not JSON ({e}): {}",
                    excerpt(&text)
                ))
            }),
            401 | 403 => Err(BmcError::Auth {
                bmc: self.base.clone(),
                credentials: self.credentials.clone(),
                user: self.credential.username.clone(),
                why: format!("{what}: HTTP {status}"),
            }),
            _ => Err(BmcError::Refused {
                bmc: self.base.clone(),
                what,
                why: format!("HTTP {status}: {}", redfish_message(&text)),
            }),
        }
    }

    fn transport(&self, e: ureq::Error) -> BmcError {
        match e {
            ureq::Error::Timeout(_) => BmcError::Timeout {
                bmc: self.base.clone(),
                after: self.timeout,
            },
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => BmcError::Timeout {
                bmc: self.base.clone(),
                after: self.timeout,
            },
            ureq::Error::Io(io) => BmcError::Unreachable {
                bmc: self.base.clone(),
                why: io.to_string(),
            },
            ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => BmcError::Unreachable {
                bmc: self.base.clone(),
                why: e.to_string(),
            },
            other => self.junk(other.to_string()),
        }
    }

    fn junk(&self, why: String) -> BmcError {
        BmcError::Protocol {
            bmc: self.base.clone(),
            protocol: "Redfish",
            why,
        }
    }

    /// The ComputerSystem's path: the inventory's `system:`, else the
    /// service's only system.
    fn system(&self) -> Result<String, BmcError> {
        if let Some(s) = &self.system {
            return Ok(s.clone());
        }
        let systems = self.request("GET", "/redfish/v1/Systems", None)?;
        let members: Vec<&str> = systems["Members"]
            .as_array()
            .ok_or_else(|| self.junk("/redfish/v1/Systems has no `Members` list".into()))?
            .iter()
            .filter_map(|m| m["@odata.id"].as_str())
            .collect();
        match members.as_slice() {
            [one] => Ok(one.to_string()),
            [] => Err(self.junk("/redfish/v1/Systems lists no system".into())),
            many => Err(BmcError::Refused {
                bmc: self.base.clone(),
                what: "GET /redfish/v1/Systems".into(),
                why: format!(
                    "it manages {} systems ({}): name the node's in the inventory's `bmc.system:`",
                    many.len(),
                    many.join(", ")
                ),
            }),
        }
    }

    fn reset(&self, kind: &str) -> Result<(), BmcError> {
        let system = self.system()?;
        let found = self.request("GET", &system, None)?;
        let target = found["Actions"]["#ComputerSystem.Reset"]["target"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{system}/Actions/ComputerSystem.Reset"));
        self.request("POST", &target, Some(json!({ "ResetType": kind })))
            .map(|_| ())
    }
}

impl Bmc for Redfish {
    fn describe(&self) -> String {
        format!("redfish {}", self.base)
    }

    fn status(&self) -> Result<PowerState, BmcError> {
        let system = self.system()?;
        let found = self.request("GET", &system, None)?;
        match found["PowerState"].as_str() {
            Some("On" | "PoweringOn" | "Paused") => Ok(PowerState::On),
            Some("Off" | "PoweringOff") => Ok(PowerState::Off),
            Some(other) => Err(self.junk(format!("{system}: PowerState `{other}`"))),
            None => Err(self.junk(format!("{system} has no `PowerState`"))),
        }
    }

    fn power(&self, action: Action) -> Result<(), BmcError> {
        match action {
            Action::On => self.reset("On"),
            Action::Off => self.reset("ForceOff"),
            Action::Cycle => self.reset("ForceRestart"),
            Action::Status => self.status().map(|_| ()),
        }
    }

    fn boot_from_network_once(&self) -> Result<(), BmcError> {
        let system = self.system()?;
        let mut boot = json!({
            "BootSourceOverrideTarget": "Pxe",
            "BootSourceOverrideEnabled": "Once",
        });
        if self.uefi {
            boot["BootSourceOverrideMode"] = json!("UEFI");
        }
        self.request("PATCH", &system, Some(json!({ "Boot": boot })))
            .map(|_| ())
    }
}

/// `https://HOST[:PORT]`, or the address as given when it is a URL.
fn base_url(address: &str, port: Option<u16>) -> Result<String, String> {
    let address = address.trim_end_matches('/');
    let (scheme, host) = match address.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (s, rest),
        Some((s, _)) => {
            return Err(format!(
                "bmc.address `{address}`: `{s}://` is not http:// or https://"
            ))
        }
        None => ("https", address),
    };
    if host.contains('/') {
        return Err(format!(
            "bmc.address `{address}`: give the host (and port), not a path"
        ));
    }
    Ok(match port {
        Some(p) if !host.contains(':') || host.ends_with(']') => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// The first line of a body, short, for an error.
fn excerpt(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let cut: String = line.chars().take(80).collect();
    format!("{cut:?}")
}

/// A Redfish error body's message (`error.message`), else an excerpt.
fn redfish_message(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| excerpt(text))
}

/// Standard base64 with padding (for the Basic authorization header).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_basic_auth() {
        assert_eq!(base_url("10.0.0.8", None).unwrap(), "https://10.0.0.8");
        assert_eq!(
            base_url("http://127.0.0.1", Some(8000)).unwrap(),
            "http://127.0.0.1:8000"
        );
        assert_eq!(
            base_url("http://127.0.0.1:9/", Some(8000)).unwrap(),
            "http://127.0.0.1:9"
        );
        assert!(base_url("ftp://x", None).is_err());
        assert!(base_url("https://x/redfish", None).is_err());
        assert_eq!(base64(b"admin:password"), "YWRtaW46cGFzc3dvcmQ=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(excerpt("\n<html>junk"), "\"<html>junk\"");
    }
}
