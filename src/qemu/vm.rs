//! A QEMU guest (software emulation) netbooting through its iPXE ROM, its
//! serial console in a file, stopped by pid when dropped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::exec::Cmd;

/// The NIC model the guest gets (its iPXE ROM comes from ipxe-qemu).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Nic {
    Virtio,
    E1000,
}

impl Nic {
    fn device(self) -> &'static str {
        match self {
            Nic::Virtio => "virtio-net-pci",
            Nic::E1000 => "e1000",
        }
    }
}

/// How to start the guest.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub memory_mib: u32,
    pub nic: Nic,
    pub mac: String,
    pub uefi: bool,
    /// The URL the guest's DHCP hands its iPXE as the boot file.
    pub bootfile: String,
    pub serial: PathBuf,
}

/// UEFI firmware from Debian's ovmf package.
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

pub struct Vm {
    child: Child,
    serial: PathBuf,
}

impl Vm {
    pub fn start(spec: &VmSpec) -> anyhow::Result<Vm> {
        let _ = fs::remove_file(&spec.serial);
        let mut cmd = Cmd::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-smp", "2", "-nodefaults", "-display", "none", "-no-reboot", "-boot", "n"])
            .args(["-m", &spec.memory_mib.to_string()])
            .args(["-netdev", &format!("user,id=n0,bootfile={}", spec.bootfile)])
            .args(["-device", &format!("{},netdev=n0,mac={}", spec.nic.device(), spec.mac)])
            .arg("-serial")
            .arg(format!("file:{}", spec.serial.display()));
        if spec.uefi {
            if !Path::new(OVMF).is_file() {
                return Err(crate::UsageError(format!("{OVMF} is missing: apt-get install -y ovmf")).into());
            }
            cmd = cmd.args(["-bios", OVMF]);
        }
        let log = fs::File::create(spec.serial.with_extension("qemu.log"))?;
        let child = cmd.spawn(Stdio::null(), Stdio::from(log)).context("cannot start QEMU")?;
        Ok(Vm { child, serial: spec.serial.clone() })
    }

    pub fn log(&self) -> String {
        fs::read(&self.serial).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Poll the console until `done(log)` says stop, QEMU exits, or time runs
    /// out. Returns why it stopped.
    pub fn watch(&mut self, timeout: Duration, done: impl Fn(&str) -> bool) -> Stop {
        let start = Instant::now();
        loop {
            if done(&self.log()) {
                return Stop::Done;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Stop::Exited(crate::exec::describe_status(status));
            }
            if start.elapsed() > timeout {
                return Stop::Timeout;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The last `n` lines of the console, without terminal escapes.
    pub fn tail(&self, n: usize) -> String {
        let log = strip_escapes(&self.log());
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Why watching stopped.
#[derive(Debug, PartialEq)]
pub enum Stop {
    Done,
    Exited(String),
    Timeout,
}

impl Drop for Vm {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// Stop a child by its pid: SIGTERM, then SIGKILL after 5 s.
pub fn stop_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..20 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Remove ANSI escape sequences (systemd colours its status lines).
pub fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_colours() {
        assert_eq!(super::strip_escapes("[\u{1b}[0;32m  OK  \u{1b}[0m] Started"), "[  OK  ] Started");
    }
}
