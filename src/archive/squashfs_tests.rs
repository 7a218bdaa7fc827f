//! Round-trip tests of the squashfs writer through backhand's reader.

use std::fs;
use std::path::Path;

use super::*;
use crate::archive::{extract, read_file};

#[path = "../../tests/fixtures/squashfs_tree.rs"]
mod tree;
use tree::{make_tree, EPOCH};

fn write(root: &Path, opts: &SquashfsOptions) -> Vec<u8> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut f = out.reopen().unwrap();
    write_tree(root, &mut f, opts).unwrap();
    fs::read(out.path()).unwrap()
}

fn opts() -> SquashfsOptions {
    SquashfsOptions {
        source_date_epoch: EPOCH,
        ..Default::default()
    }
}

// The round trip with devices and another user's file needs root: it is
// tests/root/squashfs_devices.rs, so that `cargo test --lib` passes as any user.

#[test]
fn same_tree_gives_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    make_tree(&a, false);
    make_tree(&b, true);
    assert_eq!(write(&a, &opts()), write(&b, &opts()));
}

#[test]
fn parallel_write_gives_the_single_threaded_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    make_tree(&root, false);
    // Many small files (several fragment blocks), duplicates, zero blocks, odd tails.
    for i in 0..400u32 {
        let text: String = (0..(i * 37 % 3000))
            .map(|j| char::from(b'a' + ((i + j) % 26) as u8))
            .collect();
        fs::write(root.join(format!("etc/f{i:03}")), text).unwrap();
    }
    let mut big = vec![0u8; 5 * 65536 + 123];
    big[200_000..]
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i * 7 % 253) as u8);
    fs::write(root.join("boot/big1"), &big).unwrap();
    fs::write(root.join("boot/big2"), &big).unwrap();
    for (compressor, level) in [
        (Compressor::Zstd, None),
        (Compressor::Gzip, Some(6)),
        (Compressor::Lz4, None),
    ] {
        let o = SquashfsOptions {
            compressor,
            level,
            block_size: 65536,
            ..opts()
        };
        let run = |parallel| {
            let mut f = tempfile::tempfile().unwrap();
            let stats = write_backhand(&root, &mut f, &o, parallel).unwrap();
            f.seek(SeekFrom::Start(0)).unwrap();
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut v).unwrap();
            (v, stats)
        };
        let (parallel, (hits, unused)) = run(true);
        assert!(
            hits >= 10 && unused == 0,
            "{compressor:?}: {hits} blocks compressed ahead, {unused} planned in vain"
        );
        assert!(
            parallel == run(false).0,
            "{compressor:?}: parallel output differs"
        );
    }
}

#[test]
fn every_compressor_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    make_tree(&root, false);
    for (compressor, level) in [
        (Compressor::Gzip, Some(6)),
        (Compressor::Xz, None),
        (Compressor::Lz4, None),
        (Compressor::Zstd, Some(19)),
    ] {
        let img = dir.path().join("img");
        fs::write(
            &img,
            write(
                &root,
                &SquashfsOptions {
                    compressor,
                    level,
                    block_size: 65536,
                    ..opts()
                },
            ),
        )
        .unwrap();
        assert_eq!(
            read_file(&img, "/boot/vmlinuz-6.1.0-t").unwrap(),
            b"kernel image",
            "{compressor:?}"
        );
    }
}

#[test]
fn xattrs_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    make_tree(&root, false);
    crate::archive::xattr::set(&root.join("etc/motd"), "user.test", b"1")
        .expect("the temp dir's filesystem must support user xattrs (tmpfs, ext4)");
    let out = tempfile::tempfile().unwrap();
    let err = write_tree(&root, &mut out.try_clone().unwrap(), &opts())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("etc/motd") && err.contains("user.test") && err.contains("writer: mksquashfs"),
        "{err}"
    );
}

#[test]
fn bad_options_are_errors_not_panics() {
    for bad in [
        SquashfsOptions {
            block_size: 1000,
            ..opts()
        },
        SquashfsOptions {
            level: Some(30),
            ..opts()
        },
        SquashfsOptions {
            compressor: Compressor::Lz4,
            level: Some(1),
            ..opts()
        },
    ] {
        assert!(
            matches!(bad.validate(), Err(ArchiveError::Options(_))),
            "{bad:?}"
        );
    }
    let parsed: SquashfsOptions =
        serde_yaml_ng::from_str("{compressor: gzip, level: 9, block_size: 262144}").unwrap();
    assert_eq!(
        (parsed.compressor, parsed.level, parsed.block_size),
        (Compressor::Gzip, Some(9), 262144)
    );
    assert!(serde_yaml_ng::from_str::<SquashfsOptions>("{compresor: gzip}").is_err());
}

#[test]
fn extract_follows_image_symlinks_and_globs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    make_tree(&root, false);
    let img = dir.path().join("img");
    fs::write(&img, write(&root, &opts())).unwrap();
    let dest = dir.path().join("out");
    assert_eq!(
        extract(&img, "/lib/modules/6.1.0-t", &dest).unwrap(),
        ["/lib/modules/6.1.0-t"]
    );
    assert_eq!(
        extract(&img, "/boot/vmlinuz-*", &dest).unwrap(),
        ["/boot/vmlinuz-6.1.0-t"]
    );
    assert_eq!(
        fs::read(dest.join("lib/modules/6.1.0-t/modules.dep")).unwrap(),
        b"kernel/big.ko:\n"
    );
    assert_eq!(
        fs::read(dest.join("lib/modules/6.1.0-t/kernel/big.ko"))
            .unwrap()
            .len(),
        300_000
    );
    assert_eq!(
        fs::read(dest.join("boot/vmlinuz-6.1.0-t")).unwrap(),
        b"kernel image"
    );
    assert!(
        fs::symlink_metadata(dest.join("lib")).unwrap().is_dir(),
        "the asked-for path is a real dir"
    );
    assert!(matches!(
        extract(&img, "/boot/initrd*", &dest),
        Err(ArchiveError::NotFound { .. })
    ));
}

#[test]
fn mksquashfs_writer_keeps_xattrs() {
    assert!(
        crate::exec::have("mksquashfs"),
        "this test needs mksquashfs: apt-get install -y squashfs-tools"
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    make_tree(&root, false);
    crate::archive::xattr::set(&root.join("etc/motd"), "user.test", b"1")
        .expect("the temp dir's filesystem must support user xattrs");
    let img = dir.path().join("img");
    fs::write(
        &img,
        write(
            &root,
            &SquashfsOptions {
                writer: SquashfsWriter::Mksquashfs,
                ..opts()
            },
        ),
    )
    .unwrap();
    assert_eq!(read_file(&img, "/etc/motd").unwrap(), b"hello\n");
    let listing = crate::exec::Cmd::new("unsquashfs")
        .args(["-lls"])
        .arg(&img)
        .run()
        .unwrap()
        .stdout;
    assert!(listing.contains("etc/motd"), "{listing}");
    let xattrs = crate::exec::Cmd::new("unsquashfs")
        .args(["-d"])
        .arg(dir.path().join("x"))
        .arg(&img)
        .run();
    assert!(xattrs.is_ok());
    assert_eq!(
        crate::archive::xattr::get(&dir.path().join("x/etc/motd"), "user.test").unwrap(),
        Some(b"1".to_vec())
    );
}
