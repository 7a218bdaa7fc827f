//! The initrd build against a real Debian kernel (the basefs fixture's):
//! what the archive holds, the module closure and load order checked against
//! depmod's own `modules.dep`, determinism, and the clear errors (missing
//! module, kernel version mismatch).

use crate::initrd_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use mkimage::archive::cpio::{read_newc, ReadEntry};
use mkimage::initramfs::{self as initrd, KernelSource, DEFAULT_MODULES};

fn read_initrd(path: &Path) -> Vec<ReadEntry> {
    let file = std::fs::File::open(path).expect("open initrd");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut raw)
        .expect("initrd is gzip");
    read_newc(&raw[..]).expect("initrd is newc cpio")
}

/// module name → its dependencies' names, from depmod's modules.dep.
fn depmod_deps(tree: &Path, version: &str) -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(tree.join(format!("usr/lib/modules/{version}/modules.dep")))
        .expect("fixture has modules.dep");
    let name = |p: &str| mkimage::kmod::module_name(Path::new(p.trim())).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, deps)| (name(m), deps.split_whitespace().map(name).collect()))
        .collect()
}

#[test]
fn initrd_holds_init_busybox_and_module_closure_in_order() {
    let (tree, image) = initrd_support::basefs_fixture();
    let out = tempfile::tempdir_in("/var/tmp").unwrap();
    let opts = initrd_support::options(&image, out.path());
    let entries = initrd::build(&opts).expect("initrd build");

    let kernel = entries
        .iter()
        .find(|e| e.kind == "kernel")
        .expect("kernel entry");
    let initrd_entry = entries
        .iter()
        .find(|e| e.kind == "initrd")
        .expect("initrd entry");
    let version = kernel
        .kernel_version
        .clone()
        .expect("kernel version recorded");
    assert!(
        out.path().join("initrd.vmlinuz").is_file()
            && out.path().join("initrd.initrd.sha256").is_file()
    );
    assert_eq!(
        std::fs::metadata(out.path().join("initrd.initrd"))
            .unwrap()
            .len(),
        initrd_entry.size
    );

    let files = read_initrd(&out.path().join("initrd.initrd"));
    let by_path: BTreeMap<&str, &ReadEntry> = files.iter().map(|e| (e.path.as_str(), e)).collect();
    init_busybox_and_applets_are_packed(&files, &by_path, &version);
    modules_are_the_closure_in_load_order(&by_path, &tree, &version, &initrd_entry.modules);
}

/// init (executable, naming its kernel), static busybox and its applet
/// links, udhcpc's script, and every mtime at SOURCE_DATE_EPOCH.
fn init_busybox_and_applets_are_packed(
    files: &[ReadEntry],
    by_path: &BTreeMap<&str, &ReadEntry>,
    version: &str,
) {
    let init = by_path.get("init").expect("init in the initrd");
    assert_eq!(init.mode & 0o111, 0o111, "init is executable");
    assert!(
        String::from_utf8_lossy(&init.data).contains(version),
        "init names its kernel"
    );
    assert!(
        by_path.get("bin/busybox").is_some_and(|e| e.size > 500_000),
        "static busybox present"
    );
    for applet in [
        "bin/sh",
        "sbin/insmod",
        "sbin/switch_root",
        "usr/bin/wget",
        "usr/bin/sha256sum",
        "bin/cpio",
        "sbin/udhcpc",
    ] {
        let e = by_path
            .get(applet)
            .unwrap_or_else(|| panic!("applet link {applet} missing"));
        assert_eq!(
            e.mode & libc::S_IFMT,
            libc::S_IFLNK,
            "{applet} is a symlink"
        );
    }
    assert!(by_path.contains_key("usr/share/udhcpc/default.script"));
    assert!(
        files.iter().all(|e| e.mtime == 1_700_000_000),
        "every mtime is SOURCE_DATE_EPOCH"
    );
}

/// Modules: every requested one that is modular, plus depmod's closure,
/// listed in etc/modules.order with dependencies first; the manifest
/// (`modules`) lists them in the same order.
fn modules_are_the_closure_in_load_order(
    by_path: &BTreeMap<&str, &ReadEntry>,
    tree: &Path,
    version: &str,
    modules: &[String],
) {
    let order_text = String::from_utf8(by_path["etc/modules.order"].data.clone()).unwrap();
    let order: Vec<String> = order_text
        .lines()
        .map(|l| {
            assert!(
                by_path.contains_key(l.trim_start_matches('/')),
                "{l} listed but not packed"
            );
            Path::new(l)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches(".ko")
                .replace('-', "_")
        })
        .collect();
    assert_eq!(order, modules, "manifest lists modules in load order");
    let deps = depmod_deps(tree, version);
    let position: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut modular = BTreeSet::new();
    for wanted in DEFAULT_MODULES {
        if deps.contains_key(*wanted) {
            modular.insert(*wanted);
            assert!(
                position.contains_key(wanted),
                "requested module {wanted} missing from {order:?}"
            );
        }
    }
    for must in [
        "virtio_net",
        "e1000",
        "e1000e",
        "igb",
        "ixgbe",
        "i40e",
        "ice",
        "mlx5_core",
        "loop",
        "squashfs",
        "overlay",
    ] {
        assert!(
            modular.contains(must),
            "{must} should be a module in Debian's kernel"
        );
    }
    for m in &order {
        for dep in deps
            .get(m)
            .unwrap_or_else(|| panic!("{m} not in modules.dep"))
        {
            let at = position
                .get(dep.as_str())
                .unwrap_or_else(|| panic!("{m} needs {dep}, not in the initrd"));
            assert!(*at < position[m.as_str()], "{dep} must load before {m}");
        }
    }
}

