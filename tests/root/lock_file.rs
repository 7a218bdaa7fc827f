//! Root end-to-end test of lock files: `mkimage lock` pins what a build
//! installs; a locked build installs exactly that — from the mirror, or
//! from the `.deb` cache through a local repository when the mirror does
//! not have it — and fails before building, naming the package, when a
//! locked version is nowhere to be had. `check` validates the file.

use crate::common;
use common::*;

use std::path::{Path, PathBuf};

/// A real `.deb` the mirror does not have, in the shared `.deb` cache while
/// the test runs (built reproducibly, so its sha256 and the lock that names
/// it stay the same from run to run).
struct CachedDeb {
    path: PathBuf,
    sha256: String,
}

impl CachedDeb {
    fn build(debs: &Path) -> CachedDeb {
        let dir = tempfile::tempdir_in(scratch()).unwrap();
        let root = dir.path().join("pkg");
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::create_dir_all(root.join("usr/share/mkimage-lock-test")).unwrap();
        std::fs::write(root.join("DEBIAN/control"), "Package: mkimage-lock-test\nVersion: 1.0\nArchitecture: all\nMaintainer: mkimage tests <tests@example.invalid>\nDescription: a package only the .deb cache has\n").unwrap();
        std::fs::write(
            root.join("usr/share/mkimage-lock-test/marker"),
            "from the cache\n",
        )
        .unwrap();
        let o = std::process::Command::new("sh")
            .args(["-ec", "find \"$1\" -exec touch -h -d @1700000000 {} + && dpkg-deb --root-owner-group --build \"$1\" \"$2\" >/dev/null", "sh"])
            .arg(&root)
            .arg(debs.join("mkimage-lock-test_1.0_all.deb"))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(o.status.success(), "dpkg-deb: {}", stderr(&o));
        let path = debs.join("mkimage-lock-test_1.0_all.deb");
        let sha256 = mkimage::artifact::sha256_file(&path).unwrap().1;
        CachedDeb { path, sha256 }
    }
}

impl Drop for CachedDeb {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn lock_pins_installs_and_names_what_is_missing() {
    require_root();
    require("mmdebstrap", "mmdebstrap");
    let p = Project::new();
    p.write(
        "provisioners/tools/tasks.yml",
        "- name: jq\n  apt: {pkg: [jq]}\n",
    );
    p.write(
        "vars/b.yml",
        &format!("{}lock: b.lock\n", small_vars("locked", &["tools"])),
    );
    let lock_path = p.path().join("vars/b.lock");

