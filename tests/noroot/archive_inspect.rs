//! `mkimage inspect` through the real binary: squashfs and cpio.gz listings,
//! and exit code 2 (never a panic) for files that are neither.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use mkimage::archive::{cpio, squashfs};

fn inspect(file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mkimage"))
        .arg("inspect")
        .arg(file)
        .output()
        .expect("cannot run mkimage")
}

#[test]
fn lists_a_squashfs() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/motd"), b"hello\n").unwrap();
    std::os::unix::fs::symlink("usr/bin", src.join("bin")).unwrap();
    let img = tmp.path().join("base.squashfs");
    let mut f = fs::File::create(&img).unwrap();
    squashfs::write_tree(&src, &mut f, &squashfs::SquashfsOptions::default()).unwrap();
    let out = inspect(&img);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("lrwxrwxrwx") && l.ends_with(" bin -> usr/bin")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("-rw-") && l.contains(" 6 etc/motd")),
        "{text}"
    );
}

#[test]
fn lists_a_cpio_gz_with_whiteouts() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("overlay.cpio.gz");
    let entries = vec![
        cpio::Entry::new("etc", cpio::EntryKind::Dir, 0o755),
        cpio::Entry::new(
            "etc/gone",
            cpio::EntryKind::CharDev { major: 0, minor: 0 },
            0,
        ),
    ];
    cpio::write_newc_gz(entries, fs::File::create(&path).unwrap(), 9).unwrap();
    let out = inspect(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("drwxr-xr-x") && l.ends_with(" etc")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.ends_with("etc/gone (whiteout)")),
        "{text}"
    );
}

#[test]
fn unknown_corrupt_or_missing_files_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8]); 4] = [
        ("text", b"just some text\n"),
        ("empty", b""),
        (
            "bad.squashfs",
            b"hsqs\x01\x00\x00\x00 not really a superblock",
        ),
        ("cut.cpio.gz", &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0x4b]),
    ];
    for (name, bytes) in cases {
        let path = tmp.path().join(name);
        fs::write(&path, bytes).unwrap();
        let out = inspect(&path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.starts_with("mkimage: ") && err.contains(name) && !err.contains("panicked"),
            "{name}: {err}"
        );
    }
    let out = inspect(&tmp.path().join("missing"));
    assert_eq!(out.status.code(), Some(2));
}
