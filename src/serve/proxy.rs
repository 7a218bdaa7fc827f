//! Behind a proxy (`serve --trusted-proxy CIDR…`): on a connection from a
//! trusted peer, `X-Forwarded-For` (else `Forwarded: for=`) names the
//! client, and that address is what node records, fetch attribution and
//! `servers_by_subnet` see. From any other peer the headers are ignored:
//! anyone can write them.
//!
//! The list is read right to left, skipping addresses that are themselves
//! trusted proxies (a chain of tiers); the first other address is the
//! client. A header that does not parse leaves the peer's address.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

/// An address block, `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `ADDR/PREFIX` or `ADDR`; the error names the value and the form.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let bad =
            |why: &str| format!("--trusted-proxy {s}: {why} (use ADDR/PREFIX, e.g. 10.0.0.0/8)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad(&format!("prefix must be 0 to {max}")))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) if self.addr.is_ipv4() => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            ip => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// The client a request is from: `peer`, or the address a trusted proxy
/// forwarded for.
pub fn client(peer: SocketAddr, headers: &HeaderMap, trusted: &[Cidr]) -> SocketAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if trusted.is_empty() || !is_trusted(peer.ip()) {
        return peer;
    }
    let chain = forwarded_for(headers);
    match chain
        .iter()
        .rev()
        .find(|ip| !is_trusted(**ip))
        .or(chain.first())
    {
        Some(ip) => SocketAddr::new(*ip, 0),
        None => peer,
    }
}

/// The addresses of `X-Forwarded-For` (all its lines, in order), else of
/// `Forwarded`'s `for=` parameters; empty if any of them does not parse.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let values = |name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<&str>>()
    };
    let xff = values("x-forwarded-for");
    let items: Vec<&str> = if !xff.is_empty() {
        xff
    } else {
        values("forwarded")
            .into_iter()
            .filter_map(|el| {
                el.split(';').find_map(|kv| {
                    let (k, v) = kv.trim().split_once('=')?;
                    k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
                })
            })
            .collect()
    };
    let parsed: Option<Vec<IpAddr>> = items.iter().map(|s| address(s)).collect();
    parsed.unwrap_or_default()
}

/// `1.2.3.4`, `"[2001:db8::1]:4711"`, `1.2.3.4:80` as an address.
fn address(item: &str) -> Option<IpAddr> {
    let s = item.trim_matches('"');
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    s.parse::<SocketAddr>().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.9.8.7".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(Cidr::parse("127.0.0.1")
            .unwrap()
            .contains("127.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8")
            .unwrap()
            .contains("fd12::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(Cidr::parse("nonsense/8")
            .unwrap_err()
            .contains("--trusted-proxy nonsense/8"));
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_peers() {
        let trusted = [Cidr::parse("127.0.0.1/32").unwrap()];
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let other: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let xff = headers(&[("x-forwarded-for", "10.77.0.9")]);
        assert_eq!(client(peer, &xff, &trusted).ip().to_string(), "10.77.0.9");
        assert_eq!(client(other, &xff, &trusted), other, "untrusted peer");
        assert_eq!(client(peer, &xff, &[]), peer, "no --trusted-proxy");
        let chain = headers(&[
            ("x-forwarded-for", "6.6.6.6, 10.0.0.5"),
            ("x-forwarded-for", "127.0.0.1"),
        ]);
        assert_eq!(client(peer, &chain, &trusted).ip().to_string(), "10.0.0.5");
        let fwd = headers(&[("forwarded", "for=\"[2001:db8::1]:4711\";proto=http")]);
        assert_eq!(client(peer, &fwd, &trusted).ip().to_string(), "2001:db8::1");
        let bad = headers(&[("x-forwarded-for", "unknown")]);
        assert_eq!(client(peer, &bad, &trusted), peer);
        assert_eq!(client(peer, &HeaderMap::new(), &trusted), peer);
    }
}
