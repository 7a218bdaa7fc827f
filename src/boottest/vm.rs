//! The one QEMU runner (software emulation), for `mkimage boot-test` and the
//! test suite: how the machine boots (its NIC's iPXE ROM or firmware PXE
//! from the network, a kernel + initrd directly, or a CD-ROM), its network
//! (QEMU user networking, a tap on a bridge, or none), BIOS or UEFI, the
//! serial console in a file; watched until a condition, stopped by its pid
//! when dropped.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::exec::Cmd;

/// The NIC model the guest gets (its iPXE ROM comes from ipxe-qemu).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    pub fn parse(s: &str) -> Option<Nic> {
        match s {
            "virtio" => Some(Nic::Virtio),
            "e1000" => Some(Nic::E1000),
            _ => None,
        }
    }
}

/// How the guest reaches a network.
#[derive(Debug, Clone, PartialEq)]
pub enum Net {
    /// QEMU's user-mode networking (DHCP, 10.0.2.2 = the host's loopback);
    /// `bootfile` is what its DHCP hands the NIC's iPXE ROM.
    User { bootfile: Option<String> },
    /// A tap device (on a bridge the caller made).
    Tap { ifname: String },
    /// No NIC at all.
    None,
    /// A NIC connected to nothing (no QEMU netdev): the hardware is there
    /// for the guest to see, no packet goes anywhere.
    Unplugged,
}

/// What the guest boots.
#[derive(Debug, Clone, PartialEq)]
pub enum Boot {
    /// From the network: the NIC's iPXE ROM, or with `rom: false` the
    /// firmware's own PXE client (UEFI).
    Network { rom: bool },
    /// A kernel and initrd given to QEMU directly.
    Kernel {
        kernel: PathBuf,
        initrd: PathBuf,
        append: String,
    },
    /// An ISO image as a CD-ROM.
    Cdrom(PathBuf),
}

/// How to start the guest.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub memory_mib: u32,
    pub cpus: u32,
    pub nic: Nic,
    pub mac: String,
    pub uefi: bool,
    pub net: Net,
    pub boot: Boot,
    pub serial: PathBuf,
    /// With user networking: the directory QEMU's own TFTP server serves
    /// (the DHCP `bootfile` is then a path in it).
    pub tftp: Option<PathBuf>,
    /// UEFI with Secure Boot enforced: OVMF's Secure Boot build on a q35
    /// machine with SMM, and this copy of its variable store (the keys).
    pub secure_boot: Option<PathBuf>,
    /// UEFI without its PXE clients (OVMF's fw_cfg knobs
    /// `opt/org.tianocore/IPv4PXESupport` and `IPv6PXESupport` set to `n`),
    /// so the firmware's first network boot is HTTP boot over IPv4.
    pub http_boot: bool,
    /// Run QEMU through this command (e.g. a script that enters a network
    /// namespace and starts servers first); empty: run it directly.
    pub wrapper: Vec<OsString>,
}

impl VmSpec {
    /// A netboot through the NIC's iPXE ROM with QEMU user networking.
    pub fn netboot(serial: &Path, bootfile: &str) -> VmSpec {
        VmSpec {
            memory_mib: 1536,
            cpus: 2,
            nic: Nic::Virtio,
            mac: "52:54:00:12:34:56".into(),
            uefi: false,
            net: Net::User {
                bootfile: Some(bootfile.to_string()),
            },
            boot: Boot::Network { rom: true },
            serial: serial.to_path_buf(),
            tftp: None,
            secure_boot: None,
            http_boot: false,
            wrapper: Vec::new(),
        }
    }

    /// The QEMU argv (without the program).
    pub fn args(&self) -> Vec<OsString> {
        // One host thread runs every vCPU: QEMU 7.2's multi-threaded TCG
        // (fixed in 8.1) can let a vCPU run code another one just patched,
        // and a 6.12 kernel then dies of "Oops: int3" at a static key.
        let mut a: Vec<OsString> = [
            "-accel",
            "tcg,thread=single",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
        ]
        .map(OsString::from)
        .to_vec();
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        push(&[
            "-m",
            &self.memory_mib.to_string(),
            "-smp",
            &self.cpus.to_string(),
        ]);
        self.push_net(&mut a);
        self.push_firmware(&mut a);
        self.push_boot(&mut a);
        a.push("-serial".into());
        let mut serial = OsString::from("file:");
        serial.push(&self.serial);
        a.push(serial);
        a
    }

