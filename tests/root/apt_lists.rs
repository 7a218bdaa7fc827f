//! Root test of the shared apt package lists (`CACHE/apt-lists/KEY`): the
//! bootstrap and the roles' apt tasks of a basefs and of an overlay on it
//! all read and update the same lists, so an `apt-get update` after the
//! first fetches no Packages index again; and the lists never reach a task
//! layer, the squashfs or the cpio.

use crate::common;
use common::*;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Every bookworm Packages index in the shared lists, with its inode and
/// mtime: an index apt fetched again is a new file.
fn indexes() -> Vec<(PathBuf, u64, i64)> {
    let mut found = Vec::new();
    let Ok(keys) = std::fs::read_dir(shared_cache().join("apt-lists")) else {
        return found;
    };
    for key in keys.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()) {
        for file in std::fs::read_dir(key.path())
            .unwrap()
            .filter_map(|e| e.ok())
        {
            let name = file.file_name().to_string_lossy().to_string();
            if name.contains("_dists_bookworm_") && name.contains("_Packages") {
                let m = file.metadata().unwrap();
                found.push((file.path(), m.ino(), m.mtime()));
            }
        }
    }
    found.sort();
    found
}

/// The same indexes as `before`, each the same file as it was.
fn assert_not_fetched_again(before: &[(PathBuf, u64, i64)], what: &str) {
    let now = indexes();
    for old in before {
        assert!(
            now.contains(old),
            "{what} fetched {} again (before {old:?}, now {now:?})",
            old.0.display()
        );
    }
}

/// Remove apt's `lock` from the dirs of `indexes`: an update there makes
/// it again.
fn remove_apt_locks(indexes: &[(PathBuf, u64, i64)]) {
    for (index, _, _) in indexes {
        let _ = std::fs::remove_file(index.with_file_name("lock"));
    }
}

/// Whether apt updated the lists of `indexes` since `remove_apt_locks`.
fn apt_updated_there(indexes: &[(PathBuf, u64, i64)]) -> bool {
    indexes
        .iter()
        .any(|(index, _, _)| index.with_file_name("lock").exists())
}

/// Paths under `var/lib/apt/lists/` (other than the dir itself) in an
/// inspect listing.
fn listed_lists(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter(|l| l.contains("var/lib/apt/lists/"))
        .map(str::to_string)
        .collect()
}

/// Files under `var/lib/apt/lists` in the stored layers of the roles named.
fn lists_in_layers(roles: &[&str]) -> (usize, Vec<PathBuf>) {
    let (mut layers, mut found) = (0, Vec::new());
    let store = shared_cache().join("layers");
    for entry in std::fs::read_dir(&store).unwrap().filter_map(|e| e.ok()) {
        let info = std::fs::read_to_string(entry.path().join("info.txt")).unwrap_or_default();
        if !roles
            .iter()
            .any(|r| info.starts_with(&format!("role {r},")))
        {
            continue;
        }
        layers += 1;
        let lists = entry.path().join("tree/var/lib/apt/lists");
        walk(&lists, &mut found);
    }
    (layers, found)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            walk(&e.path(), found);
        } else {
            found.push(e.path());
        }
    }
}

#[test]
fn lists_are_shared_by_every_update_and_never_shipped() {
    require_root();
    require("mmdebstrap", "mmdebstrap");
    let p = Project::new();
    // A fresh first task makes every apt task below it run, not come from
    // the layer store of an earlier run.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let roles = [("listsbase", "less"), ("listsov", "file")];
    for (role, pkg) in roles {
        p.write(
            &format!("provisioners/{role}/tasks.yml"),
            &format!("- name: fresh\n  shell: echo '{nonce}' > /etc/{role}\n- name: a package\n  apt: {{update: true, pkg: [{pkg}]}}\n"),
        );
    }
    p.write(
        "provisioners/listsbare/tasks.yml",
        "- shell: echo no apt here > /etc/bare\n",
    );
    p.write("vars/base.yml", &small_vars("base", &["listsbase"]));
    p.write("vars/bare.yml", &small_vars("bare", &["listsbare"]));
    p.write(
        "vars/ov.yml",
        &format!("{}base: base\n", small_vars("ov", &["listsov"])),
    );
    let o = p.run(&["basefs", "--vars", "vars/base.yml"]);
    assert!(o.status.success(), "basefs: {}", stderr(&o));
    let before = indexes();
    assert!(!before.is_empty(), "no Packages index in the shared lists");

    // The overlay's apt task runs `apt-get update` on the mounted basefs.
    remove_apt_locks(&before);
    let o = p.run(&["overlay", "--vars", "vars/ov.yml"]);
    assert!(o.status.success(), "overlay: {}", stderr(&o));
    assert!(
        apt_updated_there(&before),
        "the overlay's update did not use the shared lists"
    );
    assert_not_fetched_again(&before, "the overlay's apt-get update");
    // A fresh bootstrap: mmdebstrap's update alone (the role has no apt task).
    remove_apt_locks(&before);
    let o = p.run(&["basefs", "--vars", "vars/bare.yml", "--no-cache"]);
    assert!(o.status.success(), "basefs --no-cache: {}", stderr(&o));
    assert!(
        apt_updated_there(&before),
        "mmdebstrap's update did not use the shared lists"
    );
    assert_not_fetched_again(&before, "mmdebstrap's apt-get update");

    for artifact in ["base.squashfs", "bare.squashfs", "ov.cpio.gz"] {
        let listing = inspect(&p.out().join(artifact));
        assert!(lists(&listing, "usr/bin/less") || artifact != "base.squashfs");
        let shipped = listed_lists(&listing);
        assert!(shipped.is_empty(), "lists in {artifact}: {shipped:#?}");
    }
    assert!(lists(&inspect(&p.out().join("ov.cpio.gz")), "usr/bin/file"));
    let (layers, found) = lists_in_layers(&["listsbase", "listsov"]);
    assert!(layers >= 4, "the roles' 4 layers are stored ({layers})");
    assert!(found.is_empty(), "lists in task layers: {found:#?}");
    assert!(
        mounts_under(p.path()).is_empty(),
        "left mounted: {:?}",
        mounts_under(p.path())
    );
}
