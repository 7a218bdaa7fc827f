//! A DNS server on boot-test's network, so the booted system's resolver is
//! tested for real: dnsmasq answers one name under the reserved `.test`
//! TLD, and this namespace's `/etc/resolv.conf` (bind-mounted in a private
//! mount namespace) points at it — which is also how boot-test waits for
//! it to be up. With QEMU's user networking it listens on 127.0.0.1, where
//! QEMU's DNS (10.0.2.3) forwards the guest's queries; on the lab's network
//! it is the site's server, in a namespace of its own, and hands out the
//! addresses too (`extra`).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use super::netns::Netns;
use crate::exec::Cmd;
use crate::sys::{self, Sys};

/// The name the booted machine must resolve.
pub const NAME: &str = "mkimage-boot-test.test";
/// With user networking: the answer, the address the guest knows its boot
/// server by.
pub const USER_NET_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// Where dnsmasq runs and what it says.
pub struct Server<'a> {
    /// Where it listens (and where this namespace's resolv.conf points).
    pub listen: Ipv4Addr,
    /// Its answer for [`NAME`]: the address the guest knows its boot server by.
    pub answer: Ipv4Addr,
    /// The namespace it runs in (`None`: ours).
    pub netns: Option<&'a Netns>,
    /// More dnsmasq arguments (the lab's DHCP service).
    pub extra: Vec<String>,
}

impl Server<'_> {
    /// The DNS server for QEMU's user networking.
    pub fn user_net() -> Server<'static> {
        Server {
            listen: Ipv4Addr::LOCALHOST,
            answer: USER_NET_ADDR,
            netns: None,
            extra: Vec::new(),
        }
    }
}

/// dnsmasq, stopped by its pid.
pub struct Dns {
    child: Child,
}

/// Give this process a resolv.conf of its own pointing at the server and
/// start dnsmasq. Call inside the private network namespace; its log is
/// `scratch/dnsmasq.log`.
pub fn start(sys: &dyn Sys, scratch: &Path, server: &Server) -> anyhow::Result<Dns> {
    if !crate::exec::have("dnsmasq") {
        return Err(crate::UsageError(
            "boot-test answers DNS with dnsmasq: apt-get install -y dnsmasq-base".into(),
        )
        .into());
    }
    sys.unshare(CloneFlags::CLONE_NEWNS)?;
    sys.mount(
        Path::new("none"),
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None,
    )?;
    let conf = scratch.join("resolv.conf");
    std::fs::write(&conf, format!("nameserver {}\n", server.listen))
        .context("cannot write the test's resolv.conf")?;
    sys::bind(sys, &conf, Path::new("/etc/resolv.conf"), true)?;
    let log = std::fs::File::create(scratch.join("dnsmasq.log"))
        .context("cannot create the dnsmasq log")?;
    let cmd = match server.netns {
        Some(ns) => ns.cmd("dnsmasq"),
        None => Cmd::new("dnsmasq"),
    };
    let child = cmd
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file",
            "--user=root",
            "--group=root",
        ])
        .arg(format!("--listen-address={}", server.listen))
        .args([
            "--bind-interfaces",
            "--port=53",
            "--log-queries",
            "--log-facility=-",
        ])
        .arg(format!("--address=/{NAME}/{}", server.answer))
        .args(&server.extra)
        .die_with_parent()
        .spawn(Stdio::null(), Stdio::from(log))
        .context("cannot start dnsmasq")?;
    let mut dns = Dns { child };
    wait_for_udp_dns(server.answer, &mut dns.child)?;
    Ok(dns)
}

impl Drop for Dns {
    fn drop(&mut self) {
        super::vm::stop_child(&mut self.child);
    }
}

/// Wait until the test's DNS server (`dnsmasq`) answers its name with `answer`.
pub(super) fn wait_for_udp_dns(
    answer: Ipv4Addr,
    dnsmasq: &mut std::process::Child,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let answer = answer.to_string();
    while start.elapsed() < Duration::from_secs(20) {
        if Cmd::new("getent")
            .args(["hosts", NAME])
            .run()
            .is_ok_and(|o| o.stdout.starts_with(&format!("{answer} ")))
        {
            return Ok(());
        }
        if let Ok(Some(status)) = dnsmasq.try_wait() {
            bail!(
                "dnsmasq exited ({}) before answering {}",
                crate::exec::describe_status(status),
                NAME
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("dnsmasq did not answer {} within 20 s", NAME)
}
