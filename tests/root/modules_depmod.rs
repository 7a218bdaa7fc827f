//! depmod beside xz (`image::modules_shadow`) on a real Debian kernel's
//! modules (the initrd tests' basefs fixture, made uncompressed again, as
//! the kernel package ships them): what the basefs build now writes into
//! the modules dir is, byte for byte, what xz first and depmod on the
//! compressed tree wrote before: `modules.dep`, `modules.alias`, the
//! `.bin` indexes, `modules.order` and every module.

use crate::basefs_modules::modules_dir;
use crate::common;
use crate::initrd_support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use mkimage::image::{kernel_trim, modules_xz};

#[test]
fn depmod_beside_xz_writes_what_depmod_after_xz_did() {
    common::require("cp", "coreutils");
    let (tree, _image) = initrd_support::basefs_fixture();
    let (fixture, version) = modules_dir(&tree);
    let scratch = tempfile::tempdir_in(common::scratch()).unwrap();
    let cache = scratch.path().join("cache");
    let (a, b) = (scratch.path().join("a"), scratch.path().join("b"));
    for root in [&a, &b] {
        as_the_package_installs_it(&tree, &fixture, root, &version);
    }
    let sel = mkimage::config::ModuleSelection {
        drop: Vec::new(),
        keep: Vec::new(),
        compress: true,
    };
    let summary = kernel_trim::apply(&a, &sel, &cache).expect("selection with depmod beside xz");
    assert_eq!(summary[0].dropped, 0);
    // Before: every module compressed, modules.order renamed, then depmod.
    let dir_b = b.join(fixture.strip_prefix(&tree).unwrap());
    modules_xz::compress_tree(&dir_b.join("kernel"), &cache.join(modules_xz::CACHE_DIR)).unwrap();
    let order = fs::read_to_string(dir_b.join("modules.order")).unwrap();
    let renamed: String = order.lines().map(|l| format!("{l}.xz\n")).collect();
    fs::write(dir_b.join("modules.order"), renamed).unwrap();
    kernel_trim::depmod(&b, &version).unwrap();

    let dir_a = a.join(fixture.strip_prefix(&tree).unwrap());
    let (got, want) = (contents(&dir_a), contents(&dir_b));
    for index in [
        "modules.dep",
        "modules.dep.bin",
        "modules.alias",
        "modules.alias.bin",
        "modules.softdep",
        "modules.symbols",
        "modules.symbols.bin",
        "modules.builtin.bin",
        "modules.builtin.alias.bin",
        "modules.devname",
        "modules.order",
    ] {
        let file = PathBuf::from(index);
        assert!(want.contains_key(&file), "depmod wrote no {index}");
        assert!(
            got.get(&file) == want.get(&file),
            "{index} differs from depmod's on the compressed tree"
        );
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    let differ: Vec<&PathBuf> = got.keys().filter(|k| got.get(*k) != want.get(*k)).collect();
    assert!(differ.is_empty(), "files differ: {differ:?}");
    assert!(
        got.keys().any(|k| k.ends_with("e1000e.ko.xz")) && !got.keys().any(|k| k.ends_with(".ko")),
        "the modules are stored as .ko.xz only"
    );
    let left: Vec<_> = fs::read_dir(&a)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".mkimage-depmod")
        })
        .collect();
    assert!(left.is_empty(), "the shadow is removed: {left:?}");
}

/// `root`: the fixture tree (hard links; only depmod's chroot reads it)
/// with a copy of its modules dir, which holds them as the kernel package
/// installs them (plain `.ko`), and depmod's files for that.
fn as_the_package_installs_it(tree: &Path, fixture: &Path, root: &Path, version: &str) {
    let out = std::process::Command::new("cp")
        .arg("-al")
        .arg(tree)
        .arg(root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let dir = root.join(fixture.strip_prefix(tree).unwrap());
    fs::remove_dir_all(&dir).unwrap();
    for item in mkimage::archive::walk::walk(fixture).unwrap() {
        let to = dir.join(&item.rel);
        if item.meta.is_dir() {
            fs::create_dir_all(&to).unwrap();
        } else if item.meta.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&item.abs).unwrap(), &to).unwrap();
        } else {
            fs::copy(&item.abs, &to).unwrap();
        }
    }
    kernel_trim::depmod(root, version).unwrap();
}

/// Every file under `dir` (a symlink as its target), by path.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    mkimage::archive::walk::walk(dir)
        .unwrap()
        .into_iter()
        .filter(|i| !i.meta.is_dir())
        .map(|i| {
            let bytes = if i.meta.is_symlink() {
                fs::read_link(&i.abs)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                fs::read(&i.abs).unwrap()
            };
            (i.rel, bytes)
        })
        .collect()
}
