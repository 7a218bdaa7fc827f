//! `mkimage boot-test`: netboot the artifacts in QEMU exactly as a lab
//! machine would — iPXE ROM → DHCP (QEMU user networking) → `/boot.ipxe`
//! from `mkimage serve` → kernel + initrd → basefs + overlays → systemd —
//! inside a private network namespace, and assert on the serial console
//! that it came up. The assertions run in the guest from a checker overlay
//! that only the VM under test is given (`checker`); a DNS server in the
//! namespace proves the booted system resolves names (`dns`). With
//! `--proxy-dhcp` the VM boots on a layer-2 network beside a site DHCP
//! server through `mkimage serve --proxy-dhcp` instead (`lab`, `network`).
//! Afterwards the server's node registry must show the VM booted (`node`).

pub mod checker;
pub mod checks;
pub mod config;
pub mod dns;
pub mod front;
mod iso;
pub mod lab;
mod netns;
mod network;
pub mod node;
mod published;
mod secure;
pub mod vm;

use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sched::CloneFlags;

use crate::exec::Cmd;
use crate::sys::Sys;
use crate::UsageError;
pub use checks::Expect;
pub use config::BootTestConfig;
pub use vm::Nic;

/// `mkimage boot-test`, resolved by the CLI (paths absolute).
#[derive(Debug, Clone)]
pub struct Request {
    /// Build this playbook first (into `dir`), then boot its output.
    pub playbook: Option<PathBuf>,
    pub overrides: Vec<String>,
    /// The directory holding the artifacts (what `mkimage serve` serves).
    pub dir: PathBuf,
    /// Boot config with profiles and `boot_test:` assertions.
    pub boot_config: PathBuf,
    /// True when `boot_config` is the default path (it may be missing).
    pub boot_config_is_default: bool,
    pub profile: Option<String>,
    pub mac: String,
    pub nic: Nic,
    pub memory: Option<u32>,
    pub timeout: Option<u64>,
    pub uefi: bool,
    /// Boot on a layer-2 network through `mkimage serve --proxy-dhcp` (see `lab`).
    pub proxy_dhcp: bool,
    /// Extra kernel arguments for this boot.
    pub append: String,
    pub serial_log: Option<PathBuf>,
    /// Boot through nginx run from this cache-tier config, then boot again
    /// and check the basefs came from nginx's cache (see `front`).
    pub via_nginx: Option<PathBuf>,
    /// Boot from a `mkimage publish`ed tree served by nginx alone, with no
    /// `mkimage serve` running (see `published`).
    pub published: bool,
    /// Boot this offline ISO as a CD-ROM, with no network (see `iso`).
    pub iso: Option<PathBuf>,
    /// UEFI with Secure Boot enforced (see `secure`).
    pub secure_boot: bool,
    /// With `secure_boot`: sign a UKI with the site key in this dir and
    /// enroll its certificate in the firmware's `db`.
    pub keys: Option<PathBuf>,
    /// With `keys`: enroll the certificate in shim's MokList instead of
    /// `db`, and boot the UKI through shim.
    pub mok: bool,
}

impl Request {
    /// The site key and where the test firmware trusts it.
    fn site_key(&self) -> secure::SiteKey<'_> {
        let trust = if self.mok {
            crate::secureboot::firmware::Trust::Mok
        } else {
            crate::secureboot::firmware::Trust::Db
        };
        self.keys.as_deref().map(|dir| (dir, trust))
    }
}

/// Assertions used when the boot config declares none.
fn default_expect() -> Vec<Expect> {
    vec![
        Expect::Console {
            console: "mkimage-init: exec /sbin/init".into(),
        },
        Expect::Command {
            command: "findmnt -n -o FSTYPE /".into(),
            matches: Some("^overlay$".into()),
        },
        Expect::UnitActive {
            unit_active: "multi-user.target".into(),
        },
    ]
}

/// How long after `basic.target` a machine may take to count as ready
/// (`booted` reported) before boot-test fails and says what held it.
pub const READY_WITHIN: u64 = 30;

/// What boot-test always asserts on top: the machine is ready soon after
/// systemd's basic target, and (netbooted) the booted system resolves a
/// name through the DNS server the test runs (to `answer`).
fn builtin_expect(answer: Option<Ipv4Addr>) -> Vec<Expect> {
    let mut expect = vec![Expect::Ready {
        ready_within: READY_WITHIN,
    }];
    expect.extend(answer.map(|answer| Expect::Command {
        command: format!("getent hosts {}", dns::NAME),
        matches: Some(format!(r"^{}\s", answer.to_string().replace('.', r"\."))),
    }));
    expect
}

