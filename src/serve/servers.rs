//! More than one boot server: the boot config's `servers:` (in order, for
//! every client) and `servers_by_subnet:` (CIDR → servers, the longest
//! matching prefix wins). A boot script tries each server in turn for the
//! kernel and initrd, and passes the list to the init as
//! `mkimage.servers=URL,URL`, which fetches the basefs and overlays from
//! the next server when one fails. Without a list the script names only
//! the server that answered.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// A subnet in CIDR notation, parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Subnet {
    addr: IpAddr,
    prefix: u8,
}

fn parse_subnet(s: &str) -> Result<Subnet, String> {
    let bad = || {
        format!("servers_by_subnet: `{s}` is not a subnet: write ADDRESS/PREFIX, e.g. 10.0.1.0/24")
    };
    let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.trim().parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok(Subnet { addr, prefix })
}

impl Subnet {
    fn contains(&self, ip: IpAddr) -> bool {
        let (net, ip, bits) = match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            (IpAddr::V4(n), IpAddr::V6(i)) => match i.to_ipv4_mapped() {
                Some(i) => (u32::from(n) as u128, u32::from(i) as u128, 32),
                None => return false,
            },
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        shift >= bits || (net >> shift) == (ip >> shift)
    }
}

/// A base URL a boot script may name: `http[s]://HOST[:PORT][/PATH]`, no
/// trailing slash, nothing iPXE or the kernel command line would split on.
pub fn check_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let ok = rest.is_some_and(|r| {
        !r.is_empty()
            && !r.starts_with('/')
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]/_~%".contains(&b))
    });
    if !ok {
        return Err(format!("server `{url}`: write a base URL, http://HOST[:PORT][/PATH] (no spaces, commas, quotes or `$`)"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// `--public-url` (publish, keys sign-ukis) as `check_url` takes it, as a
/// usage error naming the flag.
pub fn check_public_url(url: &str) -> anyhow::Result<String> {
    check_url(url).map_err(|e| crate::UsageError(format!("--public-url: {e}")).into())
}

/// Check and normalise both lists (called once when the boot config is read).
pub fn check(
    servers: &mut [String],
    by_subnet: &mut BTreeMap<String, Vec<String>>,
) -> Result<(), String> {
    for s in servers.iter_mut() {
        *s = check_url(s)?;
    }
    for (subnet, list) in by_subnet.iter_mut() {
        parse_subnet(subnet)?;
        if list.is_empty() {
            return Err(format!("servers_by_subnet: `{subnet}` lists no server"));
        }
        for s in list.iter_mut() {
            *s = check_url(s)?;
        }
    }
    Ok(())
}

/// The servers for a client at `ip`, in the order to try them: the longest
/// subnet containing it, else `servers`; empty when neither names any.
pub fn for_client(
    servers: &[String],
    by_subnet: &BTreeMap<String, Vec<String>>,
    ip: Option<IpAddr>,
) -> Vec<String> {
    let best = ip.and_then(|ip| {
        by_subnet
            .iter()
            .filter_map(|(s, list)| {
                parse_subnet(s)
                    .ok()
                    .filter(|n| n.contains(ip))
                    .map(|n| (n.prefix, list))
            })
            .max_by_key(|(prefix, _)| *prefix)
    });
    match best {
        Some((_, list)) => list.clone(),
        None => servers.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_pick_the_longest_match_else_the_list() {
        let mut servers = vec!["http://a:8080/".to_string(), "http://b:8080".to_string()];
        let mut by = BTreeMap::from([
            ("10.0.0.0/8".to_string(), vec!["http://wide".to_string()]),
            (
                "10.0.1.0/24".to_string(),
                vec!["http://near".to_string(), "http://a:8080".to_string()],
            ),
        ]);
        check(&mut servers, &mut by).unwrap();
        assert_eq!(servers[0], "http://a:8080");
        let ip = |s: &str| Some(s.parse().unwrap());
        assert_eq!(
            for_client(&servers, &by, ip("10.0.1.7")),
            ["http://near", "http://a:8080"]
        );
        assert_eq!(for_client(&servers, &by, ip("10.9.0.1")), ["http://wide"]);
        assert_eq!(
            for_client(&servers, &by, ip("::ffff:10.0.1.7")),
            ["http://near", "http://a:8080"]
        );
        assert_eq!(for_client(&servers, &by, ip("192.168.0.1")), servers);
        assert_eq!(for_client(&servers, &by, None), servers);
        assert!(for_client(&[], &BTreeMap::new(), ip("10.0.0.1")).is_empty());
    }

    #[test]
    fn bad_entries_name_the_fix() {
        let mut by = BTreeMap::from([("10.0.1.0/33".to_string(), vec!["http://x".to_string()])]);
        assert!(check(&mut [], &mut by)
            .unwrap_err()
            .contains("ADDRESS/PREFIX"));
        assert!(check(&mut ["ftp://x".into()], &mut BTreeMap::new())
            .unwrap_err()
            .contains("http://HOST"));
        assert!(check(&mut ["http://a,b".into()], &mut BTreeMap::new()).is_err());
        let mut empty = BTreeMap::from([("10.0.0.0/8".to_string(), vec![])]);
        assert!(check(&mut [], &mut empty)
            .unwrap_err()
            .contains("lists no server"));
    }
}