    /// The NIC and its backend (user-mode with TFTP, or a tap), if any.
    fn push_net(&self, a: &mut Vec<OsString>) {
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        let tftp = self
            .tftp
            .as_ref()
            .map(|d| format!(",tftp={}", d.display()))
            .unwrap_or_default();
        let netdev = match &self.net {
            Net::User { bootfile: Some(f) } => Some(format!("user,id=n0{tftp},bootfile={f}")),
            Net::User { bootfile: None } => Some(format!("user,id=n0{tftp}")),
            Net::Tap { ifname } => {
                Some(format!("tap,id=n0,ifname={ifname},script=no,downscript=no"))
            }
            Net::None | Net::Unplugged => None,
        };
        if let Some(netdev) = netdev {
            // No iPXE ROM where nothing boots through it: the firmware's
            // own PXE client, or a CD-ROM boot.
            let rom = if matches!(self.boot, Boot::Network { rom: false } | Boot::Cdrom(_)) {
                ",romfile="
            } else {
                ""
            };
            push(&[
                "-netdev",
                &netdev,
                "-device",
                &format!("{},netdev=n0,mac={}{rom}", self.nic.device(), self.mac),
            ]);
        }
        if self.net == Net::Unplugged {
            push(&[
                "-device",
                &format!("{},mac={},romfile=", self.nic.device(), self.mac),
            ]);
        }
    }

    /// The firmware: Secure Boot OVMF with its variable store, plain OVMF, or SeaBIOS.
    fn push_firmware(&self, a: &mut Vec<OsString>) {
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        if let Some(vars) = &self.secure_boot {
            push(&[
                "-machine",
                "q35,smm=on",
                "-global",
                "driver=cfi.pflash01,property=secure,value=on",
                "-drive",
                &format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_SECBOOT_CODE}"),
                "-drive",
                &format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
            ]);
        } else if self.uefi {
            push(&["-bios", OVMF]);
        }
        if self.http_boot {
            for ip in ["IPv4", "IPv6"] {
                push(&[
                    "-fw_cfg",
                    &format!("name=opt/org.tianocore/{ip}PXESupport,string=n"),
                ]);
            }
        }
    }

    /// What the guest boots from: the network, a kernel and initrd, or a CD-ROM.
    fn push_boot(&self, a: &mut Vec<OsString>) {
        match &self.boot {
            Boot::Network { .. } => a.extend(["-boot".into(), "n".into()]),
            Boot::Kernel {
                kernel,
                initrd,
                append,
            } => {
                a.extend([
                    "-kernel".into(),
                    kernel.into(),
                    "-initrd".into(),
                    initrd.into(),
                    "-append".into(),
                    append.into(),
                ]);
            }
            Boot::Cdrom(iso) => {
                a.extend(["-cdrom".into(), iso.into()]);
                a.extend(["-boot".into(), "d".into()]);
            }
        }
    }
}

/// UEFI firmware from Debian's ovmf package.
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// OVMF's Secure Boot build (its variable store is a copy per boot).
pub const OVMF_SECBOOT_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";

/// A running guest; stopped by its pid when dropped.
pub struct Vm {
    child: Child,
    serial: PathBuf,
}

impl Vm {
    pub fn start(spec: &VmSpec) -> anyhow::Result<Vm> {
        if spec.secure_boot.is_some() && !Path::new(OVMF_SECBOOT_CODE).is_file() {
            return Err(crate::UsageError(format!(
                "{OVMF_SECBOOT_CODE} is missing: apt-get install -y ovmf"
            ))
            .into());
        }
        if spec.uefi && !Path::new(OVMF).is_file() {
            return Err(
                crate::UsageError(format!("{OVMF} is missing: apt-get install -y ovmf")).into(),
            );
        }
        if !crate::exec::have("qemu-system-x86_64") {
            return Err(crate::UsageError(
                "`qemu-system-x86_64` is missing: apt-get install -y qemu-system-x86".into(),
            )
            .into());
        }
        let _ = fs::remove_file(&spec.serial);
        let cmd = match spec.wrapper.split_first() {
            Some((program, rest)) => Cmd::new(program).args(rest).arg("qemu-system-x86_64"),
            None => Cmd::new("qemu-system-x86_64"),
        };
        let log = fs::File::create(spec.serial.with_extension("qemu.log"))
            .context("cannot create the QEMU log")?;
        let child = cmd
            .args(spec.args())
            .die_with_parent()
            .spawn(Stdio::null(), Stdio::from(log))
            .context("cannot start QEMU")?;
        Ok(Vm {
            child,
            serial: spec.serial.clone(),
        })
    }