pub fn run(req: &Request) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(UsageError(
            "boot-test needs root (a private network namespace): run it as root".into(),
        )
        .into());
    }
    for (program, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("ip", "iproute2"),
    ] {
        if !crate::exec::have(program) {
            return Err(UsageError(format!(
                "boot-test needs `{program}`: apt-get install -y {package}"
            ))
            .into());
        }
    }
    if req.proxy_dhcp {
        lab::preflight(Path::new(IPXE_DIR)).map_err(UsageError)?;
    }
    let (boot_config, test) = config::load(&req.boot_config, req.boot_config_is_default)?;
    let mut expect = if test.expect.is_empty() {
        default_expect()
    } else {
        test.expect.clone()
    };
    let dns_answer = req
        .iso
        .is_none()
        .then(|| network::Network::seen_as(req.proxy_dhcp));
    expect.extend(builtin_expect(dns_answer));
    if req.secure_boot {
        secure::preflight(req.site_key())?;
        expect.push(Expect::SecureBoot { secure_boot: true });
        expect.push(Expect::Lockdown { lockdown: true });
    }
    if let Some(bad) = expect.iter().find_map(|e| e.validate().err()) {
        return Err(UsageError(format!(
            "{}: boot_test.expect: {bad}",
            req.boot_config.display()
        ))
        .into());
    }
    if let Some(file) = &req.iso {
        return iso::run(req, &test, &expect, file);
    }
    if let Some(playbook) = &req.playbook {
        let play = crate::image::PlayRequest {
            playbook: playbook.clone(),
            overrides: req.overrides.clone(),
            out: req.dir.clone(),
            keep_build_dir: false,
            options: Default::default(),
        };
        crate::image::play(&play)?;
    }
    let manifest = crate::artifact::Manifest::load(&req.dir)?;
    for kind in ["basefs", "kernel", "initrd"] {
        if !manifest.artifacts.values().any(|e| e.kind == kind) {
            return Err(UsageError(format!(
                "no {kind} in {}: build first (mkimage play playbooks/all.yml --out {})",
                req.dir.display(),
                req.dir.display()
            ))
            .into());
        }
    }

    // Everything from here on talks only inside a network namespace of our own.
    let sys = &crate::sys::REAL;
    sys.unshare(CloneFlags::CLONE_NEWNET)?;
    Cmd::new("ip").args(["link", "set", "lo", "up"]).run()?;
    let work = tempfile::Builder::new()
        .prefix("mkimage-boot-test.")
        .tempdir()?;
    let net = network::Network::start(sys, work.path(), req.proxy_dhcp, req.secure_boot)?;
    let (listen, seen_as) = (net.listen(), network::Network::seen_as(req.proxy_dhcp));

    let (url, sha256) = checker::serve(&expect, listen, seen_as)?;
    let checker = config::ExtraOverlay { url, sha256 };
    let profile = req.profile.clone().or(test.profile.clone());
    // no_timer_check: a loaded host can make TCG fail the kernel's IO-APIC timer check.
    let args = format!("no_timer_check {}", req.append).trim().to_string();
    let boot_yml = work.path().join("boot.yml");
    std::fs::write(
        &boot_yml,
        serde_yaml_ng::to_string(&config::for_test(
            boot_config,
            profile.as_deref(),
            &args,
            &checker,
        )?)?,
    )?;

    let serial = req
        .serial_log
        .clone()
        .unwrap_or_else(|| work.path().join("serial.log"));
    let mac = req.mac.to_lowercase();
    let server_log = work.path().join("serve.log");
    let (script_url, _server, front, port) = if req.published {
        let (tree, url) = published::start(work.path(), &req.dir, &boot_yml, listen, seen_as)?;
        (url, None, Some(tree), None)
    } else {
        let port = free_port(listen)?;
        let exe = std::env::current_exe().context("cannot find the mkimage binary")?;
        // The server keeps its state (content store, nodes) under --dir, as `serve` does.
        let server = Cmd::new(&exe)
            .args(["serve", "--http", &format!("{listen}:{port}")])
            .args(net.serve_args())
            .args(match (req.secure_boot, req.proxy_dhcp) {
                (true, true) => &["--uefi-boot", "shim"][..],
                _ => &[][..],
            })
            .arg("--dir")
            .arg(&req.dir)
            .arg("--boot-config")
            .arg(&boot_yml)
            .inherit_env()
            .die_with_parent()
            .spawn(
                std::process::Stdio::null(),
                std::process::Stdio::from(std::fs::File::create(&server_log)?),
            )?;
        let server = Guard(server);
        wait_for_port(listen, port, "mkimage serve").with_context(|| {
            vm::tail(
                &std::fs::read_to_string(&server_log).unwrap_or_default(),
                20,
            )
        })?;
        let front = req
            .via_nginx
            .as_deref()
            .map(|conf| front::start(work.path(), conf, listen, port))
            .transpose()?;
        let entry = front.as_ref().map_or(port, |f| f.port);
        (
            format!("http://{seen_as}:{entry}/boot.ipxe?mac={mac}"),
            Some(server),
            front,
            Some(port),
        )
    };
    let mut spec = vm::VmSpec::netboot(&serial, &script_url);
    spec.memory_mib = req.memory.or(test.memory).unwrap_or(1536);
    spec.nic = req.nic;
    spec.mac = mac;
    spec.uefi = req.uefi;
    net.wire(&mut spec, &script_url);
    if req.secure_boot {
        let setup = secure::Setup {
            work: work.path(),
            dir: &req.dir,
            boot_config: &boot_yml,
            listen,
            port: port.context("--secure-boot boots from mkimage serve")?,
            seen_as,
            mac: &spec.mac.clone(),
        };
        secure::prepare(&setup, req.site_key(), req.proxy_dhcp, &mut spec)?;
    }
    let timeout = Duration::from_secs(req.timeout.or(test.timeout).unwrap_or(600));
    let how = if req.proxy_dhcp {
        format!("proxyDHCP on {} beside a site DHCP server", lab::BRIDGE)
    } else {
        "QEMU user networking".into()
    };
    let from = if req.published {
        "a published tree through nginx"
    } else {
        "mkimage serve"
    };
    tracing::info!(
        "booting {} ({:?}{}, {} MiB) from {from} over {how}; console: {}",
        spec.mac,
        spec.nic,
        match (spec.uefi, &spec.secure_boot) {
            (_, Some(_)) => ", UEFI with Secure Boot",
            (true, None) => ", UEFI",
            (false, None) => "",
        },
        spec.memory_mib,
        serial.display()
    );
    let started = Instant::now();
    let mut guest = vm::Vm::start(&spec)?;
    let stop = guest.watch(timeout, |log| {
        log.contains("mkimage-check: done")
            || log.contains("mkimage-init: FAILED")
            || log.contains("Kernel panic")
    });
    let mut log = vm::strip_escapes(&guest.log());
    if let (true, Some(port)) = (log.contains("mkimage-init: FAILED"), port) {
        node::await_failure(listen, port, &node::admin_token(&req.dir), &spec.mac);
        log = vm::strip_escapes(&guest.log());
    }
    drop(guest);
    let serve_log = std::fs::read_to_string(&server_log).unwrap_or_default();
    let mut host = match (req.secure_boot, req.proxy_dhcp) {
        // The site's lease, then the Secure Boot chain through the proxy.
        (true, true) => {
            let mut v = net.judge(work.path(), &serve_log, &spec.mac, false);
            v.truncate(1);
            v.extend(secure::judge_lab(&serve_log, &spec.mac));
            v
        }
        _ => net.judge(work.path(), &serve_log, &spec.mac, spec.uefi),
    };
    if req.published {
        host.extend(published::judge(work.path(), &spec.mac));
    }
    // The node registry, on the server that served the boot (a published tree has none).
    if let Some(port) = port {
        let settled = matches!(stop, vm::Stop::Done) && !log.contains("mkimage-init: FAILED");
        let admin = node::admin_token(&req.dir);
        host.extend(node::judge(
            (listen, port, &admin),
            &spec.mac,
            &log,
            settled,
        ));
    }
    judge(
        &expect,
        &log,
        host,
        stop,
        timeout,
        started.elapsed().as_secs_f64(),
    )?;
    if let (Some(_), Some(port)) = (&front, port) {
        second_boot_from_cache(&spec, work.path(), listen, port, timeout)?;
    }
    Ok(())
}

