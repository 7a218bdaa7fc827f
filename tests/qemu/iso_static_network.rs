//! A machine on a network with no DHCP server at all boots from a medium
//! made by `mkimage iso --server URL --node NAME`: the shipped playbook, a
//! boot config whose inventory gives the VM's MAC a static address, the
//! ISO, then — in a network namespace of this test's own — a bridge with a
//! tap for QEMU, `mkimage serve` on the bridge's address and nothing that
//! answers DHCP (no dnsmasq, no proxyDHCP). The init must configure the
//! static address from the medium's `ip=`, download the basefs from the
//! server, take its node overlay (hostname, static networkd file) from the
//! boot script it fetches for its token, reach `booted`, and show in the
//! registry with that address and its hostname.

use crate::common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mkimage::boottest::vm::{Boot, Net, Nic, Vm, VmSpec};

const MAC: &str = "52:54:00:e2:e0:19";
const SERVER: &str = "10.77.0.1";
const ADDRESS: &str = "10.77.0.19";
const PORT: u16 = 18093;
const HOSTNAME: &str = "static19";

/// The shipped boot config without its `boot_test:`, with one node on a
/// static network.
fn boot_config(p: &Project) -> String {
    let shipped = std::fs::read_to_string(repo().join("vars/boot.yml")).unwrap();
    let head = &shipped[..shipped.find("\nboot_test:").unwrap()];
    let nodes = format!(
        "\nnodes:\n  lab-static-19:\n    mac: \"{MAC}\"\n    hostname: {HOSTNAME}\n    network:\n      address: {ADDRESS}/24\n      gateway: {SERVER}\n    vars: {{rack: r19}}\n"
    );
    p.write("vars/static.yml", &format!("{head}\n{nodes}"))
        .to_str()
        .unwrap()
        .to_string()
}

fn run(cmd: &mut Command) {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {}", stderr(&o));
}

/// `mkimage serve`, stopped by its pid when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        mkimage::boottest::vm::stop_child(&mut self.0);
    }
}

/// This thread's own network namespace: a bridge at SERVER with `tap0` on
/// it, and no DHCP server anywhere.
fn lab_network() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    for args in [
        &["link", "set", "lo", "up"][..],
        &["link", "add", "br0", "type", "bridge"],
        &["addr", "add", &format!("{SERVER}/24"), "dev", "br0"],
        &["link", "set", "br0", "up"],
        &["tuntap", "add", "tap0", "mode", "tap"],
        &["link", "set", "tap0", "master", "br0"],
        &["link", "set", "tap0", "up"],
    ] {
        run(Command::new("ip").args(args));
    }
}

