//! The proxyDHCP (`mkimage serve --proxy-dhcp IFACE`): answers PXE, UEFI
//! HTTP boot and iPXE clients on one interface beside the site's own DHCP
//! server, handing out boot files and no addresses — so a lab points its
//! machines at mkimage without touching its DHCP configuration.
//!
//! One task on the server's runtime listens on UDP 67 (the broadcast DHCP
//! exchange) and 4011 (the PXE exchange). Every datagram is checked and
//! decoded (`packet`), answered or not (`answer`), and counted: replies by
//! client kind, malformed packets by reason, requests that are not ours
//! (the site's DHCP traffic, other architectures) as ignored. A hostile
//! packet costs one parse and a counter; it never stops the task.

mod answer;
mod packet;
#[cfg(test)]
pub use packet::parse as parse_packet;
mod sockets;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::watch;

pub use answer::{Client, UkiLookup, BIOS_FILE, EFI_FILE, HTTP_IPXE_PREFIX};
use answer::{Config, Port};
pub use sockets::{interface_address, SocketError};

use super::metrics::Metrics;

/// The two bound sockets and the address the proxy names itself by.
pub struct Listener {
    iface: String,
    server: Ipv4Addr,
    dhcp: UdpSocket,
    pxe: UdpSocket,
}

impl Listener {
    /// Bind UDP 67 and 4011 on `iface` (on the server's runtime).
    pub fn bind(iface: &str) -> Result<Listener, SocketError> {
        let server = interface_address(iface)?;
        let dhcp = sockets::bind_udp(iface, Port::Dhcp.number())?;
        let pxe = sockets::bind_udp(iface, Port::Pxe.number())?;
        Ok(Listener {
            iface: iface.to_string(),
            server,
            dhcp,
            pxe,
        })
    }

    /// The interface's address: what the proxy names as its server and TFTP host.
    pub fn server(&self) -> Ipv4Addr {
        self.server
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }
}

/// What the proxy hands out besides its own address.
pub struct Offers {
    /// Where the HTTP side is reached (`http://HOST:PORT`, no trailing slash).
    pub base_url: String,
    /// What UEFI PXE clients load over TFTP.
    pub efi_file: String,
    /// With `--uefi-boot shim`: the UKI for UEFI HTTP boot clients.
    pub uki: Option<UkiLookup>,
}

/// Answer on both ports until `stop` turns true.
pub async fn serve(
    listener: Listener,
    offers: Offers,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = Config {
        server: listener.server,
        base_url: offers.base_url,
        efi_file: offers.efi_file,
        uki: offers.uki,
    };
    let mut dhcp_buf = vec![0u8; packet::MAX_PACKET + 1];
    let mut pxe_buf = vec![0u8; packet::MAX_PACKET + 1];
    loop {
        tokio::select! {
            r = listener.dhcp.recv_from(&mut dhcp_buf) => handle(&listener.dhcp, r.map(|(n, p)| (&dhcp_buf[..n], p)), Port::Dhcp, &cfg, &metrics).await,
            r = listener.pxe.recv_from(&mut pxe_buf) => handle(&listener.pxe, r.map(|(n, p)| (&pxe_buf[..n], p)), Port::Pxe, &cfg, &metrics).await,
            _ = stop.changed() => return,
        }
    }
}

async fn handle(
    socket: &UdpSocket,
    received: std::io::Result<(&[u8], SocketAddr)>,
    port: Port,
    cfg: &Config,
    metrics: &Metrics,
) {
    let (bytes, peer) = match received {
        Ok((bytes, SocketAddr::V4(peer))) => (bytes, peer),
        Ok(_) => return,
        Err(e) => return tracing::warn!(port = port.number(), "proxy-dhcp: {e}"),
    };
    let req = match packet::parse(bytes) {
        Ok(req) => req,
        Err(e) => {
            metrics.dhcp_dropped(e.reason());
            return tracing::debug!(client = %peer, port = port.number(), "proxy-dhcp: dropped a malformed packet: {e}");
        }
    };
    let mac = req.mac_string();
    let answer = match answer::answer(&req, port, peer, cfg) {
        Ok(a) => a,
        Err(why) => {
            metrics.dhcp_ignored();
            return tracing::debug!(mac = %mac, port = port.number(), "proxy-dhcp: not answered: {why}");
        }
    };
    let what = if port == Port::Dhcp { "offer" } else { "ack" };
    if let Some(why) = &answer.note {
        tracing::info!(mac = %mac, "proxy-dhcp: no signed UKI for this UEFI HTTP boot client, iPXE instead: {why}");
    }
    match socket.send_to(&answer.bytes, answer.to).await {
        Ok(_) => {
            metrics.dhcp_reply(answer.client.label());
            tracing::info!(mac = %mac, client = %answer.client.label(), port = port.number(), file = %answer.file, to = %answer.to, "proxy-dhcp: {what}");
        }
        Err(e) => {
            tracing::warn!(mac = %mac, to = %answer.to, "proxy-dhcp: cannot send the {what}: {e}")
        }
    }
}

/// What `--proxy-dhcp` needs before it starts: TFTP (PXE firmware loads
/// iPXE over it) and both iPXE binaries where TFTP looks (`dirs`, in order).
pub fn preflight(tftp_on: bool, dirs: &[&Path]) -> Result<(), String> {
    if !tftp_on {
        return Err(
            "--proxy-dhcp sends PXE firmware to TFTP for iPXE: it cannot go with --tftp off".into(),
        );
    }
    for name in [BIOS_FILE, EFI_FILE] {
        if !dirs.iter().any(|d| d.join(name).is_file()) {
            let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            return Err(format!("--proxy-dhcp hands out {name}, which is in none of {}: apt-get install -y ipxe, or pass --ipxe-dir DIR", looked.join(", ")));
        }
    }
    Ok(())
}

/// The base of the URLs the proxy hands out: `--public-url`, else the HTTP
/// listener's address (the interface's when it listens on all of them).
pub fn base_url(public_url: Option<&str>, http: SocketAddr, server: Ipv4Addr) -> String {
    if let Some(url) = public_url {
        return url.trim_end_matches('/').to_string();
    }
    let host = if http.ip().is_unspecified() {
        IpAddr::V4(server)
    } else {
        http.ip()
    };
    if host.is_loopback() {
        tracing::warn!("proxy-dhcp: HTTP listens on {host}, which no machine on the network can reach: pass --http 0.0.0.0:PORT or --public-url");
    }
    format!("http://{}", SocketAddr::new(host, http.port()))
}
