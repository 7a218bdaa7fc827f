//! `mkimage boot-test`: netboot the artifacts in QEMU exactly as a lab
//! machine would — iPXE ROM → DHCP (QEMU user networking) → `/boot.ipxe`
//! from `mkimage serve` → kernel + initrd → basefs + overlays → systemd —
//! inside a private network namespace, and assert on the serial console
//! that it came up.

pub mod checks;
pub mod vm;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_yaml_ng::Value as Yaml;

use crate::exec::Cmd;
use crate::UsageError;
pub use checks::{BootTestConfig, Expect};
pub use vm::Nic;

/// `mkimage boot-test`.
#[derive(Debug, Clone, clap::Args)]
pub struct BootTestArgs {
    /// Build this playbook first (into --dir), then boot its output.
    pub playbook: Option<PathBuf>,
    /// The directory holding the artifacts (what `mkimage serve` serves).
    #[arg(long, default_value = "builds")]
    pub dir: PathBuf,
    /// Boot config with profiles and `boot_test:` assertions.
    #[arg(long, default_value = "vars/boot.yml")]
    pub boot_config: PathBuf,
    /// Profile to boot (default: boot_test.profile, else the default profile).
    #[arg(long)]
    pub profile: Option<String>,
    /// The guest NIC's MAC (profiles may select by it).
    #[arg(long, default_value = "52:54:00:12:34:56")]
    pub mac: String,
    #[arg(long, value_enum, default_value = "virtio")]
    pub nic: Nic,
    /// Guest memory in MiB (default: boot_test.memory, else 1536).
    #[arg(long)]
    pub memory: Option<u32>,
    /// Seconds to wait for the boot and the checks (default: boot_test.timeout, else 600).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Boot with UEFI firmware (OVMF) instead of the BIOS.
    #[arg(long)]
    pub uefi: bool,
    /// Extra kernel arguments for this boot (e.g. `mkimage.bench=transfer`).
    #[arg(long, default_value = "")]
    pub append: String,
    /// Keep the serial console log here.
    #[arg(long)]
    pub serial_log: Option<PathBuf>,
    /// Overrides for the playbook's builds.
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars_override: Vec<String>,
}

/// Assertions used when the boot config declares none.
fn default_expect() -> Vec<Expect> {
    vec![
        Expect::Console { console: "mkimage-init: exec /sbin/init".into() },
        Expect::Command { command: "findmnt -n -o FSTYPE /".into(), matches: Some("^overlay$".into()) },
        Expect::UnitActive { unit_active: "multi-user.target".into() },
    ]
}

pub fn run(args: &BootTestArgs) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(UsageError("boot-test needs root (a private network namespace): run it as root".into()).into());
    }
    for (program, package) in [("qemu-system-x86_64", "qemu-system-x86"), ("ip", "iproute2")] {
        if !crate::exec::have(program) {
            return Err(UsageError(format!("boot-test needs `{program}`: apt-get install -y {package}")).into());
        }
    }
    let (config, test) = load_boot_config(&args.boot_config)?;
    let expect = if test.expect.is_empty() { default_expect() } else { test.expect.clone() };
    if let Some(bad) = expect.iter().find_map(|e| e.validate().err()) {
        return Err(UsageError(format!("{}: boot_test.expect: {bad}", args.boot_config.display())).into());
    }
    if let Some(playbook) = &args.playbook {
        let play = crate::build::PlayArgs { playbook: playbook.clone(), vars_override: args.vars_override.clone(), out: args.dir.clone(), keep_build_dir: false };
        crate::build::play(&play)?;
    }
    let manifest = crate::artifact::Manifest::load(&args.dir)?;
    for kind in ["basefs", "kernel", "initrd"] {
        if !manifest.artifacts.values().any(|e| e.kind == kind) {
            return Err(UsageError(format!("no {kind} in {}: build first (mkimage play playbooks/all.yml --out {})", args.dir.display(), args.dir.display())).into());
        }
    }

    // Everything from here on talks only inside a network namespace of our own.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("cannot create a private network namespace")?;
    Cmd::new("ip").args(["link", "set", "lo", "up"]).run()?;

    let work = tempfile::Builder::new().prefix("mkimage-boot-test.").tempdir()?;
    let check_port = serve_checks(checks::script(&expect))?;
    let check_url = format!("http://10.0.2.2:{check_port}/checks.sh");
    let profile = args.profile.clone().or(test.profile.clone());
    let boot_yml = work.path().join("boot.yml");
    let extra = format!("{} mkimage.check={check_url}", args.append).trim().to_string();
    std::fs::write(&boot_yml, serde_yaml_ng::to_string(&for_test(config, profile.as_deref(), &extra)?)?)?;

    let port = free_port()?;
    let server_log = work.path().join("serve.log");
    let exe = std::env::current_exe().context("cannot find the mkimage binary")?;
    let mut server = Cmd::new(&exe)
        .args(["serve", "--tftp", "off", "--http", &format!("127.0.0.1:{port}")])
        .arg("--dir")
        .arg(&args.dir)
        .arg("--boot-config")
        .arg(&boot_yml)
        .inherit_env()
        .spawn(std::process::Stdio::null(), std::process::Stdio::from(std::fs::File::create(&server_log)?))?;
    let _server_guard = Guard(&mut server);
    wait_for_port(port, &server_log)?;

    let serial = args.serial_log.clone().unwrap_or_else(|| work.path().join("serial.log"));
    let spec = vm::VmSpec {
        memory_mib: args.memory.or(test.memory).unwrap_or(1536),
        nic: args.nic,
        mac: args.mac.to_lowercase(),
        uefi: args.uefi,
        bootfile: format!("http://10.0.2.2:{port}/boot.ipxe?mac={}", args.mac.to_lowercase()),
        serial: serial.clone(),
    };
    let timeout = Duration::from_secs(args.timeout.or(test.timeout).unwrap_or(600));
    tracing::info!("booting {} ({:?}{}, {} MiB) from mkimage serve; console: {}", spec.mac, spec.nic, if spec.uefi { ", UEFI" } else { "" }, spec.memory_mib, serial.display());
    let started = Instant::now();
    let mut guest = vm::Vm::start(&spec)?;
    let stop = guest.watch(timeout, |log| {
        log.contains("mkimage-check: done") || log.contains("mkimage-init: FAILED") || log.contains("Kernel panic")
    });
    let log = vm::strip_escapes(&guest.log());
    drop(guest);
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(line) = log.lines().find(|l| l.contains("mkimage-init: FAILED") || l.contains("Kernel panic")) {
        bail!("boot-test: the boot failed after {elapsed:.0}s: {}\nconsole tail:\n{}", line.trim(), tail(&log, 40));
    }
    match stop {
        vm::Stop::Done => {}
        vm::Stop::Timeout => bail!("boot-test: no result within {}s (the checks never finished)\nconsole tail:\n{}", timeout.as_secs(), tail(&log, 40)),
        vm::Stop::Exited(how) => bail!("boot-test: QEMU exited ({how}) before the checks finished\nconsole tail:\n{}", tail(&log, 40)),
    }
    let verdicts = checks::judge(&expect, &log);
    let failed: Vec<String> = verdicts.iter().filter_map(|(what, v)| v.as_ref().err().map(|why| format!("{what}: {why}"))).collect();
    for (what, v) in &verdicts {
        println!("{} {what}", if v.is_ok() { "PASS" } else { "FAIL" });
    }
    if !failed.is_empty() {
        bail!("boot-test: {} of {} assertions failed: {}\nconsole tail:\n{}", failed.len(), verdicts.len(), failed.join("; "), tail(&log, 40));
    }
    println!("boot-test: {} assertions passed in {elapsed:.0}s", verdicts.len());
    Ok(())
}

