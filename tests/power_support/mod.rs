//! Real BMCs for the power tests, no mock: OpenIPMI's `ipmi_sim` (with the
//! VM connection to QEMU's `ipmi-bmc-extern` when there is a VM), sushy-tools'
//! Redfish emulator (fake driver, or libvirt driving a real QEMU), and the
//! broken kinds a lab has (closed ports, silent ones, junk answers). Every
//! process is stopped by its pid when its guard drops; readiness is waited
//! on (a port that answers), never slept for.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Fail (never skip) when a program the test needs is missing.
pub fn require(program: &str, hint: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
        || Path::new(program).is_file();
    assert!(
        found,
        "this test needs `{program}`: {hint} (or run scripts/install-deps)"
    );
}

/// A child stopped by its pid (SIGTERM, then SIGKILL) when dropped.
pub struct Guard {
    pub child: Child,
    pub what: &'static str,
}

impl Drop for Guard {
    fn drop(&mut self) {
        mkimage::boottest::vm::stop_child(&mut self.child);
    }
}

pub fn spawn(what: &'static str, cmd: &mut Command, log: &Path) -> Guard {
    let out = std::fs::File::create(log).expect("log file");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    Guard { child, what }
}

/// A free port on loopback (TCP and, for IPMI, UDP).
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// This test's thread (and every process it starts) in a network namespace
/// of its own with only loopback up: nothing it does reaches the host's
/// network, and its ports are its own.
pub fn private_network() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare a network namespace (root?)");
    let ok = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip (iproute2)");
    assert!(ok.success(), "ip link set lo up");
}

/// Wait until `ready()` or fail naming `what` and the tail of `log`.
pub fn wait_until(what: &str, timeout: Duration, log: &Path, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    panic!(
        "{what} not ready within {}s; its log:\n{log}",
        timeout.as_secs()
    );
}

/// An RMCP presence pong from UDP `port` on loopback.
pub fn ipmi_answers(port: u16) -> bool {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let _ = s.send_to(
        &[6, 0, 0xff, 6, 0, 0, 0x11, 0xbe, 0x80, 0x21, 0, 0],
        ("127.0.0.1", port),
    );
    let mut buf = [0u8; 64];
    matches!(s.recv_from(&mut buf), Ok((n, _)) if n >= 12 && buf[8] == 0x40)
}

pub fn support() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/power_support")
}

/// `ipmi_sim` as a BMC on 127.0.0.1:`port`, user `admin`/`password`. With
/// `vm_serial`, QEMU's `ipmi-bmc-extern` connects there (the VM connection,
/// channel 15) and power goes to QEMU through `STATE/qmp.sock`.
pub struct IpmiSim {
    pub guard: Guard,
    pub port: u16,
    pub state: PathBuf,
    pub log: PathBuf,
}

