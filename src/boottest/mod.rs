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
mod judge;
pub mod lab;
mod netns;
mod network;
pub mod node;
pub mod ports;
mod published;
mod request;
mod secure;
mod server;
pub mod vm;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sched::CloneFlags;

use crate::exec::Cmd;
use crate::sys::Sys;
use crate::UsageError;
pub use checks::Expect;
pub use config::BootTestConfig;
use judge::judge;
pub use ports::{free_port, wait_for_port};
pub use request::Request;
pub use vm::Nic;

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
    preflight(req)?;
    let (boot_config, test) = config::load(&req.boot_config, req.boot_config_is_default)?;
    // A network ISO boots on the netboot path's network and server; an
    // offline one with no network (`iso::run`).
    let online_iso = match &req.iso {
        Some(file) => iso::server_of(file)?.map(|_| file.clone()),
        None => None,
    };
    let expect = expectations(req, &test, req.iso.is_none() || online_iso.is_some())?;
    if let (Some(file), None) = (&req.iso, &online_iso) {
        return iso::run(req, &test, &expect, file);
    }
    build_first(req)?;

    // Everything from here on talks only inside a network namespace of our own.
    let sys = &crate::sys::REAL;
    sys.unshare(CloneFlags::CLONE_NEWNET)?;
    Cmd::new("ip").args(["link", "set", "lo", "up"]).run()?;
    let work = tempfile::Builder::new()
        .prefix("mkimage-boot-test.")
        .tempdir()?;
    let net = network::Network::start(sys, work.path(), req.proxy_dhcp, req.secure_boot)?;
    let (listen, seen_as) = (net.listen(), network::Network::seen_as(req.proxy_dhcp));
    let checker = checker::serve(&expect, listen, seen_as)?;
    // no_timer_check: a loaded host can make TCG fail the kernel's IO-APIC timer check.
    let args = format!("no_timer_check {}", req.append).trim().to_string();
    let boot_yml = work.path().join("boot.yml");
    let profile = req.profile.clone().or(test.profile.clone());
    let for_test = config::for_test(
        boot_config,
        profile.as_deref(),
        &args,
        &config::ExtraOverlay {
            url: checker.0.clone(),
            sha256: checker.1.clone(),
        },
    )?;
    std::fs::write(&boot_yml, serde_yaml_ng::to_string(&for_test)?)?;
    let serial = req
        .serial_log
        .clone()
        .unwrap_or_else(|| work.path().join("serial.log"));
    let at = server::Setup {
        req,
        net: &net,
        work: work.path(),
        boot_yml: &boot_yml,
        log: work.path().join("serve.log"),
        mac: req.mac.to_lowercase(),
    };
    let served = server::start(&at)?;
    let spec = vm_spec(
        req,
        &test,
        &at,
        &served,
        &serial,
        (&checker, &args),
        online_iso,
    )?;
    let timeout = Duration::from_secs(req.timeout.or(test.timeout).unwrap_or(600));
    announce(req, &spec, &serial);
    let started = Instant::now();
    let (stop, log) = boot(&spec, timeout, &at, served.port)?;
    let host = host_verdicts(&at, &served, &spec, &log, &stop);
    judge(
        &expect,
        &log,
        host,
        stop,
        timeout,
        started.elapsed().as_secs_f64(),
    )?;
    if let (Some(_), Some(port)) = (&served.front, served.port) {
        second_boot_from_cache(&spec, work.path(), net.listen(), port, timeout)?;
    }
    Ok(())
}

/// What boot-test needs before it starts: root, QEMU and iproute2, the
/// lab's tools, and flags that go together.
fn preflight(req: &Request) -> anyhow::Result<()> {
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
        lab::preflight(Path::new(crate::serve::DEFAULT_IPXE_DIR)).map_err(UsageError)?;
    }
    if req.keys.is_some() && req.proxy_dhcp && !req.http_boot {
        return Err(UsageError("boot-test --keys --proxy-dhcp boots the UKI by UEFI HTTP boot from the proxyDHCP's offer: add --http-boot".into()).into());
    }
    if req.secure_boot {
        secure::preflight(req.site_key())?;
    }
    Ok(())
}