/// Read the boot config (a missing default file is an empty config) and its
/// `boot_test:` section.
fn load_boot_config(path: &Path) -> anyhow::Result<(Yaml, BootTestConfig)> {
    let value: Yaml = if path.is_file() {
        crate::config::yaml::load(path)?
    } else if path == Path::new("vars/boot.yml") {
        Yaml::Mapping(Default::default())
    } else {
        return Err(UsageError(format!("{}: no such boot config", path.display())).into());
    };
    let test = match value.get("boot_test") {
        Some(v) => serde_yaml_ng::from_value(v.clone()).map_err(|e| crate::config::ConfigError(format!("{}: boot_test: {e}", path.display())))?,
        None => BootTestConfig::default(),
    };
    Ok((value, test))
}

/// The boot config the test serves: every profile's kernel arguments gain
/// `extra` (`mkimage.check=URL` and --append), the serial console comes last
/// (so /dev/console is ttyS0, which the test reads), and the chosen profile
/// is the default.
fn for_test(mut config: Yaml, profile: Option<&str>, extra: &str) -> anyhow::Result<Yaml> {
    let Yaml::Mapping(map) = &mut config else { bail!("the boot config must be a mapping") };
    map.remove("boot_test");
    map.insert("console".into(), "console=tty0 console=ttyS0,115200".into());
    if let Some(p) = profile {
        map.insert("default".into(), p.into());
    }
    match map.get_mut("profiles") {
        Some(Yaml::Sequence(profiles)) => {
            for p in profiles {
                if let Yaml::Mapping(p) = p {
                    let args = p.get("args").and_then(Yaml::as_str).unwrap_or("").to_string();
                    p.insert("args".into(), format!("{args} {extra}").trim().into());
                }
            }
        }
        _ => {
            let mut p = serde_yaml_ng::Mapping::new();
            p.insert("name".into(), profile.unwrap_or("default").into());
            p.insert("args".into(), extra.into());
            map.insert("profiles".into(), Yaml::Sequence(vec![Yaml::Mapping(p)]));
        }
    }
    Ok(config)
}

/// Serve the check script on 127.0.0.1 (inside the namespace) from a thread.
fn serve_checks(script: String) -> anyhow::Result<u16> {
    let files = [("/checks.sh".to_string(), bytes::Bytes::from(script))].into();
    let addr = crate::serve::adhoc::spawn(([127, 0, 0, 1], 0).into(), files).context("cannot start the check server")?;
    Ok(addr.port())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(port: u16, log: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    bail!("mkimage serve did not start on port {port}:\n{}", tail(&text, 20))
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Stops the server child by pid when the test ends, however it ends.
struct Guard<'a>(&'a mut std::process::Child);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        vm::stop_child(self.0);
        let _ = std::io::stderr().flush();
    }
}
