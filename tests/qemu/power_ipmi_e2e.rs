//! The hands-free lab, end to end, through a real BMC: a QEMU machine with
//! OpenIPMI's `ipmi_sim` as its BMC (QEMU's `ipmi-bmc-extern` on the VM
//! connection, an in-band KCS interface for the guest) netboots the
//! discovery profile from `mkimage serve` in a private network namespace;
//! the discovery overlay reads the BMC's LAN address in-band and `mkimage
//! nodes` shows it. Then `mkimage reprovision` boots the running machine
//! into another profile through the BMC (boot device PXE, checked against
//! the BMC with `chassis bootparam get 5`; power cycle) and follows it to
//! `booted`, while headless Chromium watches the status page change stage.

use crate::common;
use crate::power_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{mkimage, play_shipped, require, require_root, stderr, stdout};
use power_support::*;

const PASSWORD: &str = "e2e-Secr3t-91";
const MAC: &str = "52:54:00:12:34:56";

fn record(served: &Path) -> serde_json::Value {
    let f = served.join(".state/nodes/52-54-00-12-34-56.json");
    std::fs::read(f)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn has_stage(r: &serde_json::Value, stage: &str) -> bool {
    r["stages"]
        .as_array()
        .is_some_and(|s| s.iter().any(|s| s["stage"] == stage))
}

#[test]
fn power_reprovision_a_running_vm_through_ipmi_sim_into_another_profile() {
    let _vm = crate::one_at_a_time();
    require_root();
    require("qemu-system-x86_64", "qemu-system-x86");
    require("chromium", "chromium");
    let p = play_shipped(&[]);
    private_network();
    let dir = p.path();
    let served = p.out();

    // The BMC, its VM connection on `vm_port`.
    let vm_port = free_port();
    let sim = IpmiSim::start(dir, PASSWORD, Some(vm_port));
    let boot = boot_config(dir, sim.port);

    // The boot server.
    let port = free_port();
    let serve_log = dir.join("serve.log");
    let _server = serve(&served, &boot, port, &serve_log);

    // The machine: netboots through its NIC's iPXE ROM; its BMC is ipmi_sim.
    let serial = dir.join("serial.log");
    let _qemu = start_vm(dir, &serial, port, &sim, vm_port);

    let first = first_boot_is_discovery_with_its_bmc(&served, &serial, &sim);
    let mut page = PageWatch::start(dir, port);

    let (out, err) = reprovision_into_plain(&boot, &served, &serial);
    the_bmc_did_it(&served, &first, &sim);

    // The page saw the boot go by, stage by stage.
    std::thread::sleep(Duration::from_secs(2));
    let titles = page.stop();
    the_page_changed_stage(&titles);

    // The same timeline as text, and a screenshot of the page for the docs.
    let text = timeline_and_screenshot(dir, &served, &boot, port);

    // No password anywhere the lab can read.
    let mut seen = std::fs::read_to_string(&serve_log).unwrap_or_default() + &out + &err + &text;
    seen += &std::fs::read_to_string(served.join(".state/nodes/52-54-00-12-34-56.json"))
        .unwrap_or_default();
    assert!(!seen.contains(PASSWORD), "the BMC password leaked");
}

/// The lab's BMC credentials, and a boot config: discovery by default,
/// `plain` to reprovision into, lab-vm1 with ipmi_sim (on `bmc_port`) as its BMC.
fn boot_config(dir: &Path, bmc_port: u16) -> PathBuf {
    credentials(
        dir,
        &format!("lab: {{username: admin, password: '{PASSWORD}'}}\n"),
    );
    let boot = dir.join("boot.yml");
    std::fs::write(
        &boot,
        format!(
            "default: discovery\nprofiles:\n  - name: discovery\n    overlays: [discovery]\n    args: no_timer_check\n  - name: plain\n    args: no_timer_check\n\
credentials_file: bmc.yml\nnodes:\n  lab-vm1:\n    mac: \"{MAC}\"\n    tags: [rack12]\n    bmc: {{address: 127.0.0.1, port: {bmc_port}, protocol: ipmi, credentials: lab}}\n"
        ),
    )
    .unwrap();

    boot
}

/// `mkimage serve` on 127.0.0.1:`port`, once it accepts connections.
fn serve(served: &Path, boot: &Path, port: u16, serve_log: &Path) -> Guard {
    let server = spawn(
        "mkimage serve",
        Command::new(env!("CARGO_BIN_EXE_mkimage"))
            .args([
                "serve",
                "--tftp",
                "off",
                "--http",
                &format!("127.0.0.1:{port}"),
                "--dir",
            ])
            .arg(served)
            .arg("--boot-config")
            .arg(boot)
            // Chromium watches the page without signing in (the sign-in
            // form and the admin token are tested in serve_trust and
            // serve_profiles); reprovision reads DIR/.state/admin.token.
            .arg("--public-status"),
        serve_log,
    );
    wait_until("mkimage serve", Duration::from_secs(20), serve_log, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    server
}

/// The VM, netbooting from the server with ipmi_sim as its BMC (QEMU's
/// `ipmi-bmc-extern` on `vm_port`, an in-band KCS interface).
fn start_vm(dir: &Path, serial: &Path, port: u16, sim: &IpmiSim, vm_port: u16) -> Guard {
    let mut spec = mkimage::boottest::vm::VmSpec::netboot(
        serial,
        &format!("http://10.0.2.2:{port}/boot.ipxe?mac={MAC}"),
    );
    spec.memory_mib = 1024;
    // A reset through the BMC must reset the machine, not end QEMU.
    let args: Vec<_> = spec
        .args()
        .into_iter()
        .filter(|a| a != "-no-reboot")
        .collect();
    let qmp = sim.state.join("qmp.sock");
    spawn(
        "qemu",
        Command::new("qemu-system-x86_64")
            .args(args)
            .args([
                "-chardev",
                &format!("socket,id=ipmi0,host=127.0.0.1,port={vm_port},reconnect=1"),
            ])
            .args([
                "-device",
                "ipmi-bmc-extern,id=bmc0,chardev=ipmi0",
                "-device",
                "isa-ipmi-kcs,bmc=bmc0",
            ])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display())),
        &dir.join("qemu.log"),
    )
}

