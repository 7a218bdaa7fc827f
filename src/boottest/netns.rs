//! A network namespace for a process boot-test runs as a separate host on
//! its test network (the lab's site DHCP server): held open by a `sleep`
//! that `unshare --net` started in it (and that dies with boot-test),
//! entered by `nsenter`. Nothing in it is named, so nothing is left behind
//! in `/run/netns` whatever happens to boot-test.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::exec::Cmd;

/// The namespace; its holder is stopped by pid when dropped.
pub struct Netns {
    holder: Child,
    /// `/proc/PID/ns/net` of the holder.
    path: PathBuf,
}

impl Netns {
    /// A new, empty network namespace (only `lo`, down).
    pub fn new() -> anyhow::Result<Netns> {
        let holder = Cmd::new("unshare")
            .args(["--net", "--", "sleep", "infinity"])
            .die_with_parent()
            .spawn(Stdio::null(), Stdio::null())?;
        let mut ns = Netns {
            path: PathBuf::from(format!("/proc/{}/ns/net", holder.id())),
            holder,
        };
        // The holder's namespace differs from ours once unshare has run.
        let ours = std::fs::read_link("/proc/self/ns/net")
            .context("cannot read this process's network namespace")?;
        let start = Instant::now();
        while std::fs::read_link(&ns.path).is_ok_and(|theirs| theirs == ours) {
            if let Ok(Some(status)) = ns.holder.try_wait() {
                bail!(
                    "`unshare --net sleep infinity` exited ({}) before making a network namespace",
                    crate::exec::describe_status(status)
                );
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("`unshare --net` made no network namespace within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(ns)
    }

    /// The holder's pid (`ip link set DEV netns PID` moves a link in).
    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// `program` run inside the namespace.
    pub fn cmd(&self, program: &str) -> Cmd {
        let mut net = std::ffi::OsString::from("--net=");
        net.push(&self.path);
        Cmd::new("nsenter").arg(net).arg("--").arg(program)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        super::vm::stop_child(&mut self.holder);
    }
}
