//! Shared by the initrd tests: the basefs fixture (minbase + systemd-sysv +
//! linux-image-amd64, built by `mkimage basefs`, cached under /var/tmp keyed
//! by its inputs), the shared `.deb` cache, prerequisite
//! checks that fail with what to install, and a QEMU run in a private
//! network namespace that is stopped by its pid when dropped.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mkimage::apt::AptSource;
use mkimage::exec::Cmd;
use mkimage::initramfs::{InitrdOptions, KernelSource};

/// Bump when the fixture recipe changes (5: the basefs keeps a selection of
/// the kernel's modules as plain .ko, and no kernel image).
const FIXTURE_VERSION: &str = "5";
pub const SUITE: &str = "bookworm";

pub fn fixtures_root() -> PathBuf {
    PathBuf::from("/var/tmp/mkimage-test-fixtures")
}

/// Fail (never skip) when a program is missing, naming the package.
pub fn require(program: &str, package: &str) {
    assert!(
        mkimage::exec::have(program),
        "`{program}` is missing: apt-get install -y {package}"
    );
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CI runs `cargo test --release` as root)"
    );
}

/// The basefs fixture: (extracted tree, squashfs image), built by
/// `mkimage basefs` from `tests/initrd_support/provisioners/kernel` with the
/// package and bootstrap caches every test build shares. Built once per
/// input key and reused; concurrent tests wait on a lock file.
pub fn basefs_fixture() -> (PathBuf, PathBuf) {
    require_root();
    require("mmdebstrap", "mmdebstrap");
    let support = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/initrd_support");
    let tasks = fs::read(support.join("provisioners/kernel/tasks.yml")).expect("fixture role");
    let recipe = format!(
        "v{FIXTURE_VERSION} {} {}",
        env!("CARGO_PKG_VERSION"),
        mkimage::artifact::sha256_bytes(&tasks)
    );
    let key = &mkimage::artifact::sha256_bytes(recipe.as_bytes())[..16];
    let dir = fixtures_root().join(format!("basefs-{key}"));
    fs::create_dir_all(&dir).expect("create fixture dir");
    let lock = fs::File::create(dir.with_extension("lock")).expect("create fixture lock");
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock fixture");
    let tree = dir.join("tree");
    let image = dir.join("basefs.squashfs");
    if !image.exists() {
        let vars = dir.join("fixture.yml");
        let cache = PathBuf::from("/var/tmp/mkimage-tests/cache");
        fs::write(
            &vars,
            format!(
                "name: basefs\nsuite: {SUITE}\nvariant: minbase\nsource_date_epoch: 1700000000\ncache_dir: {}\nprovisioners_dir: {}\nprovisioners: [kernel]\n",
                cache.display(),
                support.join("provisioners").display()
            ),
        )
        .expect("write fixture vars");
        eprintln!("building the basefs fixture in {} (once)", dir.display());
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mkimage"))
            .args(["basefs", "--vars"])
            .arg(&vars)
            .arg("--out")
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("run mkimage basefs");
        assert!(
            out.status.success(),
            "building the basefs fixture failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !tree.join(".complete").exists() {
        let tmp = dir.join("tree.tmp");
        let _ = fs::remove_dir_all(&tmp);
        require("unsquashfs", "squashfs-tools");
        Cmd::new("unsquashfs")
            .args(["-no-progress", "-quiet", "-d"])
            .arg(&tmp)
            .arg(&image)
            .run()
            .expect("unpack the fixture tree");
        let _ = fs::remove_dir_all(&tree);
        fs::rename(&tmp, &tree).expect("move fixture tree into place");
        fs::write(tree.join(".complete"), recipe.as_bytes()).expect("mark fixture complete");
    }
    (tree, image)
}

/// The fixture basefs's dm-verity `ROOT_HASH:HASH_OFFSET`, from the
/// manifest `mkimage basefs` wrote beside it.
pub fn fixture_verity(image: &Path) -> String {
    let dir = image.parent().expect("fixture dir");
    let manifest = mkimage::artifact::Manifest::load(dir).expect("fixture manifest");
    let entry = manifest
        .find("basefs", "basefs")
        .expect("fixture basefs in its manifest");
    entry
        .verity
        .as_ref()
        .expect("the fixture basefs has a dm-verity tree")
        .cmdline()
}

/// The `.deb` cache shared by all test builds (so reruns download nothing).
pub fn apt_source() -> AptSource {
    AptSource::new(SUITE, &fixtures_root().join("apt-cache"))
}

/// Options for an initrd built from the fixture's squashfs, into `out`.
pub fn options(image: &Path, out: &Path) -> InitrdOptions {
    let mut opts = InitrdOptions::new(
        "initrd",
        KernelSource::Basefs(image.to_path_buf()),
        apt_source(),
        out,
    );
    opts.init_template = Path::new(env!("CARGO_MANIFEST_DIR")).join("initrd/init.j2");
    opts.source_date_epoch = 1_700_000_000;
    opts.basefs = Some(image.to_path_buf());
    opts.kernel_package = fixture_kernel_package(image);
    opts
}

/// The fixture basefs's kernel package (its image is not in the basefs),
/// from the manifest beside it (`image` is the squashfs or the tree).
pub fn fixture_kernel_package(image: &Path) -> Option<(String, String)> {
    let manifest = mkimage::artifact::Manifest::load(image.parent()?).ok()?;
    let entry = manifest.find("basefs", "basefs")?;
    mkimage::initramfs::kernel_package::package_of(
        &entry.packages,
        entry.kernel_version.as_deref()?,
    )
}

/// QEMU (TCG) booting a kernel + initrd with user-mode networking, beside a
/// busybox httpd serving `serve_dir` on 127.0.0.1:`port`, both inside a
/// private network namespace: the library's one VM runner
/// (`mkimage::boottest::vm`), wrapped by `netns-qemu.sh`. Stopped (with the
/// servers) by its pid on drop.
pub struct Vm {
    vm: mkimage::boottest::vm::Vm,
}

impl Vm {
    pub fn start(
        serve_dir: &Path,
        port: u16,
        kernel: &Path,
        initrd: &Path,
        append: &str,
        serial: &Path,
    ) -> Vm {
        Vm::start_with_dns(serve_dir, port, kernel, initrd, append, serial, "-")
    }

    /// As `start`, with dnsmasq in the namespace answering `dns`
    /// (`NAME=ADDR`) — what the guest's DNS server 10.0.2.3 forwards to.
    pub fn start_with_dns(
        serve_dir: &Path,
        port: u16,
        kernel: &Path,
        initrd: &Path,
        append: &str,
        serial: &Path,
        dns: &str,
    ) -> Vm {
        use mkimage::boottest::vm::{Boot, Net, VmSpec};
        if dns != "-" {
            require("dnsmasq", "dnsmasq-base");
        }
        require("unshare", "util-linux");
        require("ip", "iproute2");
        require("busybox", "busybox-static");
        require("qemu-system-x86_64", "qemu-system-x86");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/initrd_support/netns-qemu.sh");
        let mut spec = VmSpec::netboot(serial, "");
        spec.cpus = 1;
        spec.net = Net::User { bootfile: None };
        spec.boot = Boot::Kernel {
            kernel: kernel.to_path_buf(),
            initrd: initrd.to_path_buf(),
            append: append.to_string(),
        };
        spec.wrapper = ["unshare", "-n", "-m", "--", "sh"]
            .iter()
            .map(std::ffi::OsString::from)
            .chain([
                script.into_os_string(),
                serve_dir.as_os_str().to_owned(),
                port.to_string().into(),
                dns.into(),
            ])
            .collect();
        Vm {
            vm: mkimage::boottest::vm::Vm::start(&spec).expect("start qemu in a network namespace"),
        }
    }

    pub fn log(&self) -> String {
        self.vm.log()
    }

    /// Wait until the serial log contains `needle` (true) or the VM exits /
    /// `timeout` passes (false).
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        self.vm.wait_for(needle, timeout)
    }

    /// Wait for the VM to exit by itself; true if it did within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        self.vm.wait_exit(timeout)
    }

    /// The last lines of the serial log, for assertion messages.
    pub fn tail(&self) -> String {
        self.vm.tail(60)
    }
}

/// A free TCP port on 127.0.0.1 (in the test's namespace nothing else runs,
/// so any port works there; this just avoids a fixed number).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(8080)
}
