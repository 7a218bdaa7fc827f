//! The basefs's module cache warmed ahead (`image::modules_warm`), against
//! the real mirror and the real kernel package: the shipped basefs's
//! warm-up, with `compress: xz` (the warm-up's only use), compresses what
//! the selection keeps, and the selection on that
//! package installed then finds every module in the cache; a warm-up that
//! fails (a `kernel_package` no mirror has) is a debug line, and the
//! build's basefs is, byte for byte, the one of a build whose warm-up ran.

use crate::common::*;

use std::fs;
use std::path::{Path, PathBuf};

use mkimage::config::Kind;
use mkimage::image::modules_warm::{WarmUp, Warmed};

/// The shipped basefs's plan with `compress: xz`, building into `out` with
/// the cache `cache`.
fn shipped_basefs(out: &Path, cache: &Path) -> mkimage::config::Plan {
    let mut plan = mkimage::image::check::validated(
        &repo().join("vars/basefs.yml"),
        &[format!("cache_dir={}", cache.display())],
        Kind::Basefs,
        out,
    )
    .expect("the shipped basefs's plan");
    plan.kernel_modules.compress = true;
    plan
}

#[test]
fn a_warmed_cache_has_every_module_the_selection_keeps() {
    require_root();
    require("depmod", "kmod");
    let d = tempfile::tempdir_in(scratch()).unwrap();
    let plan = shipped_basefs(&d.path().join("out"), &d.path().join("cache"));
    let work = d.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let warm =
        WarmUp::on_any_machine(&plan, &work).expect("the shipped basefs warms its module cache");
    let (from, warmed) = match warm.run() {
        Warmed::Compressed { from, compressed } => (from, compressed),
        other => panic!("the warm-up did not run: {other:?}"),
    };
    assert!(
        from.starts_with("linux-image-") && warmed.modules > 1000 && warmed.cached == 0,
        "{from}: {warmed:?}"
    );
    assert_eq!(
        fs::read_dir(&work).unwrap().count(),
        0,
        "the unpacked package is removed"
    );
    assert!(
        matches!(warm.run(), Warmed::Already { .. }),
        "a second warm-up of the same package and selection does nothing"
    );
    // The package installed (unpacked, depmod as at install time), and the
    // same selection as after the roles: every kept module from the cache.
    let root = d.path().join("installed");
    mkimage::apt::extract(&kernel_deb(&plan.cache_dir, &from), &root).unwrap();
    let summary = mkimage::image::kernel_trim::apply(&root, &plan.kernel_modules, &plan.cache_dir)
        .expect("the selection");
    let c = summary[0].compressed;
    assert_eq!(
        (c.modules, c.cached, summary[0].kept),
        (warmed.modules, warmed.modules, warmed.modules),
        "every module the selection keeps came from the cache"
    );
}

/// The `.deb` of `from` (`NAME VERSION`) in the private apt's cache.
fn kernel_deb(cache: &Path, from: &str) -> PathBuf {
    let (name, version) = from.split_once(' ').unwrap();
    let file = format!("{name}_{}_amd64.deb", version.replace(':', "%3a"));
    fs::read_dir(cache.join("apt"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("debs").join(&file))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no {file} in the private apt's cache"))
}

#[test]
fn a_failed_warm_up_is_a_debug_line_and_changes_no_byte() {
    require_root();
    require("mmdebstrap", "mmdebstrap");
    let p = Project::new();
    let build = |kernel_package: &str, out: &str| {
        role_with_default(p.path(), kernel_package);
        let vars = p.write(
            "vars/b.yml",
            &format!(
                "{}provisioners_dir: {}\nkernel_modules: {{compress: xz}}\n",
                small_vars("b", &["kernel"]),
                p.path().join("provisioners").display()
            ),
        );
        let o = mkimage()
            .env("RUST_LOG", "debug")
            .env(mkimage::image::modules_warm::ENV, "1")
            .args(["basefs", "--vars"])
            .arg(&vars)
            .arg("--out")
            .arg(p.path().join(out))
            .output()
            .unwrap();
        assert!(o.status.success(), "{kernel_package}: {}", stderr(&o));
        let sha = fs::read_to_string(p.path().join(out).join("b.squashfs.sha256")).unwrap();
        (
            stderr(&o),
            sha.split_whitespace().next().unwrap().to_string(),
        )
    };
    let (failed_log, failed) = build("linux-image-no-such-kernel", "failed");
    assert!(
        failed_log.contains("no module cache warm-up")
            && failed_log.contains("linux-image-no-such-kernel"),
        "{failed_log}"
    );
    // Through the shared cache: warmed now, before, or stopped by a
    // selection that started first (the bootstrap and the roles' layers
    // come from the cache too).
    let (ran_log, ran) = build("linux-image-amd64", "ran");
    assert!(
        ["warmed the module cache", "was warm already", "stopped"]
            .iter()
            .any(|s| ran_log.contains(s)),
        "{ran_log}"
    );
    assert_eq!(failed, ran, "the basefs has the same bytes either way");
}

/// The initrd tests' kernel role (it installs `linux-image-amd64` by that
/// name) under `dir/provisioners`, with `kernel_package` as its default.
fn role_with_default(dir: &Path, kernel_package: &str) {
    let from = repo().join("tests/initrd_support/provisioners/kernel");
    let to = dir.join("provisioners/kernel");
    fs::create_dir_all(to.join("files")).unwrap();
    fs::copy(from.join("tasks.yml"), to.join("tasks.yml")).unwrap();
    for f in fs::read_dir(from.join("files")).unwrap() {
        let f = f.unwrap();
        fs::copy(f.path(), to.join("files").join(f.file_name())).unwrap();
    }
    fs::write(
        to.join("defaults.yml"),
        format!("kernel_package: {kernel_package}\n"),
    )
    .unwrap();
}
