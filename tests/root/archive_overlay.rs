//! Root tests of the archives against the real kernel: an overlayfs upper
//! dir packed in overlay mode and unpacked (with busybox cpio, as the initrd
//! does) onto a fresh tmpfs upper gives the same merged view; a squashfs we
//! write loop-mounts and holds the source tree. Every mount happens inside
//! `unshare -m`, so it vanishes with that process whatever happens.

use std::fs;
use std::io::BufWriter;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use mkimage::archive::{cpio, squashfs, tree};

fn require(ok: bool, what: &str) {
    assert!(ok, "this test needs {what}");
}

fn prerequisites() {
    require(
        nix::unistd::geteuid().is_root(),
        "root (mounts): run `cargo test` as root",
    );
    require(
        mkimage::exec::have("unshare") && mkimage::exec::have("mount"),
        "unshare and mount: apt-get install -y util-linux mount",
    );
    require(
        mkimage::exec::have("busybox"),
        "busybox: apt-get install -y busybox-static",
    );
}

/// Run a shell script in a private mount namespace; its stdout, or a panic with its stderr.
fn in_mount_ns(script: &str, dir: &Path) -> String {
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-euc", script, "sh"])
        .arg(dir)
        .output()
        .expect("cannot run unshare");
    assert!(
        out.status.success(),
        "script failed ({}):\n{script}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_file(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

#[test]
fn overlay_upper_round_trips_through_cpio() {
    prerequisites();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    upper_made_through_a_real_overlay(d);

    let opts = tree::TreeOptions {
        source_date_epoch: 1_700_000_000,
        exclude: vec!["var/log/*".into()],
        overlay_lowers: Some(vec![d.join("lower")]),
    };
    let entries = tree::tree_entries(&d.join("upper"), &opts).unwrap();
    let file = fs::File::create(d.join("overlay.cpio.gz")).unwrap();
    cpio::write_newc_gz(entries, BufWriter::new(file), 6).unwrap();

    inspect_shows_whiteouts_and_no_excluded_file(&d.join("overlay.cpio.gz"));

    // What the initrd does: unpack onto a fresh tmpfs upper, mount over the lower.
    let view = in_mount_ns(
        r#"cd "$1"; mkdir -p t merged2
        mount -t tmpfs tmpfs t && mkdir t/upper t/work
        (cd t/upper && busybox gzip -dc ../../overlay.cpio.gz | busybox cpio -idm 2>/dev/null)
        mount -t overlay overlay -o lowerdir=lower,upperdir=t/upper,workdir=t/work merged2
        cd merged2 && find . | sort && echo --- && cat etc/keep etc/added"#,
        d,
    );
    let (tree_view, contents) = view.split_once("---\n").unwrap();
    let paths: Vec<&str> = tree_view.lines().collect();
    assert_eq!(
        paths,
        [
            ".",
            "./dir",
            "./dir/new",
            "./etc",
            "./etc/added",
            "./etc/keep",
            "./usr",
            "./usr/share",
            "./usr/share/doc",
            "./usr/share/doc/x",
            "./var",
            "./var/log"
        ],
        "merged view after unpacking:\n{view}"
    );
    assert_eq!(contents, "changed\nadded\n");
}

/// A lower dir, and an upper dir holding a role's changes made through a
/// real overlay mount (the kernel's whiteouts and opaque dir).
fn upper_made_through_a_real_overlay(d: &Path) {
    for f in [
        "etc/keep",
        "etc/deleted",
        "dir/a",
        "dir/b",
        "dir/sub/c",
        "usr/share/doc/x",
    ] {
        write_file(&d.join("lower").join(f), &format!("lower {f}\n"));
    }
    // The role's changes, made through a real overlay mount.
    in_mount_ns(
        r#"cd "$1"; mkdir -p upper work merged
        mount -t overlay overlay -o lowerdir=lower,upperdir=upper,workdir=work merged
        echo added > merged/etc/added
        echo changed > merged/etc/keep
        rm merged/etc/deleted
        rm -rf merged/dir && mkdir merged/dir && touch merged/dir/new
        mkdir -p merged/var/log && echo build > merged/var/log/build.log
        umount merged"#,
        d,
    );
    assert_eq!(
        mkimage::archive::xattr::get(&d.join("upper/dir"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..]),
        "the kernel marked the replaced dir opaque"
    );
}

/// `mkimage inspect` lists the whiteouts and the new files, and not the
/// excluded build log.
fn inspect_shows_whiteouts_and_no_excluded_file(archive: &Path) {
    let listing = Command::new(env!("CARGO_BIN_EXE_mkimage"))
        .arg("inspect")
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        listing.status.success(),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let listing = String::from_utf8_lossy(&listing.stdout);
    for want in [
        "etc/deleted (whiteout)",
        "dir/a (whiteout)",
        "dir/sub (whiteout)",
        " dir/new",
        " etc/added",
    ] {
        assert!(listing.contains(want), "inspect lacks {want:?}:\n{listing}");
    }
    assert!(
        !listing.contains("build.log"),
        "excluded file archived:\n{listing}"
    );
}

#[test]
fn squashfs_loop_mounts_with_the_source_tree() {
    prerequisites();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let src = d.join("src");
    write_file(&src.join("etc/motd"), "hello\n");
    write_file(&src.join("usr/bin/tool"), &"x".repeat(400_000));
    write_file(&src.join("usr/lib/empty"), "");
    fs::set_permissions(src.join("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink("usr/lib", src.join("lib")).unwrap();
    std::os::unix::fs::lchown(src.join("etc/motd"), Some(123), Some(456)).unwrap();
    nix::sys::stat::mknod(
        &src.join("etc/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    nix::unistd::mkfifo(
        &src.join("etc/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();

    let img = d.join("base.squashfs");
    let mut file = fs::File::create(&img).unwrap();
    squashfs::write_tree(
        &src,
        &mut file,
        &squashfs::SquashfsOptions {
            source_date_epoch: 1_700_000_000,
            ..Default::default()
        },
    )
    .unwrap();
    drop(file);

    // Same listing (type, mode, owner, size of files, link target, device) and checksums.
    let list = r#"find . -printf '%y %m %U %G %l ' \( -type f -printf '%s' -o -printf '-' \) -printf ' %p\n' | sort
        find . -type c -exec stat -c '%t,%T %n' {} + ; find . -type f -exec sha256sum {} + | sort"#;
    let want = in_mount_ns(&format!("cd \"$1\"/src; {list}"), d);
    let got = in_mount_ns(&format!("cd \"$1\"; mkdir -p mnt; mount -o loop,ro -t squashfs base.squashfs mnt; cd mnt; {list}"), d);
    assert_eq!(got, want);
    assert!(
        want.contains("f 4755 0 0  400000 ./usr/bin/tool") && want.contains("1,3 ./etc/null"),
        "{want}"
    );
}
