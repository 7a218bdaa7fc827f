//! The proxyDHCP's two sockets on one interface. A client without an
//! address broadcasts to 255.255.255.255:67, which only a socket bound to
//! the wildcard address receives, so both sockets bind 0.0.0.0 and are tied
//! to the interface with SO_BINDTODEVICE: they hear that interface alone,
//! and a broadcast reply leaves through it. SO_REUSEADDR lets a DHCP server
//! on the same host keep port 67 too (each socket gets a copy of a
//! broadcast).

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;

use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};
use tokio::net::UdpSocket;

/// Why the proxyDHCP cannot start on an interface.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("--proxy-dhcp {iface}: no such network interface (this host has: {known})")]
    NoInterface { iface: String, known: String },
    #[error("--proxy-dhcp {iface}: the interface has no IPv4 address (give it one, e.g. `ip addr add 10.0.0.5/24 dev {iface}`)")]
    NoAddress { iface: String },
    #[error("--proxy-dhcp {iface}: cannot listen on UDP port {port}: {source} (run as root; port {port} must be free or shared with SO_REUSEADDR)")]
    Bind {
        iface: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot list the network interfaces: {0}")]
    List(#[source] nix::Error),
}

/// The first IPv4 address of `iface`.
pub fn interface_address(iface: &str) -> Result<Ipv4Addr, SocketError> {
    let addrs: Vec<_> = nix::ifaddrs::getifaddrs()
        .map_err(SocketError::List)?
        .collect();
    if !addrs.iter().any(|a| a.interface_name == iface) {
        let mut known: Vec<String> = addrs.iter().map(|a| a.interface_name.clone()).collect();
        known.sort();
        known.dedup();
        return Err(SocketError::NoInterface {
            iface: iface.to_string(),
            known: known.join(", "),
        });
    }
    addrs
        .iter()
        .filter(|a| a.interface_name == iface)
        .find_map(|a| a.address.as_ref()?.as_sockaddr_in().map(|s| s.ip()))
        .ok_or_else(|| SocketError::NoAddress {
            iface: iface.to_string(),
        })
}

/// A UDP socket on 0.0.0.0:`port`, tied to `iface`, allowed to broadcast,
/// on the current tokio runtime.
pub fn bind_udp(iface: &str, port: u16) -> Result<UdpSocket, SocketError> {
    let err = |e: nix::Error| SocketError::Bind {
        iface: iface.to_string(),
        port,
        source: e.into(),
    };
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(err)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(err)?;
    setsockopt(&fd, sockopt::Broadcast, &true).map_err(err)?;
    setsockopt(&fd, sockopt::BindToDevice, &OsString::from(iface)).map_err(err)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)),
    )
    .map_err(err)?;
    UdpSocket::from_std(std::net::UdpSocket::from(fd)).map_err(|source| SocketError::Bind {
        iface: iface.to_string(),
        port,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_its_address_and_unknown_interfaces_are_named() {
        assert_eq!(interface_address("lo").unwrap(), Ipv4Addr::LOCALHOST);
        let err = interface_address("nosuch0").unwrap_err().to_string();
        assert!(
            err.contains("nosuch0: no such network interface") && err.contains("lo"),
            "{err}"
        );
    }
}
