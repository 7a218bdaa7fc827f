//! The basefs's kernel module selection on a real Debian kernel (the initrd
//! tests' basefs fixture, built by `mkimage basefs` with the default
//! `kernel_modules:`): dropped subsystems are gone, kept NIC and storage
//! drivers are there as plain `.ko` (the default `compress: none`) and
//! kmod resolves them from the rebuilt `modules.dep`, which names no
//! removed file; the kernel image is left out; `inspect --summary` shows
//! it; bad patterns are refused with their place.

use crate::common;
use crate::initrd_support;

use std::path::{Path, PathBuf};

use common::*;

/// (the fixture's modules dir, kernel version).
pub(crate) fn modules_dir(tree: &Path) -> (PathBuf, String) {
    let parent = tree.join("usr/lib/modules");
    let version = std::fs::read_dir(&parent)
        .expect("fixture has usr/lib/modules")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .next()
        .expect("one kernel");
    (parent.join(&version), version)
}

#[test]
fn dropped_modules_are_gone_and_kept_ones_load() {
    let (tree, _image) = initrd_support::basefs_fixture();
    let (dir, version) = modules_dir(&tree);
    let kernel = dir.join("kernel");
    dropped_dirs_are_gone_and_kept_modules_are_plain(&kernel);
    depmod_files_name_only_what_is_there(&dir, &kernel);
    kmod_resolves_kept_drivers_only(&tree, &version);
    // No kernel image in the basefs; the manifest names its package.
    assert!(
        !tree.join(format!("boot/vmlinuz-{version}")).exists(),
        "the kernel image should be left out"
    );
    let (_, image) = initrd_support::basefs_fixture();
    let pkg = initrd_support::fixture_kernel_package(&image)
        .expect("the manifest records the kernel package");
    assert_eq!(pkg.0, format!("linux-image-{version}"));
}

/// Dropped subsystems and test modules are gone; kept drivers are there as
/// plain `.ko` only (the squashfs compresses them).
fn dropped_dirs_are_gone_and_kept_modules_are_plain(kernel: &Path) {
    for gone in [
        "sound/pci",
        "drivers/gpu/drm/nouveau",
        "drivers/gpu/drm/amd",
        "drivers/media/usb",
        "drivers/net/wireless",
        "drivers/staging",
        "drivers/iio/adc",
        "arch/x86/kvm",
    ] {
        assert!(
            !kernel.join(gone).exists(),
            "{gone} should have been dropped"
        );
    }
    assert!(
        std::fs::read_dir(kernel.join("lib")).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("test_")),
        "test modules stay out"
    );
    for kept in [
        "drivers/net/ethernet/intel/e1000e/e1000e.ko",
        "drivers/net/ethernet/broadcom/tg3.ko",
        "drivers/scsi/megaraid/megaraid_sas.ko",
        "drivers/md/raid456.ko",
        "fs/xfs/xfs.ko",
        "drivers/char/ipmi/ipmi_si.ko",
        "drivers/hid/usbhid/usbhid.ko",
    ] {
        assert!(
            kernel.join(kept).is_file(),
            "{kept} should be kept (as plain .ko)"
        );
    }
    assert!(
        !kernel
            .join("drivers/net/ethernet/intel/e1000e/e1000e.ko.xz")
            .exists(),
        "kept modules are not compressed by default"
    );
}

/// modules.dep, rebuilt by depmod, names only files that are there; what
/// is left of a dropped subsystem is there because a kept module needs it;
/// modules.alias was rebuilt too.
fn depmod_files_name_only_what_is_there(dir: &Path, kernel: &Path) {
    let dep = std::fs::read_to_string(dir.join("modules.dep")).expect("modules.dep");
    assert!(
        dep.lines()
            .any(|l| l.starts_with("kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko:")),
        "modules.dep lacks e1000e"
    );
    for line in dep.lines() {
        for path in line.replace(':', " ").split_whitespace() {
            assert!(
                dir.join(path).is_file(),
                "modules.dep names {path}, which is not in the basefs"
            );
        }
    }
    // What is left of a dropped subsystem is there only because a kept
    // module needs it (its modules.dep line names it).
    let needed: std::collections::BTreeSet<&str> = dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .flat_map(|(_, d)| d.split_whitespace())
        .collect();
    for dropped in ["sound", "drivers/gpu", "drivers/media", "drivers/iio"] {
        for left in walk_files(&kernel.join(dropped)) {
            let rel = format!("kernel/{}", left.strip_prefix(kernel).unwrap().display());
            assert!(
                needed.contains(rel.as_str()),
                "{rel} was kept although no kept module needs it"
            );
        }
    }
    let alias = std::fs::read_to_string(dir.join("modules.alias")).expect("modules.alias");
    assert!(
        alias.lines().any(|l| l.ends_with(" e1000e"))
            && !alias
                .lines()
                .any(|l| l.ends_with(" snd_hda_intel") || l.ends_with(" nouveau")),
        "modules.alias was not rebuilt"
    );
}

