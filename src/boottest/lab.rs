//! `boot-test --proxy-dhcp`: a lab's layer-2 network inside boot-test's
//! network namespace, so the proxyDHCP is proven the way a lab uses it.
//!
//! ```text
//!  boot-test's namespace                          the site's namespace
//!  QEMU ── tap ──┐
//!                ├── bridge 10.9.0.1/24           (a host of its own)
//!  mkimage serve ┘   (--proxy-dhcp on it)  ── veth ── eth0 10.9.0.2/24
//!  checker overlay server                           dnsmasq: addresses and
//!                                                   DNS only, no boot options
//! ```
//!
//! The site's dnsmasq leases addresses (10.9.0.100–199, no router: nothing
//! leaves the namespaces) and answers the test's `.test` name with the boot
//! server's address. Everything that boots the machine comes from `mkimage
//! serve --proxy-dhcp` on the bridge. BIOS boots through the NIC's iPXE ROM;
//! UEFI through OVMF's own PXE client (the NIC's ROM disabled): TFTP
//! `ipxe.efi`, then iPXE, then the HTTP script. After the boot, the server's
//! and the site's logs must show that path (`judge`).

use std::net::Ipv4Addr;
use std::path::Path;

use super::dns::{self, Dns};
use super::netns::Netns;
use crate::exec::Cmd;
use crate::serve::dhcp::EFI_FILE;
use crate::sys::Sys;

/// The boot server's address on the bridge.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
/// The site DHCP and DNS server's address.
const SITE: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const PREFIX: u8 = 24;
const RANGE: &str = "10.9.0.100,10.9.0.199,255.255.255.0,1h";
/// Link names (inside boot-test's own namespace, so they clash with nothing).
/// Whether `ip` is one the site's DHCP server leases (`RANGE`).
pub fn leased(ip: Ipv4Addr) -> bool {
    let [a, b, c, d] = ip.octets();
    [a, b, c] == [10, 9, 0] && (100..=199).contains(&d)
}

pub const BRIDGE: &str = "br0";
pub const TAP: &str = "tap0";
const SITE_PORT: &str = "site0";
const SITE_IFACE: &str = "eth0";

/// The running network: the site's dnsmasq, then its namespace, stopped by
/// pid in that order when dropped (the links die with the namespaces).
pub struct Lab {
    _site_dns: Dns,
    _site: Netns,
}

/// What `boot-test --proxy-dhcp` needs beyond a plain boot-test.
pub fn preflight(ipxe_dir: &Path) -> Result<(), String> {
    for (program, package) in [
        ("nsenter", "util-linux"),
        ("unshare", "util-linux"),
        ("dnsmasq", "dnsmasq-base"),
    ] {
        if !crate::exec::have(program) {
            return Err(format!(
                "boot-test --proxy-dhcp needs `{program}`: apt-get install -y {package}"
            ));
        }
    }
    crate::serve::dhcp::preflight(true, &[ipxe_dir])
}

/// Build the network. Call inside boot-test's private network namespace.
/// With `next_server`, the site's DHCP server names the boot server as
/// next-server (siaddr) for UEFI PXE clients, as a site must for Debian's
/// GRUB, which takes its TFTP server from the site's ACK, not the proxy's.
pub fn start(sys: &dyn Sys, scratch: &Path, next_server: bool) -> anyhow::Result<Lab> {
    let ip = |args: &[&str]| Cmd::new("ip").args(args).run();
    ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    ip(&["addr", "add", &format!("{SERVER}/{PREFIX}"), "dev", BRIDGE])?;
    ip(&["link", "set", BRIDGE, "up"])?;
    ip(&["tuntap", "add", TAP, "mode", "tap"])?;
    ip(&["link", "set", TAP, "master", BRIDGE, "up"])?;
    let site = Netns::new()?;
    ip(&[
        "link",
        "add",
        SITE_PORT,
        "type",
        "veth",
        "peer",
        "name",
        SITE_IFACE,
        "netns",
        &site.pid().to_string(),
    ])?;
    ip(&["link", "set", SITE_PORT, "master", BRIDGE, "up"])?;
    let site_ip = |args: &[&str]| site.cmd("ip").args(args).run();
    site_ip(&["link", "set", "lo", "up"])?;
    site_ip(&[
        "addr",
        "add",
        &format!("{SITE}/{PREFIX}"),
        "dev",
        SITE_IFACE,
    ])?;
    site_ip(&["link", "set", SITE_IFACE, "up"])?;
    let leases = scratch.join("site.leases");
    let mut dhcp = vec![
        format!("--dhcp-range={RANGE}"),
        format!("--dhcp-leasefile={}", leases.display()),
        // No router: nothing leaves the namespaces.
        "--dhcp-option=3".into(),
        "--dhcp-authoritative".into(),
        "--no-ping".into(),
        "--log-dhcp".into(),
    ];
    if next_server {
        dhcp.push("--dhcp-match=set:efi64,option:client-arch,7".into());
        dhcp.push(format!(
            "--dhcp-boot=tag:efi64,{},,{SERVER}",
            crate::secureboot::SHIM_NAME
        ));
    }
    let server = dns::Server {
        listen: SITE,
        answer: SERVER,
        netns: Some(&site),
        extra: dhcp,
    };
    let site_dns = dns::start(sys, scratch, &server)?;
    Ok(Lab {
        _site_dns: site_dns,
        _site: site,
    })
}