impl IpmiSim {
    pub fn start(dir: &Path, password: &str, vm_serial: Option<u16>) -> IpmiSim {
        require("ipmi_sim", "apt-get install -y openipmi");
        require("python3", "apt-get install -y python3");
        let state = dir.join("bmc");
        std::fs::create_dir_all(state.join("persist")).unwrap();
        let port = free_port();
        let control = support().join("bmc-control.py");
        let serial = vm_serial
            .map(|p| format!("  serial 15 127.0.0.1 {p} codec VM\n"))
            .unwrap_or_default();
        let lan = format!(
            "name \"mkimage-test\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n    priv_limit admin\n    allowed_auths_callback md5\n    allowed_auths_user md5\n    allowed_auths_operator md5\n    allowed_auths_admin md5\n    guid a123456789abcdefa123456789abcdef\n    lan_config_program \"{c} {s} lan\"\n  endlan\n{serial}  chassis_control \"{c} {s} chassis\"\n  user 2 true \"admin\" \"{password}\" admin 10 md5\n",
            c = control.display(),
            s = state.display()
        );
        std::fs::write(state.join("lan.conf"), lan).unwrap();
        std::fs::write(
            state.join("bmc.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nsel_enable 0x20 1000 0x0a\nmc_enable 0x20\n",
        )
        .unwrap();
        let log = state.join("ipmi_sim.log");
        let guard = spawn(
            "ipmi_sim",
            Command::new("ipmi_sim")
                .arg("-c")
                .arg(state.join("lan.conf"))
                .arg("-f")
                .arg(state.join("bmc.emu"))
                .arg("-s")
                .arg(state.join("persist"))
                .arg("-n"),
            &log,
        );
        wait_until("ipmi_sim", Duration::from_secs(20), &log, || {
            ipmi_answers(port)
        });
        IpmiSim {
            guard,
            port,
            state,
            log,
        }
    }

    /// `ipmitool -I lanplus` against it, as the admin; stdout.
    pub fn ipmitool(&self, password: &str, args: &[&str]) -> String {
        require("ipmitool", "apt-get install -y ipmitool");
        let o = Command::new("ipmitool")
            .args([
                "-I",
                "lanplus",
                "-H",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "admin",
                "-E",
            ])
            .args(args)
            .env("IPMI_PASSWORD", password)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ipmitool {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

/// sushy-tools' Redfish emulator: where scripts/install-deps puts it.
pub const SUSHY: &str = "/opt/mkimage-sushy/bin/sushy-emulator";

/// `sushy-emulator` on 127.0.0.1:`port` with HTTP basic auth, `driver`
/// lines added to its config (fake driver, or a libvirt URI).
pub struct Sushy {
    pub guard: Guard,
    pub port: u16,
    pub log: PathBuf,
}

impl Sushy {
    pub fn start(dir: &Path, user: &str, password: &str, config: &str) -> Sushy {
        require(
            SUSHY,
            "scripts/install-deps installs sushy-tools from PyPI into /opt/mkimage-sushy",
        );
        let d = dir.join("sushy");
        std::fs::create_dir_all(&d).unwrap();
        let port = free_port();
        // htpasswd with a bcrypt hash made by the emulator's own Python (passlib is its dependency).
        let hash = Command::new("/opt/mkimage-sushy/bin/python")
            .args(["-c", "import sys, bcrypt; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(rounds=4)).decode())", password])
            .output()
            .expect("the sushy venv's python");
        assert!(
            hash.status.success(),
            "bcrypt: {}",
            String::from_utf8_lossy(&hash.stderr)
        );
        let htpasswd = d.join("htpasswd");
        std::fs::write(
            &htpasswd,
            format!("{user}:{}", String::from_utf8_lossy(&hash.stdout).trim()),
        )
        .unwrap();
        let conf = d.join("emulator.conf");
        std::fs::write(
            &conf,
            format!("SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\nSUSHY_EMULATOR_LISTEN_PORT = {port}\nSUSHY_EMULATOR_AUTH_FILE = '{}'\n{config}\n", htpasswd.display()),
        )
        .unwrap();
        let log = d.join("sushy.log");
        // The fake driver keeps its state in $TMPDIR/sushy-emulator: one of
        // its own, not a /tmp one shared with other runs and users.
        let guard = spawn(
            "sushy-emulator",
            Command::new(SUSHY)
                .arg("--config")
                .arg(&conf)
                .env("TMPDIR", &d),
            &log,
        );
        wait_until("sushy-emulator", Duration::from_secs(60), &log, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Sushy { guard, port, log }
    }

    /// GET a Redfish path with basic auth; the JSON.
    pub fn get(&self, user: &str, password: &str, path: &str) -> serde_json::Value {
        let o = Command::new("curl")
            .args(["-sf", "-u", &format!("{user}:{password}")])
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .output()
            .unwrap();
        assert!(o.status.success(), "GET {path}");
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

/// A TCP server that answers every request with `reply` (or with nothing
/// at all when `None`: it accepts and stays silent), on its own thread, for
/// as long as the test runs.
pub fn fake_http(reply: Option<&'static str>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            match reply {
                Some(r) => {
                    let mut buf = [0u8; 4096];
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = conn.read(&mut buf);
                    let _ = conn.write_all(r.as_bytes());
                }
                None => held.push(conn),
            }
        }
    });
    port
}

/// A credentials file the way the docs say to write one (mode 0600).
pub fn credentials(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("bmc.yml");
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}