/// kmod (as udev and modprobe in the booted system) resolves a kept
/// driver and its dependencies from the tree, and not a dropped one.
fn kmod_resolves_kept_drivers_only(tree: &Path, version: &str) {
    require("modprobe", "kmod");
    let out = std::process::Command::new("modprobe")
        .args(["--dry-run", "--show-depends", "--ignore-install", "-d"])
        .arg(tree)
        .args(["-S", version, "ixgbe"])
        .output()
        .expect("run modprobe");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "modprobe cannot resolve ixgbe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        ["/ixgbe.ko", "/mdio.ko"]
            .iter()
            .all(|m| shown.split_whitespace().any(|t| t.ends_with(m))),
        "ixgbe and its dependencies: {shown}"
    );
    let sound = std::process::Command::new("modprobe")
        .args(["--dry-run", "-d"])
        .arg(tree)
        .args(["-S", version, "snd-hda-intel"])
        .output()
        .unwrap();
    assert!(!sound.status.success(), "a dropped module must not resolve");
}

/// Every file under `dir` (none when it does not exist).
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .flat_map(|e| {
            if e.path().is_dir() {
                walk_files(&e.path())
            } else {
                vec![e.path()]
            }
        })
        .collect()
}

#[test]
fn inspect_summary_shows_directories_and_subsystems() {
    let (_tree, image) = initrd_support::basefs_fixture();
    let o = mkimage()
        .args(["inspect", "--summary"])
        .arg(&image)
        .output()
        .unwrap();
    let text = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        text.contains("by top-level directory:") && text.lines().any(|l| l.ends_with(" usr")),
        "{text}"
    );
    let modules = text
        .split("kernel ")
        .nth(1)
        .unwrap_or_else(|| panic!("no kernel section:\n{text}"));
    assert!(
        modules.lines().any(|l| l.ends_with(" drivers/net"))
            && modules.lines().any(|l| l.ends_with(" fs/xfs")),
        "{modules}"
    );
    // "  SIZE MB  N modules  SUBSYSTEM": what the selection dropped keeps at
    // most the few modules kept ones need; NICs stay.
    let count = |sub: &str| -> usize {
        modules
            .lines()
            .filter(|l| l.ends_with(&format!(" {sub}")))
            .filter_map(|l| l.split_whitespace().nth(2)?.parse::<usize>().ok())
            .sum()
    };
    assert!(count("drivers/net") > 200, "{modules}");
    assert!(
        count("sound") + count("sound/core") + count("sound/pci") <= 5
            && count("drivers/gpu") <= 2
            && count("drivers/staging") == 0,
        "{modules}"
    );
}

#[test]
fn bad_module_patterns_are_refused_with_their_place() {
    let p = Project::new();
    let base = "name: b\nmirror: http://mirror.invalid/debian\nkernel_modules:\n";
    for (body, wants) in [
        ("  drop: [sound, /drivers/gpu]\n", "kernel_modules.drop.1"),
        (
            "  keep: [kernel/drivers/net]\n",
            "leave out the leading `kernel/`",
        ),
        ("  drop: [drivers/../fs]\n", "must not contain `..`"),
        ("  compress: zstd\n", "use none"),
        ("  dorp: [sound]\n", "unknown field `dorp`"),
    ] {
        let vars = p.write("vars/b.yml", &format!("{base}{body}"));
        let o = p.run(&["check", "--vars", vars.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{body}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("b.yml:") && err.contains(wants),
            "{body}: {err}"
        );
    }
    let good = p.write(
        "vars/b.yml",
        &format!("{base}  keep: [drivers/gpu/drm/ast]\n  drop: [drivers/scsi/qla2xxx]\n"),
    );
    let o = p.run(&["check", "--vars", good.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}