/// What the `mkimage serve` of the lab is started with, beside `--http`.
pub fn serve_args() -> Vec<String> {
    vec![
        "--tftp".into(),
        format!("{SERVER}:69"),
        "--proxy-dhcp".into(),
        BRIDGE.into(),
    ]
}

/// A verdict on something the host saw.
pub type Verdict = (String, Result<(), String>);

/// The path the boot took, from `mkimage serve`'s log and the site
/// dnsmasq's: the site leased the address, the proxy answered each client
/// on the way, and for UEFI the firmware's PXE exchange and TFTP happened.
pub fn judge(serve_log: &str, site_log: &str, mac: &str, uefi: bool) -> Vec<Verdict> {
    let seen =
        |log: &str, needles: &[&str]| log.lines().any(|l| needles.iter().all(|n| l.contains(n)));
    let check = |what: &str, ok: bool, log: &str| -> Verdict {
        let why = || {
            format!(
                "not in the log; its last lines:\n{}",
                super::vm::tail(log, 15)
            )
        };
        (what.to_string(), if ok { Ok(()) } else { Err(why()) })
    };
    let offer = |client: &str, file: &str| {
        seen(
            serve_log,
            &[
                "proxy-dhcp: offer",
                &format!("mac={mac}"),
                &format!("client={client}"),
                "port=67",
                file,
            ],
        )
    };
    let mut verdicts = vec![check(
        &format!("the site's DHCP server (dnsmasq, addresses only) leased {mac} an address"),
        seen(site_log, &["DHCPACK(", mac]),
        site_log,
    )];
    if uefi {
        let pxe_ack = seen(
            serve_log,
            &[
                "proxy-dhcp: ack",
                &format!("mac={mac}"),
                "client=uefi-pxe",
                "port=4011",
                &format!("file={EFI_FILE}"),
            ],
        );
        let tftp = seen(
            serve_log,
            &["tftp", &format!("path={EFI_FILE}"), "status=ok"],
        );
        verdicts.push(check(
            "proxyDHCP offered the firmware's UEFI PXE client ipxe.efi (port 67)",
            offer("uefi-pxe", EFI_FILE),
            serve_log,
        ));
        verdicts.push(check(
            "proxyDHCP acked the firmware's PXE request on port 4011 with ipxe.efi",
            pxe_ack,
            serve_log,
        ));
        verdicts.push(check(
            "the firmware loaded ipxe.efi over TFTP",
            tftp,
            serve_log,
        ));
    }
    verdicts.push(check(
        "proxyDHCP offered iPXE (user class iPXE) its boot script URL with its MAC",
        offer("ipxe", &format!("boot.ipxe?mac={mac}")),
        serve_log,
    ));
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_the_uefi_path_from_the_logs() {
        let mac = "52:54:00:12:34:56";
        let site = format!("dnsmasq-dhcp[1]: DHCPACK(eth0) 10.9.0.150 {mac}\n");
        let serve = format!(
            " INFO proxy-dhcp: offer mac={mac} client=uefi-pxe port=67 file=ipxe.efi to=255.255.255.255:68\n\
             \x20INFO proxy-dhcp: ack mac={mac} client=uefi-pxe port=4011 file=ipxe.efi to=10.9.0.150:1024\n\
             \x20INFO tftp client=10.9.0.150:1025 path=ipxe.efi status=ok bytes=1 blksize=1468 ms=5\n\
             \x20INFO proxy-dhcp: offer mac={mac} client=ipxe port=67 file=http://10.9.0.1:1/boot.ipxe?mac={mac} to=255.255.255.255:68\n"
        );
        let all_ok = |v: &[Verdict]| v.iter().all(|(_, r)| r.is_ok());
        assert!(all_ok(&judge(&serve, &site, mac, true)));
        assert_eq!(judge(&serve, &site, mac, false).len(), 2);
        // Without the 4011 exchange, or from another MAC, the UEFI path is not proven.
        let no_ack: String = serve
            .lines()
            .filter(|l| !l.contains("port=4011"))
            .collect::<Vec<_>>()
            .join("\n");
        let failed: Vec<String> = judge(&no_ack, &site, mac, true)
            .into_iter()
            .filter(|(_, r)| r.is_err())
            .map(|(w, _)| w)
            .collect();
        assert_eq!(
            failed,
            vec![
                "proxyDHCP acked the firmware's PXE request on port 4011 with ipxe.efi".to_string()
            ]
        );
        assert!(!all_ok(&judge(&serve, &site, "52:54:00:00:00:01", false)));
        assert!(!all_ok(&judge(&serve, "", mac, false)));
    }
}