/// `mkimage serve` on the bridge: HTTP only, no TFTP, no DHCP of any kind.
fn serve(dir: &Path, config: &str, log: &Path) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mkimage"))
        .args(["serve", "--dir"])
        .arg(dir)
        .args(["--boot-config", config])
        .args(["--http", &format!("{SERVER}:{PORT}"), "--tftp", "off"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.starts_with("listening http "));
    let server = Serve(child);
    assert!(
        ready,
        "mkimage serve did not start: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    std::thread::spawn(move || for _ in lines {});
    server
}

/// The registry's record of MAC (with the admin token), once `done` says it
/// is complete; panics with the last record after `timeout`.
fn record_when(
    token: &str,
    timeout: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        let o = Command::new("curl")
            .args(["-sS", "-H", &format!("Authorization: Bearer {token}")])
            .arg(format!("http://{SERVER}:{PORT}/api/nodes/{MAC}"))
            .output()
            .unwrap();
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&o.stdout) {
            if done(&v) {
                return v;
            }
            last = v;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("the record of {MAC} did not get there in {timeout:?}: {last:#}");
}

fn stages(record: &serde_json::Value) -> Vec<String> {
    record["stages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["stage"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn iso_with_a_static_address_boots_where_no_dhcp_answers() {
    let _vm = crate::one_at_a_time();
    require("qemu-system-x86_64", "qemu-system-x86");
    require("xorriso", "xorriso");
    require("ip", "iproute2");
    require("curl", "curl");
    let p = play_shipped(&[]);
    let config = boot_config(&p);
    let image = iso_for_the_static_node(&p, &config);

    lab_network();
    let serve_log = p.path().join("serve.log");
    let _server = serve(&p.out(), &config, &serve_log);
    let serial = p.path().join("serial.log");
    let mut vm = boot_the_iso(&serial, &image);

    // The init set the address itself (no DHCP client ran), then fetched its
    // token and node overlay and downloaded the images from the server.
    assert!(
        vm.wait_for(
            &format!(" statically ({ADDRESS})"),
            Duration::from_secs(900)
        ),
        "no static configuration on the console:\n{}",
        vm.tail(60)
    );
    assert!(
        vm.wait_for(
            &format!("mkimage-init: address: {ADDRESS}/24"),
            Duration::from_secs(60)
        ),
        "{}",
        vm.tail(60)
    );
    let token = std::fs::read_to_string(p.out().join(".state/admin.token")).unwrap();
    let record = record_when(token.trim(), Duration::from_secs(1200), |r| {
        stages(r).iter().any(|s| s == "booted") && r["inventory"].is_object()
    });
    let console = strip(&vm.log());
    let configure: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("mkimage-init: step: configure "))
        .collect();
    assert!(
        configure.len() == 1
            && configure[0]
                .trim_end()
                .ends_with(&format!("statically ({ADDRESS})")),
        "the init configured its NIC otherwise: {configure:?}"
    );
    assert!(
        console.contains(&format!(
            "node overlay from the boot script of {}",
            MAC.replace(':', "-")
        )),
        "{}",
        vm.tail(80)
    );
    assert_eq!(record["ip"], ADDRESS, "{record:#}");
    assert_eq!(record["inventory"]["hostname"], HOSTNAME, "{record:#}");
    for want in ["network", "download", "verified", "switch-root", "booted"] {
        assert!(
            stages(&record).iter().any(|s| s == want),
            "{want} missing: {record:#}"
        );
    }
    the_node_fetched_from_the_server_at_its_address(&serve_log);
    drop(vm);
}

/// `mkimage iso` for lab-static-19, pointed at the server.
fn iso_for_the_static_node(p: &Project, config: &str) -> PathBuf {
    let image = p.path().join("node.iso");
    let o = mkimage()
        .current_dir(repo())
        .args(["iso", "--dir"])
        .arg(p.out())
        .args(["--boot-config", config, "--node", "lab-static-19"])
        .args(["--server", &format!("http://{SERVER}:{PORT}")])
        .arg("--output")
        .arg(&image)
        .output()
        .unwrap();
    assert!(o.status.success(), "mkimage iso failed: {}", stderr(&o));
    image
}

/// The VM on the lab's tap, booting the ISO from its CD-ROM.
fn boot_the_iso(serial: &Path, image: &Path) -> Vm {
    let mut spec = VmSpec::netboot(serial, "");
    spec.mac = MAC.into();
    spec.nic = Nic::Virtio;
    spec.net = Net::Tap {
        ifname: "tap0".into(),
    };
    spec.boot = Boot::Cdrom(image.to_path_buf());
    Vm::start(&spec).unwrap()
}

/// The basefs and the node overlay came from the server, to that address.
fn the_node_fetched_from_the_server_at_its_address(serve_log: &Path) {
    let log = std::fs::read_to_string(serve_log).unwrap();
    let from_node = |path: &str| {
        log.lines().any(|l| {
            l.contains(&format!("client={ADDRESS}:"))
                && l.contains(path)
                && l.contains("status=200")
        })
    };
    assert!(from_node("/basefs.squashfs"), "no basefs download:\n{log}");
    assert!(
        from_node(&format!("path=/node/{MAC}/")),
        "no node overlay:\n{log}"
    );
}

fn strip(text: &str) -> String {
    mkimage::boottest::vm::strip_escapes(text)
}
