//! The two networks boot-test boots on, behind one face: QEMU's user
//! networking (DHCP from QEMU, which hands the NIC's iPXE ROM the script
//! URL; the servers on loopback, seen by the guest as 10.0.2.2), or the
//! lab's layer-2 network (`lab`: a bridge, a site DHCP server, the
//! proxyDHCP). Where the servers listen, what `mkimage serve` is told, how
//! QEMU is wired, and what the host checks afterwards differ; the boot and
//! its assertions do not.

use std::net::Ipv4Addr;
use std::path::Path;

use super::dns::{self, Dns};
use super::lab::{self, Lab, Verdict};
use super::vm::{Boot, Net, VmSpec};
use crate::sys::Sys;

/// A running network; what it started is stopped by pid when dropped.
pub enum Network {
    User { _dns: Dns },
    Lab { _lab: Lab },
}

impl Network {
    /// Start it. Call inside boot-test's private network namespace.
    /// `next_server`: the lab's site DHCP server names the boot server as
    /// next-server (what Debian's GRUB needs on the Secure Boot path).
    pub fn start(
        sys: &dyn Sys,
        scratch: &Path,
        proxy_dhcp: bool,
        next_server: bool,
    ) -> anyhow::Result<Network> {
        Ok(match proxy_dhcp {
            true => Network::Lab {
                _lab: lab::start(sys, scratch, next_server)?,
            },
            false => Network::User {
                _dns: dns::start(sys, scratch, &dns::Server::user_net())?,
            },
        })
    }

    /// The address the guest knows the test's servers by (and the test's
    /// DNS name resolves to).
    pub fn seen_as(proxy_dhcp: bool) -> Ipv4Addr {
        if proxy_dhcp {
            lab::SERVER
        } else {
            dns::USER_NET_ADDR
        }
    }

    /// Where the test's servers listen.
    pub fn listen(&self) -> Ipv4Addr {
        match self {
            Network::User { .. } => Ipv4Addr::LOCALHOST,
            Network::Lab { .. } => lab::SERVER,
        }
    }

    /// `mkimage serve`'s arguments beside `--http`.
    pub fn serve_args(&self) -> Vec<String> {
        match self {
            Network::User { .. } => vec!["--tftp".into(), "off".into()],
            Network::Lab { .. } => lab::serve_args(),
        }
    }

    /// Wire the VM: user networking handing out `script_url`, or the lab's
    /// tap — and for UEFI there, no NIC ROM, so the firmware's own PXE boots.
    pub fn wire(&self, spec: &mut VmSpec, script_url: &str) {
        match self {
            Network::User { .. } => {
                spec.net = Net::User {
                    bootfile: Some(script_url.to_string()),
                }
            }
            Network::Lab { .. } => {
                spec.net = Net::Tap {
                    ifname: lab::TAP.into(),
                };
                spec.boot = Boot::Network { rom: !spec.uefi };
            }
        }
    }

    /// What the host saw of the boot (the lab's logs; nothing with user networking).
    pub fn judge(&self, scratch: &Path, serve_log: &str, mac: &str, uefi: bool) -> Vec<Verdict> {
        match self {
            Network::User { .. } => Vec::new(),
            Network::Lab { .. } => {
                let site_log =
                    std::fs::read_to_string(scratch.join("dnsmasq.log")).unwrap_or_default();
                lab::judge(serve_log, &site_log, mac, uefi)
            }
        }
    }
}
