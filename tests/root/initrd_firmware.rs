//! NIC firmware in the initrd: with the default `firmware: true` the files
//! the lab NIC drivers declare come from Debian's non-free-firmware (the
//! basefs fixture has none), with each package's copyright; `firmware:
//! basefs` keeps the behaviour before it, and its warning, through the real
//! `mkimage initrd` command. Also: libdeflate-gunzip, which the init
//! inflates overlays with, is in the initrd with what it links.

use crate::common;
use crate::initrd_support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use common::*;
use mkimage::archive::cpio::read_newc;

fn files_of(initrd: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(initrd).expect("open initrd"))
        .read_to_end(&mut raw)
        .expect("initrd is gzip");
    read_newc(&raw[..])
        .expect("initrd is newc")
        .into_iter()
        .map(|e| (e.path, e.data))
        .collect()
}

const NIC_FIRMWARE: &[&str] = &[
    "tigon/tg3.bin",
    "tigon/tg3_tso5.bin",
    "bnx2/bnx2-mips-09-6.2.1b.fw",
    "rtl_nic/rtl8168h-2.fw",
    "intel/ice/ddp/ice.pkg",
];

#[test]
fn default_initrd_carries_debian_nic_firmware_and_licenses() {
    let (_tree, image) = initrd_support::basefs_fixture();
    let out = tempfile::tempdir_in("/var/tmp").unwrap();
    let entries = mkimage::initramfs::build(&initrd_support::options(&image, out.path()))
        .expect("initrd build");
    let files = files_of(&out.path().join("initrd.initrd"));
    for fw in NIC_FIRMWARE {
        let data = files
            .get(&format!("lib/firmware/{fw}"))
            .unwrap_or_else(|| panic!("lib/firmware/{fw} missing"));
        assert!(data.len() > 100, "{fw} is empty");
    }
    for pkg in ["firmware-bnx2", "firmware-misc-nonfree", "firmware-realtek"] {
        assert!(
            files
                .get(&format!("usr/share/doc/{pkg}/copyright"))
                .is_some_and(|c| !c.is_empty()),
            "{pkg}'s copyright missing"
        );
        assert!(
            entries[1].packages.contains_key(pkg),
            "manifest lacks {pkg}: {:?}",
            entries[1].packages.keys()
        );
    }
    // The ice DDP package is the real file, not a link into the package tree.
    assert!(files["lib/firmware/intel/ice/ddp/ice.pkg"].len() > 100_000);
    let gunzip = files
        .get("usr/bin/libdeflate-gunzip")
        .expect("libdeflate-gunzip in the initrd");
    assert!(gunzip.starts_with(b"\x7fELF"));
    assert!(
        files.contains_key("lib/x86_64-linux-gnu/libc.so.6")
            && files.contains_key("lib64/ld-linux-x86-64.so.2")
    );
    let size = std::fs::metadata(out.path().join("initrd.initrd"))
        .unwrap()
        .len();
    assert!(size < 15_000_000, "initrd is {size} bytes");
}

#[test]
fn firmware_basefs_keeps_the_old_behaviour_and_warning() {
    let (_tree, image) = initrd_support::basefs_fixture();
    let p = Project::new();
    // An output dir holding the fixture basefs and its manifest entry.
    std::fs::create_dir_all(p.out()).unwrap();
    std::fs::hard_link(&image, p.out().join("basefs.squashfs"))
        .or_else(|_| std::fs::copy(&image, p.out().join("basefs.squashfs")).map(|_| ()))
        .unwrap();
    std::fs::copy(
        image.with_file_name("manifest.json"),
        p.out().join("manifest.json"),
    )
    .unwrap();
    let cache = initrd_support::fixtures_root().join("apt-cache");
    let vars = |firmware: &str| {
        format!(
            "name: initrd\nsuite: bookworm\nbase: basefs\nkernel: basefs\nmodules: [tg3, squashfs]\nfirmware: {firmware}\ncache_dir: {}\nsource_date_epoch: 1700000000\ninit_template: {}/initrd/init.j2\n",
            cache.display(),
            env!("CARGO_MANIFEST_DIR")
        )
    };
    let file = p.write("vars/initrd.yml", &vars("basefs"));
    let o = p.run(&[
        "initrd",
        "--vars",
        file.to_str().unwrap(),
        "--out",
        p.out().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("firmware file(s) it may need are not in the kernel tree")
            && err.contains("tg3")
            && err.contains("install the firmware package in the basefs"),
        "{err}"
    );
    let files = files_of(&p.out().join("initrd.initrd"));
    assert!(
        !files.keys().any(|k| k.starts_with("lib/firmware/")),
        "firmware: basefs took firmware from elsewhere"
    );

    let file = p.write("vars/initrd.yml", &vars("true"));
    let o = p.run(&[
        "initrd",
        "--vars",
        file.to_str().unwrap(),
        "--out",
        p.out().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("not in the kernel tree"),
        "{}",
        stderr(&o)
    );
    assert!(files_of(&p.out().join("initrd.initrd")).contains_key("lib/firmware/tigon/tg3.bin"));

    let file = p.write("vars/initrd.yml", &vars("sometimes"));
    let o = p.run(&["check", "--vars", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("initrd.yml:6") && stderr(&o).contains("use true"),
        "{}",
        stderr(&o)
    );
}

/// The initrd (and its kernel) are checked before they are published: a
/// check that fails (as the lock file's pins do on a mismatch) leaves the
/// output dir as it was, with no file that no manifest lists.
#[test]
fn an_initrd_that_fails_its_check_is_never_published() {
    let (_tree, image) = initrd_support::basefs_fixture();
    let out = tempfile::tempdir_in("/var/tmp").unwrap();
    let seen = std::cell::RefCell::new(BTreeMap::new());
    let err = mkimage::initramfs::build_checked(
        &initrd_support::options(&image, out.path()),
        &|packages| {
            *seen.borrow_mut() = packages.clone();
            anyhow::bail!("the lock pins busybox-static at another version")
        },
    )
    .expect_err("the check fails the build");
    assert!(
        format!("{err:#}").contains("the lock pins busybox-static"),
        "{err:#}"
    );
    assert!(
        seen.borrow().contains_key("busybox-static"),
        "the check sees the initrd's packages: {:?}",
        seen.borrow()
    );
    let left: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.is_empty(),
        "nothing may be left in the output dir: {left:?}"
    );
}
