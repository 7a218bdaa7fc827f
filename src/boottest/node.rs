//! boot-test's view of the node registry: after the in-guest checks, the
//! server it ran must hold a record of the VM that shows the `booted`
//! stage (the base role's unit) and — when the console shows the discovery
//! overlay ran — the inventory it posted, with QEMU's vendor string. Asked
//! over HTTP, as an operator's tool would (`GET /api/nodes/MAC`).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::lab::Verdict;
use crate::serve::nodes::{Record, Stage};

/// The vendor QEMU's firmware puts in DMI (`/sys/class/dmi/id/sys_vendor`).
pub const QEMU_VENDOR: &str = "QEMU";

/// How long to wait for reports still in flight once the checks are done.
const SETTLE: Duration = Duration::from_secs(15);

/// `GET path` from the server at `ip:port`: (status, body).
pub fn http_get(ip: Ipv4Addr, port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    http_get_as(ip, port, path, None)
}

/// `http_get`, with the server's admin token when given.
pub fn http_get_as(
    ip: Ipv4Addr,
    port: u16,
    path: &str,
    admin: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut s =
        TcpStream::connect((ip, port)).with_context(|| format!("cannot connect to {ip}:{port}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = admin
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// The line the discovery overlay prints on the console.
const DISCOVERY_LINE: &str = "mkimage-discovery: {";

/// The verdicts on `mac`'s record (the inventory's only if `console` shows
/// the discovery overlay ran); waits, polling the API, up to [`SETTLE`]
/// for them to hold when `wait`.
pub fn judge(
    (ip, port, admin): (Ipv4Addr, u16, &str),
    mac: &str,
    console: &str,
    wait: bool,
) -> Vec<Verdict> {
    let discovered = console.contains(DISCOVERY_LINE);
    let start = Instant::now();
    loop {
        let mut verdicts = verdicts(fetch(ip, port, admin, mac));
        if !discovered {
            verdicts.truncate(1);
        }
        if !wait || verdicts.iter().all(|(_, v)| v.is_ok()) || start.elapsed() > SETTLE {
            return verdicts;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// After the init printed its failure: give its report (sent in the
/// background, a TCG guest is slow) up to [`SETTLE`] to reach the record
/// before the VM is stopped.
pub fn await_failure(ip: Ipv4Addr, port: u16, admin: &str, mac: &str) {
    let start = Instant::now();
    while start.elapsed() < SETTLE
        && !fetch(ip, port, admin, mac).is_ok_and(|r| r.stage == Some(Stage::Failed))
    {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The server's admin token, from the served dir it keeps it in.
pub fn admin_token(served: &std::path::Path) -> String {
    crate::serve::admin::read_token(&served.join(crate::serve::admin::ADMIN_TOKEN))
        .unwrap_or_default()
}

/// Behind the nginx tier on the lab's network (`--via-nginx` with
/// `--proxy-dhcp`; the server trusts nginx's address, `--trusted-proxy`):
/// the record's addresses are the VM's own lease, not the proxy's.
pub fn judge_own_address(
    (ip, port, admin): (Ipv4Addr, u16, &str),
    mac: &str,
    proxy: Ipv4Addr,
) -> Verdict {
    own_address(fetch(ip, port, admin, mac), mac, proxy)
}

fn own_address(record: Result<Record, String>, mac: &str, proxy: Ipv4Addr) -> Verdict {
    let verdict = record.and_then(|r| {
        let own = |a: &Option<String>| {
            a.as_deref()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
                .is_some_and(super::lab::leased)
        };
        match own(&r.ip) && own(&r.boot_ip) {
            true => Ok(()),
            false => Err(format!(
                "ip {}, boot_ip {}",
                r.ip.as_deref().unwrap_or("none"),
                r.boot_ip.as_deref().unwrap_or("none")
            )),
        }
    });
    (
        format!(
            "behind nginx ({proxy}), the node record of {mac} has the VM's own address (its lease)"
        ),
        verdict,
    )
}

fn fetch(ip: Ipv4Addr, port: u16, admin: &str, mac: &str) -> Result<Record, String> {
    match http_get_as(ip, port, &format!("/api/nodes/{mac}"), Some(admin)) {
        Ok((200, body)) => serde_json::from_str(&body)
            .map_err(|e| format!("GET /api/nodes/{mac}: not a record: {e}")),
        Ok((status, body)) => Err(format!("GET /api/nodes/{mac}: {status} {}", body.trim())),
        Err(e) => Err(format!("GET /api/nodes/{mac}: {e:#}")),
    }
}

fn verdicts(record: Result<Record, String>) -> Vec<Verdict> {
    let mac = record
        .as_ref()
        .map(|r| r.mac.clone())
        .unwrap_or_else(|_| "the VM".into());
    let booted = record.as_ref().map_err(Clone::clone).and_then(|r| {
        let seen: Vec<&str> = r.stages.iter().map(|s| s.stage.name()).collect();
        match r.stages.iter().any(|s| s.stage == Stage::Booted) {
            true => Ok(()),
            false => Err(format!(
                "stages seen: [{}]{}",
                seen.join(", "),
                r.failure
                    .as_ref()
                    .map(|f| format!(", last failure: {}", f.reason))
                    .unwrap_or_default()
            )),
        }
    });
    let inventory = record
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|r| match &r.inventory {
            Some(i) if i.system.vendor == QEMU_VENDOR => Ok(()),
            Some(i) => Err(format!("vendor `{}`", i.system.vendor)),
            None => Err("no inventory posted".into()),
        });
    vec![
        (
            format!("the server's node record of {mac} shows the booted stage"),
            booted,
        ),
        (
            format!("the server's node record of {mac} holds its inventory (vendor {QEMU_VENDOR})"),
            inventory,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::nodes::Inventory;

    #[test]
    fn verdicts_need_booted_and_qemus_inventory() {
        let mut r = Record::new("52:54:00:12:34:56", 1);
        r.saw(Stage::Script, 1);
        let v = verdicts(Ok(r.clone()));
        assert_eq!(v[0].1, Err("stages seen: [script]".to_string()));
        assert_eq!(v[1].1, Err("no inventory posted".to_string()));
        r.saw(Stage::Booted, 2);
        r.inventory = Some(Inventory::parse(br#"{"system":{"vendor":"QEMU"}}"#).unwrap());
        assert!(verdicts(Ok(r)).iter().all(|(_, v)| v.is_ok()));
        let v = verdicts(Err("GET /api/nodes/x: 404".into()));
        assert!(v.iter().all(|(_, v)| v.is_err()) && v[0].0.contains("the VM"));
    }

    #[test]
    fn behind_the_proxy_the_record_has_the_vms_own_lease() {
        let proxy = Ipv4Addr::new(10, 9, 0, 1);
        let mut r = Record::new("52:54:00:12:34:56", 1);
        (r.ip, r.boot_ip) = (Some("10.9.0.150".into()), Some("10.9.0.150".into()));
        assert_eq!(own_address(Ok(r.clone()), &r.mac, proxy).1, Ok(()));
        r.boot_ip = Some("10.9.0.1".into());
        assert_eq!(
            own_address(Ok(r.clone()), &r.mac, proxy).1,
            Err("ip 10.9.0.150, boot_ip 10.9.0.1".into()),
            "the proxy's address"
        );
        r.ip = None;
        assert!(own_address(Ok(r.clone()), &r.mac, proxy).1.is_err());
    }
}
