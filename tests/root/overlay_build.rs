//! Root end-to-end tests of `mkimage overlay`: a real basefs, roles run on
//! the mounted union, the upper dir packed as cpio.gz — then unpacked onto a
//! tmpfs upper and mounted over the basefs exactly as the initrd does.

use crate::common;
use common::*;

use std::process::Command;
use std::sync::OnceLock;

/// A small basefs with files for the overlay role to delete and replace.
fn base_project() -> &'static Project {
    static BASE: OnceLock<Project> = OnceLock::new();
    BASE.get_or_init(|| {
        require_root();
        require("busybox", "busybox-static");
        let p = Project::new();
        p.write(
            "provisioners/seed/tasks.yml",
            "- shell: |\n    echo keep > /etc/keep-me\n    echo doomed > /etc/delete-me\n    mkdir -p /srv/data/sub\n    echo a > /srv/data/a\n    echo b > /srv/data/sub/b\n",
        );
        p.write(
            "provisioners/change/tasks.yml",
            "- name: add\n  copy: {src: added, dest: /etc/added, mode: \"0600\"}\n- name: delete\n  file: {path: /etc/delete-me, state: absent}\n- name: replace dir\n  shell: rm -rf /srv/data && mkdir /srv/data && echo new > /srv/data/only\n- name: a build-only file\n  shell: echo junk > /var/log/build.log && echo junk > /tmp/scratch\n",
        );
        p.write("provisioners/change/files/added", "from the overlay\n");
        p.write("provisioners/fails/tasks.yml", "- name: explode\n  command: [/bin/false]\n");
        p.write("vars/base.yml", &small_vars("base", &["seed"]));
        p.write("vars/ov.yml", &format!("{}base: base\n", small_vars("ov", &["change"])));
        let o = p.run(&["basefs", "--vars", "vars/base.yml"]);
        assert!(o.status.success(), "basefs: {}", stderr(&o));
        p
    })
}

/// As the initrd does: unpack each overlay with busybox cpio into its own
/// dir on a tmpfs, mount overlayfs with them (last one top-most) over the
/// squashfs and an empty tmpfs upper, and run `script` in the merged root.
fn union_view(base: &std::path::Path, overlays: &[std::path::PathBuf], script: &str) -> String {
    let dir = tempfile::tempdir_in(scratch()).unwrap();
    let mut unpack = String::new();
    let mut lowers = vec!["$D/lower".to_string()];
    for (i, o) in overlays.iter().enumerate() {
        unpack.push_str(&format!("mkdir $D/rw/ov{i} && (cd $D/rw/ov{i} && gzip -dc '{}' | busybox cpio -i -d -m 2>/dev/null)\n", o.display()));
        lowers.insert(0, format!("$D/rw/ov{i}"));
    }
    let full = format!(
        "D=\"$1\"; mkdir -p $D/lower $D/rw $D/root\n\
         mount -t squashfs -o loop,ro '{}' $D/lower\n\
         mount -t tmpfs tmpfs $D/rw && mkdir $D/rw/upper $D/rw/work\n\
         {unpack}\
         mount -t overlay overlay -o lowerdir={},upperdir=$D/rw/upper,workdir=$D/rw/work $D/root\n\
         cd $D/root\n{script}",
        base.display(),
        lowers.join(":")
    );
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-ec", &full, "sh"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "union view failed: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    stdout(&o)
}