#[test]
fn same_inputs_give_the_same_initrd() {
    let (tree, image) = initrd_support::basefs_fixture();
    let a = tempfile::tempdir_in("/var/tmp").unwrap();
    let b = tempfile::tempdir_in("/var/tmp").unwrap();
    let first = initrd::build(&initrd_support::options(&image, a.path())).expect("first build");
    let second = initrd::build(&initrd_support::options(&image, b.path())).expect("second build");
    assert_eq!(
        first[1].sha256, second[1].sha256,
        "initrd sha256 differs between identical builds"
    );
    assert_eq!(first[0].sha256, second[0].sha256);
    let on_disk = std::fs::read_to_string(a.path().join("initrd.initrd.sha256")).unwrap();
    assert!(on_disk.starts_with(&first[1].sha256));
    // The squashfs is read on demand; the extracted tree gives the same bytes.
    let c = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut opts = initrd_support::options(&tree, c.path());
    opts.basefs = Some(tree.clone());
    let from_tree = initrd::build(&opts).expect("build from the tree");
    assert_eq!(
        from_tree[1].sha256, first[1].sha256,
        "tree and squashfs sources differ"
    );
    let leftovers: Vec<_> = std::fs::read_dir(a.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with(".initrd-kernel"))
        .collect();
    assert!(leftovers.is_empty(), "scratch left behind: {leftovers:?}");
}

#[test]
fn zstd_initrd_is_readable() {
    let (tree, _image) = initrd_support::basefs_fixture();
    let out = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut opts = initrd_support::options(&tree, out.path());
    opts.kernel = KernelSource::Basefs(tree.clone());
    opts.compression = initrd::Compression::Zstd { level: 19 };
    opts.modules = vec!["squashfs".into(), "overlay".into()];
    initrd::build(&opts).expect("zstd initrd");
    let raw =
        zstd::stream::decode_all(std::fs::File::open(out.path().join("initrd.initrd")).unwrap())
            .expect("zstd stream");
    let files = read_initrd_raw(&raw);
    assert!(files.iter().any(|e| e.path.ends_with("/squashfs.ko")));
}

fn read_initrd_raw(raw: &[u8]) -> Vec<ReadEntry> {
    read_newc(raw).expect("newc")
}

#[test]
fn unknown_module_is_a_clear_error() {
    let (tree, _image) = initrd_support::basefs_fixture();
    let out = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut opts = initrd_support::options(&tree, out.path());
    opts.kernel = KernelSource::Basefs(tree.clone());
    opts.modules.push("e1000z".into());
    let err = format!("{:#}", initrd::build(&opts).unwrap_err());
    assert!(
        err.contains("`e1000z`") && err.contains("modules:"),
        "{err}"
    );
    assert!(
        !out.path().join("initrd.initrd").exists(),
        "nothing published on failure"
    );
}

#[test]
fn packaged_kernel_must_match_the_basefs() {
    // A basefs whose /lib/modules names another kernel than the package's.
    initrd_support::require_root();
    let fake = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::create_dir_all(fake.path().join("usr/lib/modules/5.10.0-99-amd64/kernel")).unwrap();
    let out = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut opts = initrd_support::options(fake.path(), out.path());
    opts.kernel = KernelSource::Package {
        name: "linux-image-amd64".into(),
    };
    let err = format!("{:#}", initrd::build(&opts).unwrap_err());
    assert!(
        err.contains("mismatch")
            && err.contains("5.10.0-99-amd64")
            && err.contains("linux-image-6."),
        "{err}"
    );
}

#[test]
fn packaged_kernel_builds_and_a_rebuild_downloads_nothing() {
    initrd_support::require_root();
    let (_tree, image) = initrd_support::basefs_fixture();
    let out = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut opts = initrd_support::options(&image, out.path());
    opts.kernel = KernelSource::Package {
        name: "linux-image-amd64".into(),
    };
    opts.basefs = None;
    opts.modules = vec!["virtio_net".into(), "squashfs".into()];
    let first = initrd::build(&opts).expect("initrd from the kernel package");
    let kernel_pkg = first[1]
        .packages
        .keys()
        .find(|k| k.starts_with("linux-image-6."))
        .expect("versioned kernel package recorded");
    assert!(
        kernel_pkg.ends_with(first[1].kernel_version.as_deref().unwrap()),
        "{kernel_pkg} vs {:?}",
        first[1].kernel_version
    );
    assert!(
        first[1].modules.contains(&"virtio_ring".to_string()),
        "{:?}",
        first[1].modules
    );

    // The cache now holds everything: a rebuild touches no list and no .deb.
    // The private apt's state for this source (`apt/SUITE-HASH/`).
    let apt = initrd_support::fixtures_root().join("apt-cache/apt");
    let cache = std::fs::read_dir(&apt)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy()
                    .starts_with(&format!("{}-", initrd_support::SUITE))
            })
        })
        .unwrap_or_else(|| panic!("no {} state under {}", initrd_support::SUITE, apt.display()));
    let snapshot = || -> Vec<(String, std::time::SystemTime)> {
        let mut v: Vec<_> = ["debs", "state/lists"]
            .iter()
            .flat_map(|d| std::fs::read_dir(cache.join(d)).unwrap())
            .filter_map(|e| e.ok())
            .map(|e| {
                (
                    e.path().display().to_string(),
                    e.metadata().unwrap().modified().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot();
    let again = tempfile::tempdir_in("/var/tmp").unwrap();
    opts.out_dir = again.path().to_path_buf();
    let second = initrd::build(&opts).expect("rebuild");
    assert_eq!(snapshot(), before, "the rebuild changed the download cache");
    assert_eq!(second[1].sha256, first[1].sha256);
}
