//! The whole chain, the way a lab uses it: `mkimage play playbooks/all.yml`,
//! then `mkimage boot-test` (QEMU netboot through `mkimage serve` in a
//! private network namespace; through nginx's proxy cache; from a
//! `publish`ed tree served by nginx alone; and on a layer-2 network through the
//! proxyDHCP beside a site DHCP server, BIOS and UEFI; the NIC matrix is in
//! `bench/lab.sh`, to keep the suite's QEMU time down), then rebuilds
//! through a real apt-cacher-ng.

use crate::common;
use common::*;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The shipped playbook, built once into a fresh output dir.
fn played() -> &'static Project {
    static BUILT: std::sync::OnceLock<Project> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| play_shipped(&[]))
}

fn boot_test(p: &Project, extra: &[&str]) -> std::process::Output {
    require("qemu-system-x86_64", "qemu-system-x86");
    mkimage()
        .current_dir(repo())
        .args(["boot-test", "--dir"])
        .arg(p.out())
        .args(extra)
        .output()
        .unwrap()
}

/// The MAC of the playbook test's VM.
const MAC: &str = "52:54:00:e2:e0:01";

#[test]
fn playbook_then_netboot_passes_the_boot_config_assertions() {
    let _vm = crate::one_at_a_time();
    let p = played();
    let serial = p.path().join("serial.log");
    // A MAC of its own: the other tests boot the default one against the
    // same served dir (and node registry) at the same time.
    let o = boot_test(p, &["--mac", MAC, "--serial-log", serial.to_str().unwrap()]);
    let console = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(
        o.status.success(),
        "boot-test failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    let out = stdout(&o);
    assert!(
        out.contains("PASS console matches /mkimage-discovery: "),
        "{out}"
    );
    assert!(
        out.contains("PASS `lshw -quiet -short -class network`"),
        "{out}"
    );
    assert!(out.contains("assertions passed"), "{out}");
    // The discovery line is JSON with this VM's NIC.
    let json = discovery_json(&console);
    assert!(
        json["nics"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["mac"] == MAC)),
        "{json}"
    );
    // The server's node registry: boot-test asked it, and `mkimage nodes` reads it from the served dir.
    for check in [
        &format!("PASS the server's node record of {MAC} shows the booted stage"),
        &format!("PASS the server's node record of {MAC} holds its inventory (vendor QEMU)"),
    ] {
        assert!(out.contains(check.as_str()), "missing `{check}`:\n{out}");
    }
    let o = mkimage()
        .args(["nodes", "--json", "--dir"])
        .arg(p.out())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let nodes: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let vm = nodes["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["mac"] == MAC))
        .unwrap_or_else(|| panic!("{nodes}"));
    assert_eq!(vm["vendor"], "QEMU", "{vm}");
    let stages: Vec<&str> = vm["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    for stage in [
        "script",
        "kernel",
        "initrd",
        "network",
        "download",
        "verified",
        "mounted",
        "switch-root",
        "booted",
        "inventory",
    ] {
        assert!(
            stages.contains(&stage),
            "{stage} not among the stages of {vm}"
        );
    }
}

/// nginx's proxy_cache (nginx/mkimage-cache.conf) between the VM and the
/// server, on the lab's layer-2 network (`--proxy-dhcp`: the proxyDHCP
/// hands iPXE nginx's URL, the server trusts nginx's address): a checked
/// boot through it, then a second boot until its basefs is verified;
/// mkimage's /metrics counts one basefs download for both, and the node
/// record has the VM's own lease, not nginx's address (`--trusted-proxy`).
#[test]
fn netboot_through_nginx_proxy_cache_serves_the_second_basefs_from_its_cache() {
    let _vm = crate::one_at_a_time();
    require("nginx", "nginx");
    require("dnsmasq", "dnsmasq");
    let p = played();
    let conf = repo().join("nginx/mkimage-cache.conf");
    let o = boot_test(p, &["--proxy-dhcp", "--via-nginx", conf.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "boot-test through nginx failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    let out = stdout(&o);
    assert!(out.contains("assertions passed"), "{out}");
    assert!(
        out.contains("PASS basefs downloaded from mkimage 1 time(s) for two boots through nginx"),
        "{out}"
    );
    assert!(
        out.contains("has the VM's own address (its lease)"),
        "the record behind nginx must carry the VM's address: {out}"
    );
}

/// `mkimage publish`'s static tree served by nginx alone, from the
/// nginx.conf publish wrote: a checked boot with no `mkimage serve` running,
/// and nginx's log shows the whole boot came from the tree.
#[test]
fn netboot_from_a_published_tree_served_by_nginx_alone() {
    let _vm = crate::one_at_a_time();
    require("nginx", "nginx");
    let p = played();
    let o = boot_test(p, &["--published"]);
    assert!(
        o.status.success(),
        "boot-test from the published tree failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    let out = stdout(&o);
    assert!(out.contains("assertions passed"), "{out}");
    for what in [
        "the tree's dispatcher /boot.ipxe",
        "a pre-rendered script",
        "the kernel from the tree",
        "the initrd from the tree",
        "the basefs from the tree",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("PASS nginx served") && l.contains(what)),
            "{what}:\n{out}"
        );
    }
    assert!(
        stderr(&o).contains("from a published tree through nginx"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn broken_image_fails_the_boot_test_with_the_reason() {
    let _vm = crate::one_at_a_time();
    let p = played();
    // A copy of the builds whose overlay's bytes no longer match its sha256.
    let broken = Project::new();
    let copy = Command::new("cp")
        .arg("-a")
        .arg(p.out())
        .arg(broken.out())
        .status()
        .unwrap();
    assert!(copy.success());
    let overlay = broken.out().join("discovery.cpio.gz");
    let mut bytes = std::fs::read(&overlay).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0xff;
    std::fs::write(&overlay, bytes).unwrap();
    let o = boot_test(&broken, &["--timeout", "400"]);
    assert!(
        !o.status.success(),
        "boot-test passed with a corrupt overlay:\n{}",
        stdout(&o)
    );
    let err = stderr(&o);
    assert!(
        err.contains("the boot failed") && err.contains("sha256"),
        "{err}"
    );
    // The init reported the failure and its reason to the node registry.
    let o = mkimage()
        .args(["nodes", "--json", "--dir"])
        .arg(broken.out())
        .output()
        .unwrap();
    let nodes: serde_json::Value =
        serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    let vm = &nodes["nodes"][0];
    assert_eq!(vm["stage"], "failed", "{nodes}");
    let failure = vm["last_failure"].as_str().unwrap_or_default();
    assert!(
        failure.starts_with("download overlay 1: sha256 mismatch: expected "),
        "{nodes}"
    );
}

/// apt-cacher-ng with a minimal config of its own on 127.0.0.1, stopped by pid.
struct Acng {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Acng {
    fn start() -> Acng {
        require("apt-cacher-ng", "apt-cacher-ng");
        let dir = tempfile::tempdir_in(scratch()).unwrap();
        // apt-cacher-ng cannot bind ports above 32767 ("Error resolving
        // address for binding"), so pick a free one below.
        let port = (3142..32000)
            .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
            .expect("a free port");
        for d in ["conf", "cache", "log"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(
            dir.path().join("conf/acng.conf"),
            format!(
                "CacheDir: {}\nLogDir: {}\nPort: {port}\nBindAddress: 127.0.0.1\nForeGround: 1\nVerboseLog: 1\n",
                dir.path().join("cache").display(),
                dir.path().join("log").display()
            ),
        )
        .unwrap();
        let out = std::fs::File::create(dir.path().join("log/stdout")).unwrap();
        let mut child = Command::new("apt-cacher-ng")
            .arg("-c")
            .arg(dir.path().join("conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = child.try_wait().unwrap();
            if exited.is_some() || start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let text =
                    std::fs::read_to_string(dir.path().join("log/stdout")).unwrap_or_default();
                panic!("apt-cacher-ng did not start ({exited:?}):\n{text}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Acng { child, port, dir }
    }

    /// Lines of its transfer log (`time|I|…` fetched upstream, `time|O|…` sent to a client).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log/apt-cacher.log")).unwrap_or_default()
    }
}

impl Drop for Acng {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        std::thread::sleep(Duration::from_millis(500));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn debs_in(log: &str, kind: &str) -> usize {
    log.lines()
        .filter(|l| l.split('|').nth(1) == Some(kind) && l.contains(".deb"))
        .count()
}

#[test]
fn rebuild_through_apt_cacher_ng_comes_from_its_cache_and_leaves_no_proxy() {
    let _vm = crate::one_at_a_time();
    require_root();
    let acng = Acng::start();
    let proxy = format!("http://127.0.0.1:{}", acng.port);
    let p = Project::new();
    p.write("provisioners/tools/tasks.yml", "- apt: {pkg: [jq]}\n");
    // Cold caches of our own each time: every package must come through the proxy.
    let vars = |name: &str, cache: &str| {
        format!(
            "name: {name}\nsuite: bookworm\nvariant: minbase\napt_proxy: {proxy}\nbootstrap_cache: false\ncache_dir: {}\nprovisioners: [tools]\n",
            p.path().join(cache).display()
        )
    };
    p.write("vars/first.yml", &vars("first", "cache1"));
    p.write("vars/second.yml", &vars("second", "cache2"));
    let o = p.run(&["basefs", "--vars", "vars/first.yml"]);
    assert!(o.status.success(), "first build: {}", stderr(&o));
    let after_first = acng.log();
    let fetched = debs_in(&after_first, "I");
    assert!(
        fetched > 50,
        "the first build did not go through apt-cacher-ng:\n{after_first}"
    );

    let o = p.run(&["basefs", "--vars", "vars/second.yml"]);
    assert!(o.status.success(), "second build: {}", stderr(&o));
    let log = acng.log();
    let second: String = log
        .strip_prefix(after_first.as_str())
        .unwrap_or(&log)
        .to_string();
    let (upstream, served) = (debs_in(&second, "I"), debs_in(&second, "O"));
    assert!(
        served > 50,
        "the second build took few packages from apt-cacher-ng:\n{second}"
    );
    assert!(
        upstream * 10 <= served,
        "the second build fetched {upstream} of {served} .debs upstream again"
    );

    // No proxy setting in either image.
    for image in ["first.squashfs", "second.squashfs"] {
        let o = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "m=$(mktemp -d) && mount -t squashfs -o loop,ro '{}' $m && ! grep -rIl -e '127.0.0.1:{}' -e 'Acquire::http::Proxy' $m/etc",
                p.out().join(image).display(),
                acng.port
            ))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{image} carries proxy settings: {}",
            stdout(&o)
        );
    }
}

/// A bootstrapped tree cached by a build that used a proxy carries no
/// proxy: with the proxy gone, a build without one reuses the tree and its
/// roles' apt works.
#[test]
fn a_cached_tree_carries_no_proxy_into_the_next_build() {
    let _vm = crate::one_at_a_time();
    require_root();
    let p = Project::new();
    let cache = p.path().join("cache");
    p.write(
        "provisioners/update/tasks.yml",
        "- apt: {update: true, pkg: [jq]}\n",
    );
    let vars = |name: &str, proxy: &str| {
        format!("name: {name}\nsuite: bookworm\nvariant: minbase\n{proxy}cache_dir: {}\nprovisioners: [update]\n", cache.display())
    };
    {
        let acng = Acng::start();
        p.write(
            "vars/with.yml",
            &vars(
                "with",
                &format!("apt_proxy: http://127.0.0.1:{}\n", acng.port),
            ),
        );
        let o = p.run(&["basefs", "--vars", "vars/with.yml"]);
        assert!(
            o.status.success(),
            "build through the proxy: {}",
            stderr(&o)
        );
        assert!(
            debs_in(&acng.log(), "I") > 50,
            "the first build did not go through the proxy"
        );
    } // the proxy is stopped here: a build that still used it would fail
    let trees: Vec<_> = std::fs::read_dir(cache.join("bootstrap"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(trees.len(), 1, "one cached tree: {trees:?}");
    let o = Command::new("grep")
        .args(["-rIl", "-e", "Acquire::http::Proxy", "-e", "127.0.0.1:"])
        .arg(trees[0].join("etc/apt"))
        .output()
        .unwrap();
    assert!(
        stdout(&o).trim().is_empty(),
        "the cached tree carries proxy settings: {}",
        stdout(&o)
    );
    p.write("vars/without.yml", &vars("without", ""));
    let o = p.run(&["basefs", "--vars", "vars/without.yml"]);
    let err = stderr(&o);
    assert!(
        o.status.success(),
        "build without a proxy, from the cached tree: {err}"
    );
    assert!(
        err.contains("reuse cached tree"),
        "the second build reused the cached tree: {err}"
    );
}

#[test]
fn inspect_lists_the_initrd_init_busybox_and_module_closure() {
    let _vm = crate::one_at_a_time();
    let p = played();
    let listing = inspect(&p.out().join("initrd.initrd"));
    let has = |suffix: &str| lists(&listing, suffix);
    assert!(has(" init"), "no init:\n{listing}");
    assert!(has("bin/busybox"), "no busybox:\n{listing}");
    // Requested modules and the dependencies the closure must add.
    for module in [
        "virtio_net.ko",
        "net_failover.ko",
        "failover.ko",
        "e1000e.ko",
        "squashfs.ko",
        "overlay.ko",
        "loop.ko",
        "mlx5_core.ko",
        "ixgbe.ko",
        "mdio.ko",
    ] {
        assert!(
            listing.contains(&format!("/{module}")),
            "initrd lacks {module}:\n{listing}"
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.out().join("manifest.json")).unwrap()).unwrap();
    let entry = &manifest["artifacts"]["initrd.initrd"];
    let basefs_kernel = &manifest["artifacts"]["basefs.squashfs"]["kernel_version"];
    assert_eq!(&entry["kernel_version"], basefs_kernel);
    let order: Vec<&str> = entry["modules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    let pos = |m: &str| {
        order
            .iter()
            .position(|x| *x == m)
            .unwrap_or_else(|| panic!("{m} not in {order:?}"))
    };
    assert!(
        pos("failover") < pos("net_failover") && pos("net_failover") < pos("virtio_net"),
        "load order {order:?}"
    );
}

/// `boot-test --proxy-dhcp [--uefi]`: the played images on a layer-2
/// network beside a site DHCP server that hands out addresses only, booted
/// through `mkimage serve --proxy-dhcp`; every console assertion and every
/// check of the path the boot took must pass, and the node registry must
/// show the machine booted with its inventory. The NIC matrix:
/// `bench/lab.sh`.
fn proxy_dhcp_lab_boot(firmware: &[&str], path: &[&str]) {
    let p = played();
    require("dnsmasq", "dnsmasq-base");
    require("nsenter", "util-linux");
    // Other VMs may share the two emulating cores: allow for it.
    let o = boot_test(
        p,
        &[&["--proxy-dhcp", "--timeout", "1200"], firmware].concat(),
    );
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "boot-test --proxy-dhcp {firmware:?} failed:\n{out}\n{}",
        stderr(&o)
    );
    let common = [
        "PASS `getent hosts mkimage-boot-test.test` succeeds and prints /^10\\.9\\.0\\.1\\s/",
        "PASS the site's DHCP server (dnsmasq, addresses only) leased 52:54:00:12:34:56 an address",
        "PASS proxyDHCP offered iPXE (user class iPXE) its boot script URL with its MAC",
        "PASS the server's node record of 52:54:00:12:34:56 shows the booted stage",
        "PASS the server's node record of 52:54:00:12:34:56 holds its inventory (vendor QEMU)",
    ];
    for check in common.iter().chain(path) {
        assert!(out.contains(check), "missing `{check}`:\n{out}");
    }
    assert!(!out.contains("FAIL"), "{out}");
    // The server kept its state under the served dir, as `serve` does (the node registry reads it there).
    assert!(
        p.out().join(".state/objects").is_dir(),
        "no .state under {}",
        p.out().display()
    );
}

/// BIOS: the NIC's iPXE ROM asks the proxyDHCP for its script.
#[test]
fn proxy_dhcp_lab_boots_bios_through_the_nics_ipxe_rom() {
    let _vm = crate::one_at_a_time();
    proxy_dhcp_lab_boot(&[], &[]);
}

/// UEFI: OVMF's own PXE client (the NIC has no iPXE ROM) gets ipxe.efi —
/// offer on port 67, the PXE exchange on 4011, TFTP — and iPXE then asks
/// for its script.
#[test]
fn proxy_dhcp_lab_boots_uefi_through_the_firmwares_own_pxe() {
    let _vm = crate::one_at_a_time();
    proxy_dhcp_lab_boot(
        &["--uefi"],
        &[
            "PASS proxyDHCP offered the firmware's UEFI PXE client ipxe.efi (port 67)",
            "PASS proxyDHCP acked the firmware's PXE request on port 4011 with ipxe.efi",
            "PASS the firmware loaded ipxe.efi over TFTP",
        ],
    );
}