#[test]
fn overlay_reproduces_the_roles_view_and_is_deterministic() {
    let p = base_project();
    let o = p.run(&["overlay", "--vars", "vars/ov.yml"]);
    assert!(o.status.success(), "overlay: {}", stderr(&o));
    let first = std::fs::read_to_string(p.out().join("ov.cpio.gz.sha256")).unwrap();
    let view = union_view(
        &p.out().join("base.squashfs"),
        &[p.out().join("ov.cpio.gz")],
        "cat etc/added; stat -c %a etc/added; test -e etc/delete-me && echo delete-me=present; cat etc/keep-me; ls -A srv/data | tr '\\n' ' '; echo; test -e var/log/build.log && echo log=present; ls tmp | wc -l",
    );
    assert_eq!(
        view, "from the overlay\n600\nkeep\nonly \n0\n",
        "merged view"
    );

    // Nothing of the basefs that the role left alone is in the overlay.
    let listing = mkimage()
        .arg("inspect")
        .arg(p.out().join("ov.cpio.gz"))
        .output()
        .unwrap();
    assert!(listing.status.success(), "{}", stderr(&listing));
    let text = stdout(&listing);
    assert!(text.contains("etc/added"), "{text}");
    assert!(
        !text.contains("etc/keep-me"),
        "unchanged basefs file in the overlay:\n{text}"
    );
    assert!(
        !text.contains("var/log/build.log") && !text.contains("etc/resolv.conf"),
        "build-only file:\n{text}"
    );

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.out().join("manifest.json")).unwrap()).unwrap();
    let entry = &manifest["artifacts"]["ov.cpio.gz"];
    let base_sha = std::fs::read_to_string(p.out().join("base.squashfs.sha256")).unwrap();
    assert_eq!(
        entry["base"]["sha256"],
        base_sha.split_whitespace().next().unwrap()
    );

    // Built again from nothing cached (an unchanged build would be skipped).
    let o = p.run(&["overlay", "--vars", "vars/ov.yml", "--no-cache"]);
    assert!(o.status.success(), "second overlay: {}", stderr(&o));
    let second = std::fs::read_to_string(p.out().join("ov.cpio.gz.sha256")).unwrap();
    assert_eq!(first, second, "same inputs gave different overlays");
}

#[test]
fn stacked_overlays_apply_in_order() {
    let p = base_project();
    p.write(
        "provisioners/first/tasks.yml",
        "- shell: echo one > /etc/layer && echo first > /etc/first-only\n",
    );
    p.write("provisioners/second/tasks.yml", "- shell: test \"$(cat /etc/layer)\" = one && echo two > /etc/layer && rm /etc/first-only\n");
    p.write(
        "vars/first.yml",
        &format!("{}base: base\n", small_vars("first", &["first"])),
    );
    p.write(
        "vars/second.yml",
        &format!(
            "{}base: base\nparents: [first]\n",
            small_vars("second", &["second"])
        ),
    );
    for v in ["vars/first.yml", "vars/second.yml"] {
        let o = p.run(&["overlay", "--vars", v]);
        assert!(o.status.success(), "{v}: {}", stderr(&o));
    }
    let view = union_view(
        &p.out().join("base.squashfs"),
        &[
            p.out().join("first.cpio.gz"),
            p.out().join("second.cpio.gz"),
        ],
        "cat etc/layer; test -e etc/first-only && echo first-only=present; true",
    );
    assert_eq!(view, "two\n");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.out().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["artifacts"]["second.cpio.gz"]["parents"][0]["file"],
        "first.cpio.gz"
    );
}

#[test]
fn bad_overlay_inputs_fail_cleanly() {
    let p = base_project();
    // Parent overlay missing.
    p.write(
        "vars/orphan.yml",
        &format!(
            "{}base: base\nparents: [nosuch]\n",
            small_vars("orphan", &["change"])
        ),
    );
    let o = p.run(&["overlay", "--vars", "vars/orphan.yml"]);
    assert_failure_of(
        p,
        &o,
        2,
        &["overlay `nosuch` not found", "build it first"],
        Some("orphan"),
    );
    // A role that fails.
    p.write(
        "vars/failing.yml",
        &format!("{}base: base\n", small_vars("failing", &["fails"])),
    );
    let o = p.run(&["overlay", "--vars", "vars/failing.yml"]);
    assert_failure_of(
        p,
        &o,
        1,
        &["role `fails`, task `explode`", "exit status 1"],
        Some("failing"),
    );

    // basefs missing: a fresh output dir.
    let empty = Project::new();
    empty.write("provisioners/change/tasks.yml", "- shell: \"true\"\n");
    empty.write("vars/ov.yml", &small_vars("ov", &["change"]));
    let o = empty.run(&["overlay", "--vars", "vars/ov.yml"]);
    assert_clean_failure(
        &empty,
        &o,
        2,
        &["no basefs in", "/builds: build one first", "mkimage basefs"],
    );
    // basefs that is not a squashfs.
    empty.write("builds/junk.squashfs", "not an image");
    empty.write(
        "vars/ov2.yml",
        &format!("{}base: junk.squashfs\n", small_vars("ov2", &["change"])),
    );
    let o = empty.run(&["overlay", "--vars", "vars/ov2.yml"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not a squashfs image"),
        "{}",
        stderr(&o)
    );
    assert!(mounts_under(empty.path()).is_empty());
}
