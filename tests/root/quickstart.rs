//! The README's quick start, as a new user runs it: a fresh clone of the
//! repository, the first command exactly as the README writes it (relative
//! default paths, from the clone's root), until `mkimage serve` answers
//! `/boot.ipxe` with a kernel line and hands out the initrd it names; then
//! the server is stopped by its process group's id.
//!
//! To keep CI within its time, the clone's `target/` is seeded with the
//! compiled dependencies of this build and its `builds/.cache/debs` with
//! hard links to the shared package cache; the command itself still
//! compiles mkimage and plays every build.

use crate::common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The first command of README's "Quick start" code block.
fn quick_start_command(readme: &str) -> String {
    let start = readme
        .find("## Quick start")
        .expect("README has a Quick start section");
    let block = readme[start..]
        .split("```")
        .nth(1)
        .expect("a code block in the Quick start");
    block
        .lines()
        .skip(1)
        .find(|l| !l.trim().is_empty())
        .expect("a command in the block")
        .trim()
        .to_string()
}

/// The body of `GET http://127.0.0.1:8080{path}`, if the server answers.
fn get(path: &str) -> Option<(u16, Vec<u8>)> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:8080{path}"))
        .output()
        .ok()?;
    let mut body = out.stdout;
    let nl = body.iter().rposition(|&b| b == b'\n')?;
    let code = String::from_utf8_lossy(&body[nl + 1..]).parse().ok()?;
    body.truncate(nl);
    Some((code, body))
}

/// Copy the dependencies' build products (not mkimage's own, not test
/// binaries) from this build's target dir into the clone's.
fn seed_target(from: &Path, to: &Path) {
    for sub in ["deps", "build", ".fingerprint"] {
        let Ok(entries) = std::fs::read_dir(from.join(sub)) else {
            continue;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().to_string();
            let ours = name.starts_with("mkimage") || name.starts_with("libmkimage");
            let product = sub != "deps"
                || [".rlib", ".rmeta", ".so", ".d"]
                    .iter()
                    .any(|x| name.ends_with(x));
            if ours || !product {
                continue;
            }
            let dest = to.join(sub);
            std::fs::create_dir_all(&dest).unwrap();
            let ok = Command::new("cp")
                .args(["-a", "--reflink=auto"])
                .arg(e.path())
                .arg(&dest)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "cannot copy {} into {}",
                e.path().display(),
                dest.display()
            );
        }
    }
}

/// Hard-link the shared package cache's .debs (apt never rewrites one in place).
fn seed_debs(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
    {
        if e.file_name().to_string_lossy().ends_with(".deb") {
            let _ = std::fs::hard_link(e.path(), to.join(e.file_name()));
        }
    }
}

#[test]
fn readme_first_command_serves_a_bootable_lab_from_a_fresh_clone() {
    require_root();
    require("git", "git");
    require("curl", "curl");
    require("mmdebstrap", "mmdebstrap");
    let p = Project::new();
    let (clone, command) = clone_and_seed(p.path());

    let log = std::fs::File::create(p.path().join("quickstart.log")).unwrap();
    let mut child = Command::new("setsid")
        .args(["bash", "-c", &command])
        .current_dir(&clone)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let stop = |child: &mut std::process::Child| {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        let _ = child.wait();
    };
    let script = wait_for_a_boot_script(&mut child, &p.path().join("quickstart.log"));
    let Some(script) = script else {
        stop(&mut child);
        panic!("no boot script with a kernel line within 25 minutes");
    };
    let initrd = script
        .lines()
        .find_map(|l| l.strip_prefix("initrd --name initrd "))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string);
    let fetched = initrd
        .as_deref()
        .and_then(|url| {
            url.split_once("127.0.0.1:8080")
                .or_else(|| url.split_once("localhost:8080"))
        })
        .and_then(|(_, path)| get(path));
    stop(&mut child);
    let (code, bytes) =
        fetched.unwrap_or_else(|| panic!("the script names no initrd on this server:\n{script}"));
    assert_eq!(code, 200, "initrd download");
    let published = std::fs::read(clone.join("builds/initrd.initrd")).unwrap();
    assert_eq!(
        bytes, published,
        "the served initrd is the one the quick start built"
    );
    assert!(
        clone.join("builds/basefs.squashfs").is_file()
            && clone.join("builds/discovery.cpio.gz").is_file()
    );
    assert_cold_path(&clone, &p.path().join("quickstart.log"));
}

/// What the quick start's cold build must show in its log (`log`) and
/// its manifest: the overlaps and the slim tree.
fn assert_cold_path(clone: &Path, log: &Path) {
    // The cold path's overlaps: the initrd's packages are fetched while the
    // basefs is built, and its kernel image is the one the basefs left out.
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let at = |what: &str| {
        log.find(what)
            .unwrap_or_else(|| panic!("no `{what}` in the log:\n{}", tail_lines(&log, 40)))
    };
    assert!(
        at("prefetch: apt-get update (private lists)") < at("play 2/3"),
        "the initrd's packages are fetched during the basefs build:\n{}",
        tail_lines(&log, 40)
    );
    at("taking the one its build kept in the cache");
    // Bookworm's /usr is merged by mmdebstrap's hook: neither usrmerge nor
    // the perl it pulls is ever installed (the manifest lists the basefs's
    // packages).
    let manifest = std::fs::read_to_string(clone.join("builds/manifest.json")).unwrap();
    for pkg in ["\"usrmerge\"", "\"perl\"", "\"libperl5.36\""] {
        assert!(!manifest.contains(pkg), "{pkg} in the basefs's packages");
    }
    assert!(
        manifest.contains("\"perl-base\""),
        "the manifest lists packages"
    );
    // The initrd, which needs only the basefs, is built beside the overlay.
    assert!(
        at("play 3/3: initrd") < at("overlay `discovery` done"),
        "the initrd is built beside the overlay:\n{}",
        tail_lines(&log, 40)
    );
}

/// A fresh clone of this repository under `dir`, seeded with the compiled
/// dependencies (the crate itself is rebuilt) and .debs, and the README's
/// quick-start command.
fn clone_and_seed(dir: &Path) -> (PathBuf, String) {
    let clone = dir.join("mkimage");
    let o = Command::new("git")
        .args(["clone", "-q"])
        .arg(repo())
        .arg(&clone)
        .output()
        .unwrap();
    assert!(o.status.success(), "git clone: {}", stderr(&o));
    let command = quick_start_command(&std::fs::read_to_string(clone.join("README.md")).unwrap());
    assert!(
        command.ends_with("target/release/mkimage serve"),
        "the quick start's first command ends in serve: {command}"
    );

    // Seeds: compiled dependencies (the crate itself is rebuilt) and .debs.
    seed_target(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release"),
        &clone.join("target/release"),
    );
    seed_debs(
        &shared_cache().join("debs"),
        &clone.join("builds/.cache/debs"),
    );
    (clone, command)
}

/// The boot script once it names a kernel (within 25 minutes); a panic with
/// the log's tail when the command ends first.
fn wait_for_a_boot_script(child: &mut std::process::Child, log: &Path) -> Option<String> {
    let started = Instant::now();
    let mut script = None;
    while started.elapsed() < Duration::from_secs(1500) {
        if let Some((200, body)) = get("/boot.ipxe") {
            let text = String::from_utf8_lossy(&body).to_string();
            if text.lines().any(|l| l.starts_with("kernel ")) {
                script = Some(text);
                break;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).to_string();
            panic!(
                "the quick start command ended ({status}) before serving a boot script:\n{}",
                tail_lines(&text, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    script
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
