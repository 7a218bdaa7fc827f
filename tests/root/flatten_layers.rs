//! Task layers flattened into one upper dir, with what only root can make:
//! overlayfs's whiteouts and its `trusted.overlay.opaque` xattr (a
//! `trusted.*` xattr needs CAP_SYS_ADMIN). Moved from `image::flatten`'s
//! unit tests so that `cargo test --lib` passes as any user.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::require_root;
use mkimage::archive::xattr;
use mkimage::image::flatten::{flatten, visible};

const OPAQUE: &str = "trusted.overlay.opaque";

fn whiteout(p: &Path) {
    use nix::sys::stat::{mknod, Mode, SFlag};
    mknod(p, SFlag::S_IFCHR, Mode::empty(), 0).expect("whiteouts need root (CAP_MKNOD)");
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Layers as overlayfs leaves them for four tasks over a lower dir.
#[test]
fn layers_merge_as_one_upper() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let (base, l1, l2, l3, out) = (
        d.path().join("base"),
        d.path().join("l1"),
        d.path().join("l2"),
        d.path().join("l3"),
        d.path().join("out"),
    );
    make_layers(&base, &l1, &l2, &l3);
    flatten(
        &[l3.clone(), l2.clone(), l1.clone()],
        std::slice::from_ref(&base),
        &out,
    )
    .unwrap();
    let listing = listing(&out);
    assert_eq!(
        listing,
        [
            "etc/",
            "etc/keep.d/",
            "etc/keep.d/c",
            "etc/new",
            "etc/old (whiteout)",
            "opt/",
            "opt/gone (whiteout)",
            "srv/",
            "srv/data/",
            "srv/data/more",
            "srv/data/only"
        ]
    );
    assert_eq!(fs::read_to_string(out.join("etc/new")).unwrap(), "n2");
    assert_eq!(
        xattr::get(&out.join("srv/data"), OPAQUE)
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        fs::metadata(out.join("etc/keep.d"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700,
        "attributes of the top-most layer"
    );
    assert!(
        visible(std::slice::from_ref(&base), Path::new("etc/keep.d/a"))
            && !visible(std::slice::from_ref(&base), Path::new("etc/tmp"))
    );
    assert!(
        !visible(&[l1.clone(), base.clone()], Path::new("srv/data/sub")),
        "hidden by an opaque dir"
    );
    assert!(
        !visible(&[l2.clone(), base], Path::new("etc/old")),
        "hidden by a whiteout"
    );
}

/// A lower dir and three task layers over it, as overlayfs leaves them.
fn make_layers(base: &Path, l1: &Path, l2: &Path, l3: &Path) {
    for dir in ["etc/keep.d", "srv/data/sub", "opt"] {
        fs::create_dir_all(base.join(dir)).unwrap();
    }
    for f in ["etc/old", "etc/keep.d/a", "srv/data/sub/b", "opt/gone"] {
        fs::write(base.join(f), f).unwrap();
    }
    // Task 1: adds etc/tmp and etc/new, replaces srv/data (opaque), removes opt/gone.
    for dir in ["etc", "srv/data", "opt"] {
        fs::create_dir_all(l1.join(dir)).unwrap();
    }
    fs::write(l1.join("etc/tmp"), "t").unwrap();
    fs::write(l1.join("etc/new"), "n1").unwrap();
    xattr::set(&l1.join("srv/data"), OPAQUE, b"y").unwrap();
    fs::write(l1.join("srv/data/only"), "o").unwrap();
    whiteout(&l1.join("opt/gone"));
    // Task 2: removes etc/tmp (made by task 1) and etc/old (the base's), rewrites etc/new.
    fs::create_dir_all(l2.join("etc")).unwrap();
    whiteout(&l2.join("etc/tmp"));
    whiteout(&l2.join("etc/old"));
    fs::write(l2.join("etc/new"), "n2").unwrap();
    // Task 3: adds a file under the opaque dir, and etc/keep.d/c.
    fs::create_dir_all(l3.join("srv/data")).unwrap();
    fs::create_dir_all(l3.join("etc/keep.d")).unwrap();
    fs::set_permissions(l3.join("etc/keep.d"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(l3.join("srv/data/more"), "m").unwrap();
    fs::write(l3.join("etc/keep.d/c"), "c").unwrap();
}

/// Every path under `out` (not itself), dirs ending in `/`, whiteouts marked.
fn listing(out: &Path) -> Vec<String> {
    mkimage::archive::walk(out)
        .unwrap()
        .iter()
        .skip(1)
        .map(|i| {
            let kind = if is_whiteout(&i.meta) {
                " (whiteout)"
            } else if i.meta.is_dir() {
                "/"
            } else {
                ""
            };
            format!("{}{kind}", i.rel.display())
        })
        .collect()
}
