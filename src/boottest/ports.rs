//! Ports in the test's private namespace: a free one, and waiting for a
//! server to listen on one.

use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::bail;

/// A free TCP port on `ip` (in the private namespace nothing else runs).
pub fn free_port(ip: Ipv4Addr) -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// Wait until something accepts connections on `ip`:`port`.
pub fn wait_for_port(ip: Ipv4Addr, port: u16, what: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if TcpStream::connect((ip, port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not start on {ip}:{port}")
}
