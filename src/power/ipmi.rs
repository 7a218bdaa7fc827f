//! IPMI 2.0 (RMCP+, "lanplus") through `ipmitool`, run by the one command
//! runner. The password goes in `IPMI_PASSWORD` with `-E`, so it is in no
//! argv that is logged or shown in an error.
//!
//! ipmitool says "Unable to establish IPMI v2 / RMCP+ session" for every
//! way a session can fail, so each request starts with an RMCP presence
//! ping (ASF, what `ipmiping` sends): a refused port or an unroutable
//! address is *unreachable*, silence is a *timeout*, a pong means the BMC
//! is there — and then a session that fails is the credentials, which
//! ipmitool's verbose output confirms ("RAKP 2 HMAC is invalid",
//! "unauthorized name").

use std::net::{ToSocketAddrs, UdpSocket};
use std::time::Duration;

use super::bmc::{Action, Bmc, BmcError, PowerState};
use super::credentials::Credential;
use crate::exec::{Cmd, ExecError};
use crate::inventory;

/// The RMCP port.
pub const PORT: u16 = 623;

pub struct Ipmi {
    host: String,
    port: u16,
    uefi: bool,
    credentials: String,
    credential: Credential,
    timeout: Duration,
}

impl Ipmi {
    pub fn new(
        bmc: &inventory::Bmc,
        name: &str,
        credential: Credential,
        timeout: Duration,
    ) -> Ipmi {
        Ipmi {
            host: bmc.address.clone(),
            port: bmc.port.unwrap_or(PORT),
            uefi: bmc.uefi,
            credentials: name.to_string(),
            credential,
            timeout,
        }
    }

    fn bmc(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `ipmitool … ARGS`; its stdout, or the error the failure means.
    fn ipmitool(&self, args: &[&str]) -> Result<String, BmcError> {
        self.probe()?;
        let secs = self.timeout.as_secs().max(2);
        let cmd = Cmd::new("ipmitool")
            .args(["-I", "lanplus", "-H", &self.host, "-p"])
            .arg(self.port.to_string())
            .args(["-U", &self.credential.username, "-E", "-v"])
            // Two tries of half the time each.
            .args(["-R", "2", "-N"])
            .arg((secs / 2).to_string())
            .args(args)
            .env("IPMI_PASSWORD", self.credential.password.expose());
        match cmd.run() {
            Ok(out) => Ok(out.stdout),
            Err(ExecError::Spawn { source, .. }) => Err(BmcError::Refused {
                bmc: self.bmc(),
                what: args.join(" "),
                why: format!("cannot run ipmitool ({source}; apt-get install -y ipmitool)"),
            }),
            Err(ExecError::Failed { tail, .. }) => Err(self.classify(args, &tail)),
        }
    }

    /// What ipmitool's output says went wrong.
    fn classify(&self, args: &[&str], tail: &str) -> BmcError {
        let auth = [
            "RAKP 2 HMAC is invalid",
            "unauthorized name",
            "invalid role",
            "Authentication",
        ];
        if let Some(hint) = auth.iter().find(|a| tail.contains(*a)) {
            return BmcError::Auth {
                bmc: self.bmc(),
                credentials: self.credentials.clone(),
                user: self.credential.username.clone(),
                why: (*hint).to_string(),
            };
        }
        if tail.contains("Unable to establish") || tail.contains("Get Auth Capabilities error") {
            return BmcError::Timeout {
                bmc: self.bmc(),
                after: self.timeout,
            };
        }
        let why = tail
            .lines()
            .map(str::trim)
            .rfind(|l| {
                !l.is_empty()
                    && !l.starts_with("Loading IANA")
                    && !l.contains("Cipher Suites")
                    && !l.starts_with('>')
            })
            .unwrap_or("failed")
            .to_string();
        BmcError::Refused {
            bmc: self.bmc(),
            what: args.join(" "),
            why,
        }
    }

    /// An RMCP presence ping: unreachable, silent, or there.
    fn probe(&self) -> Result<(), BmcError> {
        let unreachable = |why: String| BmcError::Unreachable {
            bmc: self.bmc(),
            why,
        };
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| unreachable(format!("cannot resolve {}: {e}", self.host)))?
            .next()
            .ok_or_else(|| unreachable(format!("{} resolves to no address", self.host)))?;
        let local = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = UdpSocket::bind(local).map_err(|e| unreachable(e.to_string()))?;
        socket
            .connect(addr)
            .map_err(|e| unreachable(e.to_string()))?;
        let wait = (self.timeout / 2).max(Duration::from_secs(1));
        socket
            .set_read_timeout(Some(wait))
            .map_err(|e| unreachable(e.to_string()))?;
        let mut buf = [0u8; 64];
        for _ in 0..2 {
            socket.send(&PING).map_err(|e| unreachable(e.to_string()))?;
            match socket.recv(&mut buf) {
                Ok(n) if is_pong(&buf[..n]) => return Ok(()),
                Ok(n) => {
                    return Err(BmcError::Protocol {
                        bmc: self.bmc(),
                        protocol: "IPMI (RMCP)",
                        why: format!("{n} bytes that are no RMCP presence pong"),
                    })
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(unreachable(e.to_string())),
            }
        }
        Err(BmcError::Timeout {
            bmc: self.bmc(),
            after: self.timeout,
        })
    }
}

/// RMCP (version 6, no ack, class ASF) + ASF presence ping, tag 0x21.
const PING: [u8; 12] = [6, 0, 0xff, 6, 0, 0, 0x11, 0xbe, 0x80, 0x21, 0, 0];

/// An ASF presence pong (message type 0x40).
fn is_pong(b: &[u8]) -> bool {
    b.len() >= 12 && b[0] == 6 && b[3] == 6 && b[4..8] == [0, 0, 0x11, 0xbe] && b[8] == 0x40
}

impl Bmc for Ipmi {
    fn describe(&self) -> String {
        format!("ipmi {}", self.bmc())
    }

