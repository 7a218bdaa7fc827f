//! A DNS server inside boot-test's network namespace, so the booted system's
//! resolver is tested for real: dnsmasq on 127.0.0.1:53 answers one name
//! under the reserved `.test` TLD, and this namespace's `/etc/resolv.conf`
//! (bind-mounted in a private mount namespace) points there, which is where
//! QEMU's user-mode DNS (10.0.2.3) forwards the guest's queries.

use std::path::Path;
use std::process::{Child, Stdio};

use anyhow::Context;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use crate::exec::Cmd;
use crate::sys::{self, Sys};

/// The name the booted machine must resolve, and its answer (the address
/// the guest knows its boot server by).
pub const NAME: &str = "mkimage-boot-test.test";
pub const ADDR: &str = "10.0.2.2";

/// dnsmasq, stopped by its pid.
pub struct Dns {
    child: Child,
}

/// Give this process a resolv.conf of its own pointing at 127.0.0.1 and
/// start dnsmasq there. Call inside the private network namespace.
pub fn start(sys: &dyn Sys, scratch: &Path) -> anyhow::Result<Dns> {
    if !crate::exec::have("dnsmasq") {
        return Err(crate::UsageError("boot-test answers DNS with dnsmasq: apt-get install -y dnsmasq-base".into()).into());
    }
    sys.unshare(CloneFlags::CLONE_NEWNS)?;
    sys.mount(Path::new("none"), Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_SLAVE, None)?;
    let conf = scratch.join("resolv.conf");
    std::fs::write(&conf, "nameserver 127.0.0.1\n").context("cannot write the test's resolv.conf")?;
    sys::bind(sys, &conf, Path::new("/etc/resolv.conf"), true)?;
    let log = std::fs::File::create(scratch.join("dnsmasq.log")).context("cannot create the dnsmasq log")?;
    let child = Cmd::new("dnsmasq")
        .args(["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--pid-file", "--user=root"])
        .args(["--listen-address=127.0.0.1", "--bind-interfaces", "--port=53", "--log-queries", "--log-facility=-"])
        .arg(format!("--address=/{NAME}/{ADDR}"))
        .spawn(Stdio::null(), Stdio::from(log))
        .context("cannot start dnsmasq")?;
    let dns = Dns { child };
    super::wait_for_udp_dns()?;
    Ok(dns)
}

impl Drop for Dns {
    fn drop(&mut self) {
        super::vm::stop_child(&mut self.child);
    }
}