    /// The serial console so far.
    pub fn log(&self) -> String {
        fs::read(&self.serial)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
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
                return if done(&self.log()) {
                    Stop::Done
                } else {
                    Stop::Exited(crate::exec::describe_status(status))
                };
            }
            if start.elapsed() > timeout {
                return Stop::Timeout;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Wait until the console contains `needle`; false if QEMU exits or
    /// `timeout` passes first.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        self.watch(timeout, |log| log.contains(needle)) == Stop::Done
    }

    /// Wait for QEMU to exit by itself; true if it did within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        matches!(self.watch(timeout, |_| false), Stop::Exited(_))
    }

    /// The last `n` lines of the console, without terminal escapes.
    pub fn tail(&self, n: usize) -> String {
        tail(&strip_escapes(&self.log()), n)
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

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
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
    use super::*;

    #[test]
    fn strips_colours() {
        assert_eq!(
            strip_escapes("[\u{1b}[0;32m  OK  \u{1b}[0m] Started"),
            "[  OK  ] Started"
        );
    }

    #[test]
    fn argv_for_each_way_to_boot() {
        let text = |spec: &VmSpec| {
            spec.args()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut spec =
            VmSpec::netboot(Path::new("/t/serial.log"), "http://10.0.2.2:8080/boot.ipxe");
        let net = text(&spec);
        assert!(net.contains("-netdev user,id=n0,bootfile=http://10.0.2.2:8080/boot.ipxe -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56 "), "{net}");
        assert!(net.ends_with("-boot n -serial file:/t/serial.log"), "{net}");
        assert!(
            net.starts_with("-accel tcg,thread=single ") && net.contains(" -smp 2 "),
            "{net}"
        );
        spec.uefi = true;
        spec.net = Net::Tap {
            ifname: "tap0".into(),
        };
        spec.boot = Boot::Network { rom: false };
        spec.nic = Nic::E1000;
        let pxe = text(&spec);
        assert!(pxe.contains("-netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device e1000,netdev=n0,mac=52:54:00:12:34:56,romfile= -bios /usr/share/ovmf/OVMF.fd"), "{pxe}");
        spec.secure_boot = Some("/t/vars.fd".into());
        spec.net = Net::User {
            bootfile: Some("shimx64.efi".into()),
        };
        spec.tftp = Some("/t/tftp".into());
        let sb = text(&spec);
        assert!(
            sb.contains("-netdev user,id=n0,tftp=/t/tftp,bootfile=shimx64.efi "),
            "{sb}"
        );
        assert!(sb.contains(" -machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd -drive if=pflash,format=raw,unit=1,file=/t/vars.fd "), "{sb}");
        assert!(!sb.contains("-bios"), "{sb}");
        spec.secure_boot = None;
        spec.tftp = None;
        spec.net = Net::None;
        spec.boot = Boot::Cdrom("/t/x.iso".into());
        let cd = text(&spec);
        assert!(
            !cd.contains("-netdev") && cd.contains("-cdrom /t/x.iso -boot d"),
            "{cd}"
        );
        spec.net = Net::User { bootfile: None };
        let online_cd = text(&spec);
        assert!(
            online_cd.contains(
                "-netdev user,id=n0 -device e1000,netdev=n0,mac=52:54:00:12:34:56,romfile= "
            ),
            "a CD-ROM boot needs no iPXE ROM: {online_cd}"
        );
        spec.net = Net::Unplugged;
        let unplugged = text(&spec);
        assert!(
            !unplugged.contains("-netdev")
                && unplugged.contains("-device e1000,mac=52:54:00:12:34:56,romfile= "),
            "{unplugged}"
        );
        spec.boot = Boot::Kernel {
            kernel: "/k".into(),
            initrd: "/i".into(),
            append: "console=ttyS0 a=b".into(),
        };
        assert!(text(&spec).contains("-kernel /k -initrd /i -append console=ttyS0 a=b"));
    }
}