    fn status(&self) -> Result<PowerState, BmcError> {
        let out = self.ipmitool(&["chassis", "power", "status"])?;
        match out.to_lowercase() {
            o if o.contains("power is on") => Ok(PowerState::On),
            o if o.contains("power is off") => Ok(PowerState::Off),
            _ => Err(BmcError::Protocol {
                bmc: self.bmc(),
                protocol: "IPMI",
                why: format!("`chassis power status` said {:?}", out.trim()),
            }),
        }
    }

    fn power(&self, action: Action) -> Result<(), BmcError> {
        let word = match action {
            Action::On => "on",
            Action::Off => "off",
            Action::Cycle => "cycle",
            Action::Status => return self.status().map(|_| ()),
        };
        self.ipmitool(&["chassis", "power", word]).map(|_| ())
    }

    fn boot_from_network_once(&self) -> Result<(), BmcError> {
        let mut args = vec!["chassis", "bootdev", "pxe"];
        if self.uefi {
            args.push("options=efiboot");
        }
        self.ipmitool(&args).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::credentials::Secret;

    fn ipmi(port: u16) -> Ipmi {
        Ipmi {
            host: "127.0.0.1".into(),
            port,
            uefi: false,
            credentials: "lab".into(),
            credential: Credential {
                username: "admin".into(),
                password: Secret::new("hunter2"),
            },
            timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn a_closed_port_is_unreachable_and_silence_a_timeout() {
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let err = ipmi(port).probe().unwrap_err();
        assert!(matches!(err, BmcError::Unreachable { .. }), "{err}");
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = ipmi(silent.local_addr().unwrap().port())
            .probe()
            .unwrap_err();
        assert!(matches!(err, BmcError::Timeout { .. }), "{err}");
        assert!(!format!("{err} {err:?}").contains("hunter2"));
    }

    #[test]
    fn session_failures_are_told_apart() {
        let i = ipmi(623);
        let auth = i.classify(
            &["chassis"],
            "> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session",
        );
        assert!(matches!(auth, BmcError::Auth { .. }), "{auth}");
        assert!(auth.to_string().contains("credentials `lab` (user admin)"));
        let refused = i.classify(&["chassis", "bootdev", "pxe"], "Loading IANA PEN Registry...\nSet Chassis Boot Parameter 5 failed: Invalid data field in request");
        assert_eq!(refused.to_string(), "BMC 127.0.0.1:623 refused `chassis bootdev pxe`: Set Chassis Boot Parameter 5 failed: Invalid data field in request");
        assert!(is_pong(&[
            6, 0, 0xff, 6, 0, 0, 0x11, 0xbe, 0x40, 0x21, 0, 0x10
        ]));
        assert!(!is_pong(&PING));
    }
}
