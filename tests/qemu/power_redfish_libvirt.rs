//! Redfish against a real machine: sushy-tools' emulator with its libvirt
//! driver, driving a QEMU domain that libvirtd runs — all in private mount
//! and network namespaces (libvirt's run, state and config dirs are tmpfs
//! there, so nothing of it touches the host). `mkimage reprovision` sets
//! the domain's next boot to PXE and powers it on over Redfish; the domain
//! netboots from `mkimage serve` on an isolated libvirt network (its DHCP
//! hands out the boot script's URL) into the profile asked for, and is
//! followed until the server has sent it its kernel.

use crate::common;
use crate::power_support;
use crate::serve_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{mkimage, require_root, stderr, stdout};
use nix::mount::{mount, MsFlags};
use power_support::*;

const PASSWORD: &str = "rf-Secr3t-55";
const MAC: &str = "52:54:00:12:34:70";

/// This thread in private mount and network namespaces, with empty tmpfs
/// where libvirtd keeps its sockets, state, logs and domain definitions,
/// and `qemu_conf` as its qemu.conf.
fn private_libvirt(qemu_conf: &Path) {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS | nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare (root?)");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make / private");
    for d in [
        "/run/libvirt",
        "/var/lib/libvirt",
        "/var/cache/libvirt",
        "/var/log/libvirt",
        "/etc/libvirt/qemu",
    ] {
        std::fs::create_dir_all(d).unwrap();
        mount(
            Some("tmpfs"),
            d,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("tmpfs on {d}: {e}"));
    }
    mount(
        Some(qemu_conf),
        "/etc/libvirt/qemu.conf",
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .expect("bind qemu.conf");
    let ok = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn virsh(args: &[&str]) -> String {
    let o = Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args)
        .output()
        .expect("virsh (libvirt-clients)");
    assert!(
        o.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stops what libvirtd started for the test (the domain's QEMU, the
/// network's dnsmasq) before libvirtd itself is stopped.
struct Teardown;

impl Drop for Teardown {
    fn drop(&mut self) {
        for args in [["destroy", "lab-rf1"], ["net-destroy", "lab"]] {
            let _ = Command::new("virsh")
                .args(["-c", "qemu:///system"])
                .args(args)
                .output();
        }
    }
}

#[test]
fn power_reprovision_a_libvirt_vm_through_sushy_redfish() {
    let _vm = crate::one_at_a_time();
    require_root();
    require("libvirtd", "apt-get install -y libvirt-daemon-system");
    require("virsh", "apt-get install -y libvirt-clients");
    require("qemu-system-x86_64", "apt-get install -y qemu-system-x86");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let qemu_conf = dir.join("qemu.conf");
    std::fs::write(&qemu_conf, "user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\nsecurity_driver = \"none\"\nstdio_handler = \"file\"\n").unwrap();
    private_libvirt(&qemu_conf);

    // libvirtd, in the foreground, stopped by its pid.
    let _libvirtd = start_libvirtd(dir);

    let _teardown = Teardown;

    // A bootable set (iPXE will fetch the script and the kernel) and the server on the lab network.
    let served = dir.join("builds");
    std::fs::create_dir_all(&served).unwrap();
    serve_support::build_bootable(&served, b"basefs");
    let port = free_port();
    lab_network_and_domain(dir, port);
    credentials(
        dir,
        &format!("lab: {{username: admin, password: '{PASSWORD}'}}\n"),
    );
    let sushy = Sushy::start(
        dir,
        "admin",
        PASSWORD,
        "SUSHY_EMULATOR_LIBVIRT_URI = 'qemu:///system'",
    );
    let boot = boot_config(dir, sushy.port);
    let serve_log = dir.join("serve.log");
    let _server = serve(&served, &boot, port, &serve_log);
    let run = |args: &[&str]| {
        let o = mkimage()
            .args(args)
            .arg("--boot-config")
            .arg(&boot)
            .arg("--dir")
            .arg(&served)
            .output()
            .unwrap();
        (o.status.code(), stdout(&o), stderr(&o))
    };

    let (code, out, err) = run(&["power", "lab-rf1", "status"]);
    assert_eq!((code, out.as_str()), (Some(0), "lab-rf1: off\n"), "{err}");

    let (code, out, err) = run(&[
        "reprovision",
        "lab-rf1",
        "--profile",
        "rescue",
        "--wait",
        "kernel",
        "--timeout",
        "5m",
    ]);
    println!("{out}{err}");
    assert_eq!(
        code,
        Some(0),
        "{out}{err}\nserver:\n{}",
        std::fs::read_to_string(&serve_log).unwrap_or_default()
    );
    assert!(
        out.contains("lab-rf1: power on") && out.contains("reprovision: 1 node(s) reached kernel"),
        "{out}"
    );
    the_domain_netboots_into_rescue(&served, &sushy);

    let (code, out, _) = run(&["power", "lab-rf1", "off"]);
    assert_eq!((code, out.as_str()), (Some(0), "lab-rf1: off\n"));
    assert!(virsh(&["domstate", "lab-rf1"]).contains("shut off"));
}

/// libvirtd, in the foreground, stopped by its pid; once virsh reaches it.
fn start_libvirtd(dir: &Path) -> Guard {
    let log = dir.join("libvirtd.log");
    let libvirtd = spawn(
        "libvirtd",
        Command::new("libvirtd")
            .arg("-p")
            .arg(dir.join("libvirtd.pid")),
        &log,
    );
    wait_until("libvirtd", Duration::from_secs(30), &log, || {
        Command::new("virsh")
            .args(["-c", "qemu:///system", "version"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    libvirtd
}

/// The isolated lab network (its DHCP hands out the boot script's URL on
/// `port`) and the domain on it, defined but not running.
fn lab_network_and_domain(dir: &Path, port: u16) {
    let net = dir.join("net.xml");
    std::fs::write(
        &net,
        format!("<network><name>lab</name><bridge name='mkbr-lab'/><ip address='192.168.150.1' netmask='255.255.255.0'><dhcp><range start='192.168.150.10' end='192.168.150.50'/><bootp file='http://192.168.150.1:{port}/boot.ipxe?mac={MAC}'/></dhcp></ip></network>"),
    )
    .unwrap();
    virsh(&["net-create", net.to_str().unwrap()]);
    let dom = dir.join("dom.xml");
    std::fs::write(
        &dom,
        format!("<domain type='qemu'><name>lab-rf1</name><memory unit='MiB'>256</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os><devices><emulator>/usr/bin/qemu-system-x86_64</emulator><interface type='network'><source network='lab'/><mac address='{MAC}'/><model type='virtio'/></interface><serial type='file'><source path='{}'/></serial></devices></domain>", dir.join("serial.log").display()),
    )
    .unwrap();
    virsh(&["define", dom.to_str().unwrap()]);
}

/// `mkimage serve` on every address's `port`, once it accepts connections.
fn serve(served: &Path, boot: &Path, port: u16, serve_log: &Path) -> Guard {
    let server = spawn(
        "mkimage serve",
        Command::new(env!("CARGO_BIN_EXE_mkimage"))
            .args([
                "serve",
                "--tftp",
                "off",
                "--http",
                &format!("0.0.0.0:{port}"),
                "--dir",
            ])
            .arg(served)
            .arg("--boot-config")
            .arg(boot),
        serve_log,
    );
    wait_until("mkimage serve", Duration::from_secs(20), serve_log, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    server
}

/// libvirt runs the domain with its NIC first to boot; the node record is
/// `rescue`'s with the power on, and Redfish says On with a PXE override.
fn the_domain_netboots_into_rescue(served: &Path, sushy: &Sushy) {
    assert!(
        virsh(&["domstate", "lab-rf1"]).contains("running"),
        "libvirt runs the domain"
    );
    let xml = virsh(&["dumpxml", "lab-rf1"]);
    assert!(
        xml.contains("<boot order='1'/>"),
        "the NIC boots first: {xml}"
    );
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(served.join(".state/nodes/52-54-00-12-34-70.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["profile"], "rescue", "{record}");
    assert_eq!(record["power"]["state"], "on", "{record}");
    let system = sushy.get("admin", PASSWORD, "/redfish/v1/Systems")["Members"][0]["@odata.id"]
        .as_str()
        .unwrap()
        .to_string();
    let found = sushy.get("admin", PASSWORD, &system);
    assert_eq!(
        (
            found["PowerState"].as_str(),
            found["Boot"]["BootSourceOverrideTarget"].as_str()
        ),
        (Some("On"), Some("Pxe")),
        "{found}"
    );
}

/// A boot config: `rescue` to reprovision into, lab-rf1 with sushy-tools
/// (on `sushy_port`) as its Redfish BMC.
fn boot_config(dir: &Path, sushy_port: u16) -> PathBuf {
    let boot = dir.join("boot.yml");
    std::fs::write(
        &boot,
        format!("profiles:\n  - name: discovery\n  - name: rescue\n    args: mkimage.test=rescue\ncredentials_file: bmc.yml\nnodes:\n  lab-rf1:\n    mac: '{MAC}'\n    bmc: {{address: 'http://127.0.0.1:{sushy_port}', protocol: redfish, credentials: lab}}\n"),
    )
    .unwrap();
    boot
}
