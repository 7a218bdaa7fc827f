//! The squashfs writer's round trip through the reader with what only root
//! can make: character and block devices, a file owned by another user
//! (and its setuid bit, which chown clears), beside every other file type.
//! (Moved from `archive::squashfs`'s unit tests so that `cargo test --lib`
//! passes as any user; the rest of the round trip tests are still there.)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::require_root;
use mkimage::archive::SquashfsOptions;
use mkimage::archive::{read_entries, read_file, write_tree, ArchiveError, ListEntry};

#[path = "../fixtures/squashfs_tree.rs"]
mod tree;
use tree::{make_tree, EPOCH};

fn find<'a>(entries: &'a [ListEntry], path: &str) -> &'a ListEntry {
    entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("{path} missing from {entries:#?}"))
}

fn mknod(path: &Path, kind: nix::sys::stat::SFlag, mode: u32, (major, minor): (u64, u64)) {
    let mode = nix::sys::stat::Mode::from_bits_truncate(mode);
    nix::sys::stat::mknod(path, kind, mode, nix::sys::stat::makedev(major, minor)).unwrap();
}

#[test]
fn round_trip_keeps_types_modes_owners_and_clamps_mtimes() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    make_tree(&root, false);
    use nix::sys::stat::SFlag;
    mknod(&root.join("etc/null"), SFlag::S_IFCHR, 0o666, (1, 3));
    mknod(&root.join("etc/blk"), SFlag::S_IFBLK, 0o660, (259, 300));
    fs::set_permissions(root.join("etc/null"), fs::Permissions::from_mode(0o666)).unwrap(); // past the umask
    std::os::unix::fs::lchown(root.join("etc/motd"), Some(1000), Some(1001)).unwrap();
    fs::set_permissions(root.join("etc/motd"), fs::Permissions::from_mode(0o4755)).unwrap(); // chown cleared setuid
    let _sock = std::os::unix::net::UnixListener::bind(root.join("etc/sock")).unwrap();
    let img = dir.path().join("img");
    let opts = SquashfsOptions {
        source_date_epoch: EPOCH,
        ..Default::default()
    };
    write_tree(&root, &mut fs::File::create(&img).unwrap(), &opts).unwrap();
    let bytes = fs::read(&img).unwrap();

    let entries = read_entries(&img).unwrap();
    let motd = find(&entries, "etc/motd");
    assert_eq!(
        (motd.mode, motd.uid, motd.gid, motd.size, motd.mtime),
        (libc::S_IFREG | 0o4755, 1000, 1001, 6, 1_000_000)
    );
    assert_eq!(find(&entries, "etc/empty").size, 0);
    assert_eq!(find(&entries, "etc/fifo").mode, libc::S_IFIFO | 0o600);
    assert_eq!(find(&entries, "etc/sock").file_type(), libc::S_IFSOCK);
    let null = find(&entries, "etc/null");
    assert_eq!((null.mode, null.rdev), (libc::S_IFCHR | 0o666, (1, 3)));
    assert_eq!(find(&entries, "etc/blk").rdev, (259, 300));
    assert_eq!(find(&entries, "lib").target.as_deref(), Some("usr/lib"));
    assert_eq!(
        find(&entries, "etc").mtime,
        EPOCH,
        "a directory made now is clamped to the epoch"
    );
    assert_eq!(read_file(&img, "/etc/motd").unwrap(), b"hello\n");
    let big = read_file(&img, "/lib/modules/6.1.0-t/kernel/big.ko").unwrap();
    assert_eq!(
        big,
        fs::read(root.join("usr/lib/modules/6.1.0-t/kernel/big.ko")).unwrap()
    );
    assert_eq!(
        read_file(&img, "vmlinuz").unwrap(),
        b"kernel image",
        "a symlink is followed"
    );
    assert!(matches!(
        read_file(&img, "/etc/nope"),
        Err(ArchiveError::NotFound { .. })
    ));
    // The superblock's mkfs time (bytes 8..12) is the epoch.
    assert_eq!(
        u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as u64,
        EPOCH
    );
}