/// The assertions: the boot config's (or the defaults), the built-in ones
/// (DNS when the VM has a network), and Secure Boot's; each checked.
fn expectations(
    req: &Request,
    test: &BootTestConfig,
    networked: bool,
) -> anyhow::Result<Vec<Expect>> {
    let mut expect = if test.expect.is_empty() {
        default_expect()
    } else {
        test.expect.clone()
    };
    let dns_answer = networked.then(|| network::Network::seen_as(req.proxy_dhcp));
    expect.extend(builtin_expect(dns_answer));
    if req.secure_boot {
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
    Ok(expect)
}

/// The playbook built into `--dir` first, if one is given; then the dir
/// must hold a basefs, a kernel and an initrd.
fn build_first(req: &Request) -> anyhow::Result<()> {
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
    Ok(())
}

/// The VM: its memory, NIC and firmware, wired to the network, with a
/// network ISO's test copy or the Secure Boot path's files when asked.
fn vm_spec(
    req: &Request,
    test: &BootTestConfig,
    at: &server::Setup,
    served: &server::Served,
    serial: &Path,
    (checker, args): (&(String, String), &str),
    online_iso: Option<std::path::PathBuf>,
) -> anyhow::Result<vm::VmSpec> {
    let seen_as = network::Network::seen_as(req.proxy_dhcp);
    let mut spec = vm::VmSpec::netboot(serial, &served.script_url);
    spec.memory_mib = req.memory.or(test.memory).unwrap_or(1536);
    spec.nic = req.nic;
    spec.mac = at.mac.clone();
    spec.uefi = req.uefi;
    at.net.wire(&mut spec, &served.script_url);
    if let Some(file) = &online_iso {
        let server = format!(
            "http://{seen_as}:{}",
            served.port.context("--iso boots from mkimage serve")?
        );
        iso::prepare_online(
            &mut spec,
            at.work,
            file,
            &server,
            (checker.0.as_str(), checker.1.as_str()),
            args,
            req.secure_boot,
        )?;
    } else if req.secure_boot {
        let setup = secure::Setup {
            work: at.work,
            dir: &req.dir,
            boot_config: at.boot_yml,
            listen: at.net.listen(),
            port: served
                .port
                .context("--secure-boot boots from mkimage serve")?,
            seen_as,
            mac: &spec.mac.clone(),
        };
        secure::prepare(&setup, req.site_key(), req.proxy_dhcp, &mut spec)?;
    }
    Ok(spec)
}

/// One line on how the VM boots, and where its console goes.
fn announce(req: &Request, spec: &vm::VmSpec, serial: &Path) {
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
}

/// Run the VM until the checks are done, the init fails or the kernel
/// panics (or `timeout`); after a failure, wait for the server's record of
/// it. Returns how it stopped and the console.
fn boot(
    spec: &vm::VmSpec,
    timeout: Duration,
    at: &server::Setup,
    port: Option<u16>,
) -> anyhow::Result<(vm::Stop, String)> {
    let mut guest = vm::Vm::start(spec)?;
    let stop = guest.watch(timeout, |log| {
        log.contains("mkimage-check: done")
            || log.contains("mkimage-init: FAILED")
            || log.contains("Kernel panic")
    });
    let mut log = vm::strip_escapes(&guest.log());
    if let (true, Some(port)) = (log.contains("mkimage-init: FAILED"), port) {
        let admin = node::admin_token(&at.req.dir);
        node::await_failure(at.net.listen(), port, &admin, &spec.mac);
        log = vm::strip_escapes(&guest.log());
    }
    Ok((stop, log))
}

/// What the host saw: the network's judgement (the lease, the boot
/// files, the Secure Boot chain), a published tree's, and the node
/// registry's record of the VM on the server that served it.
fn host_verdicts(
    at: &server::Setup,
    served: &server::Served,
    spec: &vm::VmSpec,
    log: &str,
    stop: &vm::Stop,
) -> Vec<lab::Verdict> {
    let req = at.req;
    let serve_log = std::fs::read_to_string(&at.log).unwrap_or_default();
    let mut host = match (req.secure_boot, req.proxy_dhcp) {
        // The site's lease, then the Secure Boot chain through the proxy:
        // the UKI by HTTP boot, or shim and GRUB by PXE.
        (true, true) => {
            let mut v = at.net.judge(at.work, &serve_log, &spec.mac, false);
            v.truncate(1);
            v.extend(match req.http_boot {
                true => secure::judge_http_boot(&serve_log, &spec.mac),
                false => secure::judge_lab(&serve_log, &spec.mac),
            });
            v
        }
        _ => at.net.judge(at.work, &serve_log, &spec.mac, spec.uefi),
    };
    if req.published {
        host.extend(published::judge(at.work, &spec.mac));
    }
    // The node registry, on the server that served the boot (a published tree has none).
    if let Some(port) = served.port {
        let listen = at.net.listen();
        let settled = matches!(stop, vm::Stop::Done) && !log.contains("mkimage-init: FAILED");
        let admin = node::admin_token(&req.dir);
        host.extend(node::judge((listen, port, &admin), &spec.mac, log, settled));
        if served.front.is_some() && req.proxy_dhcp {
            host.push(node::judge_own_address(
                (listen, port, &admin),
                &spec.mac,
                listen,
            ));
        }
    }
    host
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