/// Boot the same machine again through nginx until its basefs is verified,
/// then require that mkimage served the basefs once for both boots.
fn second_boot_from_cache(
    first: &vm::VmSpec,
    work: &Path,
    listen: Ipv4Addr,
    port: u16,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut spec = first.clone();
    spec.serial = work.join("serial-2.log");
    tracing::info!(
        "second boot through nginx, until the basefs is verified; console: {}",
        spec.serial.display()
    );
    let mut guest = vm::Vm::start(&spec)?;
    let basefs_ok = |log: &str| {
        log.lines().any(|l| {
            l.contains("dm-verity ok: ") || (l.contains("sha256 ok: ") && l.contains("squashfs"))
        })
    };
    let stop = guest.watch(timeout, |log| {
        basefs_ok(log) || log.contains("mkimage-init: FAILED") || log.contains("Kernel panic")
    });
    let log = vm::strip_escapes(&guest.log());
    drop(guest);
    if !matches!(stop, vm::Stop::Done) || !basefs_ok(&log) {
        bail!(
            "boot-test: the second boot through nginx did not verify its basefs\nconsole tail:\n{}",
            vm::tail(&log, 40)
        );
    }
    let n = front::basefs_downloads(listen, port)?;
    println!(
        "{} basefs downloaded from mkimage {n} time(s) for two boots through nginx",
        if n == 1 { "PASS" } else { "FAIL" }
    );
    if n != 1 {
        bail!("boot-test: mkimage served the basefs {n} times for two boots through nginx (want 1: the second from nginx's cache)");
    }
    Ok(())
}

