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
    let (boot_config, test) = config::load(&req.boot_config, req.boot_config_is_default)?;
    let mut expect = if test.expect.is_empty() {
        default_expect()
    } else {
        test.expect.clone()
    };
    // A network ISO boots on the netboot path's network and server; an
    // offline one with no network (`iso::run`).
    let online_iso = match &req.iso {
        Some(file) => iso::server_of(file)?.map(|_| file.clone()),
        None => None,
    };
    let dns_answer = (req.iso.is_none() || online_iso.is_some())
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
    if let (Some(file), None) = (&req.iso, &online_iso) {
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
    let checker = config::ExtraOverlay {
        url: url.clone(),
        sha256: sha256.clone(),
    };
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
        let nginx_port = req
            .via_nginx
            .as_ref()
            .map(|_| free_port(listen))
            .transpose()?;
        let exe = std::env::current_exe().context("cannot find the mkimage binary")?;
        // A signed UKI takes a node overlay only with its signature.
        let node_key = match (req.secure_boot, req.site_key()) {
            (true, Some((dir, _))) => vec![
                std::ffi::OsString::from("--node-signing-key"),
                crate::secureboot::keys::Keys::load(dir)?
                    .node_signer()
                    .0
                    .into(),
            ],
            _ => vec![],
        };
        // The server keeps its state (content store, nodes) under --dir, as `serve` does.
        let server = Cmd::new(&exe)
            .args(["serve", "--http", &format!("{listen}:{port}")])
            .args(net.serve_args())
            // nginx's requests come from `listen`: its X-Forwarded-For
            // counts. On the lab's network the proxyDHCP hands out the
            // server's URL: nginx's, so the whole boot goes through it.
            .args(match (nginx_port, req.proxy_dhcp) {
                (Some(n), true) => vec![
                    "--trusted-proxy".to_string(),
                    format!("{listen}/32"),
                    "--public-url".to_string(),
                    format!("http://{seen_as}:{n}"),
                ],
                (Some(_), false) => vec!["--trusted-proxy".to_string(), format!("{listen}/32")],
                (None, _) => vec![],
            })
            .args(match (req.secure_boot, req.proxy_dhcp) {
                (true, true) => &["--uefi-boot", "shim"][..],
                _ => &[][..],
            })
            .args(node_key)
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
            .zip(nginx_port)
            .map(|(conf, n)| front::start(work.path(), conf, (listen, n), port))
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
    if let Some(file) = &online_iso {
        let server = format!(
            "http://{seen_as}:{}",
            port.context("--iso boots from mkimage serve")?
        );
        let checker = (url.as_str(), sha256.as_str());
        iso::prepare_online(
            &mut spec,
            work.path(),
            file,
            &server,
            checker,
            &args,
            req.secure_boot,
        )?;
    } else if req.secure_boot {
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
        // The site's lease, then the Secure Boot chain through the proxy:
        // the UKI by HTTP boot, or shim and GRUB by PXE.
        (true, true) => {
            let mut v = net.judge(work.path(), &serve_log, &spec.mac, false);
            v.truncate(1);
            v.extend(match req.http_boot {
                true => secure::judge_http_boot(&serve_log, &spec.mac),
                false => secure::judge_lab(&serve_log, &spec.mac),
            });
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
        if front.is_some() && req.proxy_dhcp {
            host.push(node::judge_own_address(
                (listen, port, &admin),
                &spec.mac,
                listen,
            ));
        }
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
/// Stops the server child by pid when the test ends, however it ends.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        vm::stop_child(&mut self.0);
    }
}