    let (mut lock, jq) = lock_pins_what_the_build_installs(&p, &lock_path);
    // Kept until the end: the nowhere case below must find it in the cache.
    let deb = CachedDeb::build(&shared_cache().join("debs"));
    a_version_only_the_cache_has_installs(&p, &mut lock, &lock_path, &jq, &deb);
    a_version_nowhere_fails_before_building(&p, &mut lock, &lock_path);
    // check reads the file, with its place on a bad entry.
    std::fs::write(&lock_path, "suite: bookworm\narch: amd64\npackages:\n  jq: {version: '1', sha256: nothex, filename: jq.deb}\n").unwrap();
    let o = p.run(&["check", "--vars", "vars/b.yml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("b.lock:4:") && stderr(&o).contains("packages.jq"),
        "{}",
        stderr(&o)
    );
}

/// Without the lock, `check` names the missing file and `mkimage lock`; the
/// lock then pins jq (with its .deb's sha256) and the bootstrap's packages.
fn lock_pins_what_the_build_installs(
    p: &Project,
    lock_path: &Path,
) -> (mkimage::lockfile::Lock, mkimage::lockfile::Locked) {
    let o = p.run(&["check", "--vars", "vars/b.yml"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("b.lock does not exist") && stderr(&o).contains("mkimage lock"),
        "{}",
        stderr(&o)
    );

    let o = p.run(&["lock", "--vars", "vars/b.yml"]);
    assert!(o.status.success(), "mkimage lock: {}", stderr(&o));
    assert!(stdout(&o).contains("packages locked"), "{}", stdout(&o));
    let lock = mkimage::lockfile::Lock::load(lock_path, Path::new("vars/b.yml")).unwrap();
    let jq = lock.packages.get("jq").expect("jq is locked").clone();
    let cached = shared_cache()
        .join("debs")
        .join(mkimage::lockfile::repo::cache_name("jq", &jq));
    assert_eq!(
        mkimage::artifact::sha256_file(&cached).unwrap().1,
        jq.sha256,
        "the lock holds the .deb's sha256"
    );
    assert!(
        lock.packages.contains_key("libc6") && lock.packages.contains_key("apt"),
        "the bootstrap's packages are locked too"
    );
    let o = p.run(&["check", "--vars", "vars/b.yml"]);
    assert!(o.status.success(), "check with the lock: {}", stderr(&o));
    (lock, jq)
}

/// A version only the .deb cache has (as one a mirror dropped would be)
/// installs through a local repository that stays out of the image, and
/// every installed package is its locked version.
fn a_version_only_the_cache_has_installs(
    p: &Project,
    lock: &mut mkimage::lockfile::Lock,
    lock_path: &Path,
    jq: &mkimage::lockfile::Locked,
    deb: &CachedDeb,
) {
    lock.packages.insert(
        "mkimage-lock-test".into(),
        mkimage::lockfile::Locked {
            version: "1.0".into(),
            sha256: deb.sha256.clone(),
            filename: "pool/main/m/mkimage-lock-test/mkimage-lock-test_1.0_all.deb".into(),
        },
    );
    lock.save(lock_path).unwrap();
    p.write(
        "provisioners/tools/tasks.yml",
        "- name: jq\n  apt: {pkg: [jq]}\n- name: cached only\n  apt: {pkg: [mkimage-lock-test]}\n",
    );
    let o = p.run(&["basefs", "--vars", "vars/b.yml"]);
    let log = stderr(&o);
    assert!(o.status.success(), "locked build: {log}");
    assert!(log.contains("lock:b.lock is new"), "{log}");
    let image = p.out().join("locked.squashfs");
    let read = |path: &str| {
        String::from_utf8_lossy(&mkimage::archive::read_file(&image, path).unwrap_or_default())
            .to_string()
    };
    assert_eq!(
        read("usr/share/mkimage-lock-test/marker"),
        "from the cache\n"
    );
    assert!(
        !read("etc/apt/sources.list").contains("lock-repos"),
        "the local repository stays out of the image: {}",
        read("etc/apt/sources.list")
    );
    let listing = stdout(&mkimage().arg("inspect").arg(&image).output().unwrap());
    assert!(
        !listing.contains("mkimage-lock.pref") && !listing.contains("mkimage-lock.list"),
        "pins left in the image"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.out().join("manifest.json")).unwrap()).unwrap();
    let installed = &manifest["artifacts"]["locked.squashfs"]["packages"];
    assert_eq!(installed["jq"], jq.version.as_str());
    assert_eq!(installed["mkimage-lock-test"], "1.0");
    for (name, version) in installed.as_object().unwrap() {
        assert_eq!(
            lock.packages.get(name).map(|l| l.version.as_str()),
            version.as_str(),
            "{name} is not the locked version"
        );
    }
}

/// A locked version that is nowhere: the build fails before it starts.
fn a_version_nowhere_fails_before_building(
    p: &Project,
    lock: &mut mkimage::lockfile::Lock,
    lock_path: &Path,
) {
    let before = std::fs::read(p.out().join("locked.squashfs.sha256")).unwrap();
    lock.packages.get_mut("jq").unwrap().version = "9.9-nowhere".into();
    lock.save(lock_path).unwrap();
    let o = p.run(&["basefs", "--vars", "vars/b.yml"]);
    assert_failure_of(
        p,
        &o,
        2,
        &[
            "b.lock: 1 locked package(s) are neither on the mirror nor in the .deb cache",
            "jq 9.9-nowhere (not on the mirror)",
            "mkimage lock",
        ],
        Some("nothing"),
    );
    assert!(
        !stderr(&o).contains("bootstrap bookworm"),
        "failed only after starting to build:\n{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(p.out().join("locked.squashfs.sha256")).unwrap(),
        before,
        "the artifact is untouched"
    );
}