/// Where Debian's `ipxe` package puts the binaries `mkimage serve` hands out.
const IPXE_DIR: &str = "/usr/lib/ipxe";

/// The verdict from the console: the boot's own failure first, then each
/// assertion, then what the host saw (`host`).
fn judge(
    expect: &[Expect],
    log: &str,
    host: Vec<lab::Verdict>,
    stop: vm::Stop,
    timeout: Duration,
    elapsed: f64,
) -> anyhow::Result<()> {
    // What the host saw of the boot's path goes with every failure: it shows where the boot stopped.
    let seen: String = host
        .iter()
        .map(|(what, v)| format!("{}\n", verdict_line(what, v)))
        .collect();
    let tail = || {
        format!(
            "{}{}",
            vm::tail(log, 40),
            if seen.is_empty() {
                String::new()
            } else {
                format!("\nthe boot's path, as the host saw it:\n{seen}")
            }
        )
    };
    if let Some(line) = log
        .lines()
        .find(|l| l.contains("mkimage-init: FAILED") || l.contains("Kernel panic"))
    {
        bail!(
            "boot-test: the boot failed after {elapsed:.0}s: {}\nconsole tail:\n{}",
            line.trim(),
            tail()
        );
    }
    match stop {
        vm::Stop::Done => {}
        vm::Stop::Timeout => bail!(
            "boot-test: no result within {}s (the checks never finished)\nconsole tail:\n{}",
            timeout.as_secs(),
            tail()
        ),
        vm::Stop::Exited(how) => bail!(
            "boot-test: QEMU exited ({how}) before the checks finished\nconsole tail:\n{}",
            tail()
        ),
    }
    let mut verdicts = checks::judge(expect, log);
    verdicts.extend(host);
    for (what, v) in &verdicts {
        println!("{}", verdict_line(what, v));
    }
    let failed: Vec<String> = verdicts
        .iter()
        .filter_map(|(what, v)| v.as_ref().err().map(|why| format!("{what}: {why}")))
        .collect();
    if !failed.is_empty() {
        bail!(
            "boot-test: {} of {} assertions failed: {}\nconsole tail:\n{}",
            failed.len(),
            verdicts.len(),
            failed.join("; "),
            tail()
        );
    }
    println!(
        "boot-test: {} assertions passed in {elapsed:.0}s",
        verdicts.len()
    );
    Ok(())
}

fn verdict_line(what: &str, verdict: &Result<(), String>) -> String {
    format!("{} {what}", if verdict.is_ok() { "PASS" } else { "FAIL" })
}

/// A free TCP port on `ip` (in the private namespace nothing else runs).
pub fn free_port(ip: Ipv4Addr) -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// Wait until something accepts connections on `ip`:`port`.
pub fn wait_for_port(ip: Ipv4Addr, port: u16, what: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if TcpStream::connect((ip, port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not start on {ip}:{port}")
}

/// Wait until the test's DNS server (`dnsmasq`) answers its name with `answer`.
fn wait_for_udp_dns(answer: Ipv4Addr, dnsmasq: &mut std::process::Child) -> anyhow::Result<()> {
    let start = Instant::now();
    let answer = answer.to_string();
    while start.elapsed() < Duration::from_secs(20) {
        if Cmd::new("getent")
            .args(["hosts", dns::NAME])
            .run()
            .is_ok_and(|o| o.stdout.starts_with(&format!("{answer} ")))
        {
            return Ok(());
        }
        if let Ok(Some(status)) = dnsmasq.try_wait() {
            bail!(
                "dnsmasq exited ({}) before answering {}",
                crate::exec::describe_status(status),
                dns::NAME
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("dnsmasq did not answer {} within 20 s", dns::NAME)
}

/// Stops the server child by pid when the test ends, however it ends.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        vm::stop_child(&mut self.0);
    }
}