/// First boot: discovery, with the BMC's address read in-band and shown
/// by `mkimage nodes`; the BMC says the power is on. Its node record.
fn first_boot_is_discovery_with_its_bmc(
    served: &Path,
    serial: &Path,
    sim: &IpmiSim,
) -> serde_json::Value {
    wait_until(
        "the first boot's inventory",
        Duration::from_secs(600),
        serial,
        || {
            let r = record(served);
            has_stage(&r, "inventory") || has_stage(&r, "failed")
        },
    );
    let first = record(served);
    assert!(!has_stage(&first, "failed"), "first boot failed: {first}");
    assert_eq!(first["profile"], "discovery");
    let bmc = &first["inventory"]["bmc"];
    assert_eq!(
        (bmc["address"].as_str(), bmc["mac"].as_str()),
        (Some("127.0.0.1"), Some("52:54:00:be:ef:01")),
        "{first}"
    );
    let o = mkimage()
        .args(["nodes", "--dir"])
        .arg(served)
        .output()
        .unwrap();
    assert!(
        stdout(&o).contains("127.0.0.1 (52:54:00:be:ef:01)"),
        "mkimage nodes shows the BMC:\n{}",
        stdout(&o)
    );
    let status = sim.ipmitool(PASSWORD, &["chassis", "power", "status"]);
    assert!(status.contains("is on"), "{status}");

    first
}

