//! One harness for every CLI test: a fresh temp project per test and a
//! handle on the real `mkimage` binary.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (for the real vars/ and provisioners/).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn mkimage() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mkimage"));
    c.env_remove("RUST_LOG").stdin(std::process::Stdio::null());
    c
}

/// A temp project: `vars/`, `provisioners/`, and an output dir `builds/`.
/// Held (flocked) while the test process runs; removed when dropped, and a
/// project a previous run never dropped (one held by a `static`, or of a
/// killed run) is removed by the next run's first `Project::new`.
pub struct Project {
    dir: mkimage::flock::Claimed,
}

impl Project {
    pub fn new() -> Project {
        for stale in mkimage::flock::stale(&scratch(), |n| n.starts_with("mkimage-test.")) {
            let _ = fs::remove_dir_all(&stale);
        }
        let dir = mkimage::flock::claim_dir(&scratch(), "mkimage-test.").expect("temp dir");
        fs::create_dir_all(dir.path.join("vars")).unwrap();
        fs::create_dir_all(dir.path.join("provisioners")).unwrap();
        Project { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir.path
    }

    pub fn out(&self) -> PathBuf {
        self.path().join("builds")
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    /// Run `mkimage ARGS` in the project dir.
    pub fn run(&self, args: &[&str]) -> Output {
        mkimage()
            .current_dir(self.path())
            .args(args)
            .output()
            .expect("run mkimage")
    }

    /// Files in the output dir (not the hidden work and cache dirs).
    pub fn artifacts(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.out())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        names.retain(|n| !n.starts_with('.'));
        names.sort();
        names
    }
}

/// Where test projects live: on disk (not tmpfs), shared package cache beside.
/// A user other than root (the `noroot` harness) gets a dir of its own.
pub fn scratch() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let p = match unsafe { libc::geteuid() } {
        0 => PathBuf::from("/var/tmp/mkimage-tests"),
        uid => PathBuf::from(format!("/var/tmp/mkimage-tests-{uid}")),
    };
    fs::create_dir_all(&p).unwrap();
    p
}

/// A package cache shared by every test build, so only the first downloads.
pub fn shared_cache() -> PathBuf {
    scratch().join("cache")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Fail (never skip) when a program the test needs is missing.
pub fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "this test needs `{program}`: apt-get install -y {package} (or run scripts/install-deps)"
    );
}

pub fn require_root() {
    assert!(
        nix_is_root(),
        "this test needs root (mounts, chroot, namespaces): run the suite as root"
    );
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Mount points under `dir` in this process's mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect()
}

/// Assert a failed run: exit code, message fragments, no panic, no mount,
/// no artifact.
pub fn assert_clean_failure(p: &Project, o: &Output, code: i32, fragments: &[&str]) {
    assert_failure_of(p, o, code, fragments, None);
}

/// Like `assert_clean_failure`, for an output dir other builds also use:
/// only artifacts of the build named `name` count.
pub fn assert_failure_of(
    p: &Project,
    o: &Output,
    code: i32,
    fragments: &[&str],
    name: Option<&str>,
) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr:\n{err}");
    for f in fragments {
        assert!(err.contains(f), "stderr lacks `{f}`:\n{err}");
    }
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "panic:\n{err}"
    );
    assert!(
        mounts_under(p.path()).is_empty(),
        "mounts left: {:?}",
        mounts_under(p.path())
    );
    let arts: Vec<_> = p
        .artifacts()
        .into_iter()
        .filter(|a| name.is_none_or(|n| a.trim_start_matches('.').starts_with(&format!("{n}."))))
        .filter(|a| {
            a.ends_with(".squashfs")
                || a.ends_with(".gz")
                || a.ends_with(".tmp")
                || a.ends_with(".initrd")
        })
        .collect();
    assert!(arts.is_empty(), "artifacts left: {arts:?}");
}

/// A vars file for a small, fast build: minbase plus the given roles.
pub fn small_vars(name: &str, roles: &[&str]) -> String {
    format!(
        "name: {name}\nsuite: bookworm\nvariant: minbase\ncache_dir: {}\nsource_date_epoch: 1700000000\nprovisioners: [{}]\n",
        shared_cache().display(),
        roles.join(", ")
    )
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir.path);
    }
}

/// `mkimage play playbooks/all.yml` of the shipped repo (with `--var`
/// `extra` overrides) into a fresh project's output dir, through the shared
/// package cache; asserts the play succeeded and made every artifact.
pub fn play_shipped(extra: &[&str]) -> Project {
    require_root();
    require("mmdebstrap", "mmdebstrap");
    let p = Project::new();
    let mut cmd = mkimage();
    cmd.current_dir(repo())
        .args(["play", "playbooks/all.yml", "--out"])
        .arg(p.out());
    for var in [format!("cache_dir={}", shared_cache().display())]
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
    {
        cmd.args(["--var", var]);
    }
    let o = cmd.output().expect("run mkimage play");
    assert!(o.status.success(), "play {extra:?} failed:\n{}", stderr(&o));
    for f in [
        "basefs.squashfs",
        "discovery.cpio.gz",
        "initrd.initrd",
        "initrd.vmlinuz",
        "manifest.json",
    ] {
        assert!(
            p.out().join(f).is_file(),
            "play {extra:?} did not produce {f}"
        );
    }
    p
}

/// The discovery overlay's console line (`mkimage-discovery: {json}`), parsed.
pub fn discovery_json(console: &str) -> serde_json::Value {
    let line = console
        .lines()
        .find_map(|l| {
            l.split_once("mkimage-discovery: {")
                .map(|(_, j)| format!("{{{}", j.trim()))
        })
        .unwrap_or_else(|| panic!("no discovery line on the console:\n{console}"));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// `mkimage inspect FILE`'s listing (asserting it succeeded).
pub fn inspect(file: &Path) -> String {
    let o = mkimage()
        .arg("inspect")
        .arg(file)
        .output()
        .expect("run mkimage inspect");
    assert!(
        o.status.success(),
        "inspect {}: {}",
        file.display(),
        stderr(&o)
    );
    stdout(&o)
}

/// Whether an inspect listing has an entry whose path ends with `suffix`
/// (a file, or a symlink's name).
pub fn lists(listing: &str, suffix: &str) -> bool {
    listing
        .lines()
        .any(|l| l.trim_end().ends_with(suffix) || l.contains(&format!("{suffix} ->")))
}