/// Headless Chromium on the status page, and a thread noting each title
/// it shows (the stages the page lists). The browser runs, and its profile
/// dir stays, until this is dropped (the browser first).
struct PageWatch {
    _chromium: Guard,
    _profile_dir: tempfile::TempDir,
    titles: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    watching: std::sync::Arc<std::sync::atomic::AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

impl PageWatch {
    fn start(dir: &Path, port: u16) -> PageWatch {
        let devtools = free_port();
        let profile_dir = tempfile::tempdir().unwrap();
        let chromium = spawn(
            "chromium",
            Command::new("chromium")
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                ])
                .arg(format!("--user-data-dir={}", profile_dir.path().display()))
                .arg(format!("--remote-debugging-port={devtools}"))
                .arg(format!("http://127.0.0.1:{port}/")),
            &dir.join("chromium.log"),
        );
        let title = move || -> Option<String> {
            let o = Command::new("curl")
                .args(["-sf", &format!("http://127.0.0.1:{devtools}/json/list")])
                .output()
                .ok()?;
            let list: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            list.as_array()?
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["title"].as_str())
                .map(str::to_string)
        };
        wait_until(
            "chromium's page",
            Duration::from_secs(60),
            &dir.join("chromium.log"),
            || title().is_some_and(|t| t.contains("lab-vm1")),
        );
        let titles = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let watcher = {
            let (titles, watching) = (titles.clone(), watching.clone());
            std::thread::spawn(move || {
                while watching.load(std::sync::atomic::Ordering::SeqCst) {
                    if let Some(t) = title() {
                        let mut seen = titles.lock().unwrap();
                        if seen.last() != Some(&t) {
                            seen.push(t);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
        };

        PageWatch {
            _chromium: chromium,
            _profile_dir: profile_dir,
            titles,
            watching,
            watcher: Some(watcher),
        }
    }

    /// Stops watching; the titles seen.
    fn stop(&mut self) -> Vec<String> {
        self.watching
            .store(false, std::sync::atomic::Ordering::SeqCst);
        if let Some(watcher) = self.watcher.take() {
            watcher.join().unwrap();
        }
        self.titles.lock().unwrap().clone()
    }
}

/// `mkimage reprovision lab-vm1 --profile plain --wait booted`, through
/// the BMC; it names each step. Its stdout and stderr.
fn reprovision_into_plain(boot: &Path, served: &Path, serial: &Path) -> (String, String) {
    let started = Instant::now();
    let o = mkimage()
        .args([
            "reprovision",
            "lab-vm1",
            "--profile",
            "plain",
            "--wait",
            "booted",
            "--timeout",
            "10m",
            "--boot-config",
        ])
        .arg(boot)
        .arg("--dir")
        .arg(served)
        .output()
        .unwrap();
    let (out, err) = (stdout(&o), stderr(&o));
    println!(
        "reprovision took {:.0}s:\n{out}{err}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        o.status.success(),
        "reprovision failed:\n{out}{err}\nconsole:\n{}",
        mkimage::boottest::vm::tail(&std::fs::read_to_string(serial).unwrap_or_default(), 40)
    );
    for step in [
        "lab-vm1: next boot: profile plain",
        "lab-vm1: boot device: network (ipmi 127.0.0.1:",
        "lab-vm1: power cycle",
        "lab-vm1: script",
        "lab-vm1: booted",
        "reprovision: 1 node(s) reached booted",
    ] {
        assert!(out.contains(step), "missing `{step}`:\n{out}");
    }
    (out, err)
}

/// The second boot is `plain`'s, a new one, booted with the power on; the
/// one-shot profile is used up; the BMC holds boot device PXE and ipmi_sim
/// cycled the power.
fn the_bmc_did_it(served: &Path, first: &serde_json::Value, sim: &IpmiSim) {
    let second = record(served);
    assert_eq!(second["profile"], "plain", "{second}");
    assert!(
        second["boots"].as_u64() > first["boots"].as_u64(),
        "a new boot: {second}"
    );
    assert!(has_stage(&second, "booted"), "{second}");
    assert_eq!(second["power"]["state"], "on", "{second}");
    assert!(
        !served
            .join(".state/next-boot/52-54-00-12-34-56.json")
            .exists(),
        "the one-shot profile was used up"
    );
    let flags = sim.ipmitool(PASSWORD, &["chassis", "bootparam", "get", "5"]);
    assert!(
        flags.contains("Boot Device Selector : Force PXE"),
        "the boot device, as the BMC has it:\n{flags}"
    );
    let calls = std::fs::read_to_string(sim.state.join("calls")).unwrap_or_default();
    assert!(
        calls.contains("power 0\npower 1"),
        "ipmi_sim cycled the power through the VM's QEMU: {calls}"
    );
}

/// Whichever stages the page's polls caught (a stage can pass between
/// two polls): at least two of the new boot's, ending at booted.
fn the_page_changed_stage(titles: &[String]) {
    println!("page titles seen: {titles:#?}");
    let stages: Vec<&str> = [
        "script",
        "kernel",
        "initrd",
        "network",
        "download",
        "verified",
        "mounted",
        "switch-root",
        "booted",
    ]
    .into_iter()
    .filter(|s| titles.iter().any(|t| t.contains(&format!("lab-vm1 {s}"))))
    .collect();
    assert!(
        stages.len() >= 2 && stages.contains(&"booted"),
        "the live page changed stage on its own: {titles:?}"
    );
}

/// `mkimage nodes lab-vm1` (its text), and a screenshot of the status page.
fn timeline_and_screenshot(dir: &Path, served: &Path, boot: &Path, port: u16) -> String {
    let o = mkimage()
        .args(["nodes", "lab-vm1", "--dir"])
        .arg(served)
        .arg("--boot-config")
        .arg(boot)
        .output()
        .unwrap();
    let text = stdout(&o);
    println!("{text}");
    assert!(
        text.starts_with(&format!(
            "lab-vm1 ({MAC})\n  profile plain, stage booted, power on"
        )),
        "{text}"
    );
    assert!(
        text.contains("from script to booted") && text.contains("switch-root"),
        "{text}"
    );
    let shot = dir.join("power-status.png");
    let o = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--window-size=1100,1400",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium-shot").display()
        ))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .unwrap();
    assert!(shot.is_file(), "screenshot: {}", stderr(&o));
    if let Some(keep) = std::env::var_os("MKIMAGE_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }

    text
}
