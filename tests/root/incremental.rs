//! Root end-to-end tests of incremental builds (issue #12): skipped
//! up-to-date builds, the changed input named, dependents following, task
//! layers reused (and `cache: false` tasks rerun), outputs byte-identical
//! to a build without the cache, a killed build's leftovers never trusted,
//! stage archives. Small builds: a minbase basefs and tiny roles, the
//! package cache and bootstrapped trees shared with the other tests; each
//! test keeps its own task layers.

use crate::common;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};

/// A project whose cache shares `debs/`, `bootstrap/` and `apt/` with the
/// other tests but has layers of its own (removed with the project).
fn project() -> Project {
    require_root();
    require("mmdebstrap", "mmdebstrap");
    let p = Project::new();
    let cache = p.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    for part in ["debs", "bootstrap", "apt"] {
        std::fs::create_dir_all(shared_cache().join(part)).unwrap();
        std::os::unix::fs::symlink(shared_cache().join(part), cache.join(part)).unwrap();
    }
    p
}

fn vars(p: &Project, name: &str, roles: &[&str], extra: &str) -> String {
    format!(
        "name: {name}\nsuite: bookworm\nvariant: minbase\ncache_dir: {}\nsource_date_epoch: 1700000000\nprovisioners: [{}]\n{extra}",
        p.path().join("cache").display(),
        roles.join(", ")
    )
}

fn ok(o: &Output, what: &str) -> String {
    assert!(o.status.success(), "{what} failed:\n{}", stderr(o));
    stderr(o)
}

fn sha(p: &Project, out: &str, file: &str) -> String {
    read_sha(&p.path().join(out).join(format!("{file}.sha256")))
}

fn read_sha(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The lines of a build log that mention a role's task.
fn task_lines<'a>(log: &'a str, role: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(&format!("==> {role} | ")))
        .map(|l| l.split("==> ").nth(1).unwrap_or(l))
        .collect()
}

const TINY: &str = "\
- name: first
  copy: {src: motd, dest: /etc/motd, mode: \"0644\"}
- name: second
  shell: echo second > /etc/second && mkdir -p /srv/data && echo a > /srv/data/a && echo t > /etc/tmp-file
- name: uncached
  cache: false
  shell: echo uncached > /etc/uncached && rm -f /etc/tmp-file
- name: last
  lineinfile: {path: /etc/last, line: one}
";

const OV: &str = "\
- name: make
  shell: echo made > /opt/made && echo x > /opt/gone-later && rm -rf /srv/data && mkdir /srv/data && echo b > /srv/data/b
- name: drop
  shell: rm /opt/gone-later /etc/second
- name: tool
  copy: {src: tool, dest: /usr/local/bin/tool, mode: \"0755\"}
";

#[test]
fn builds_redo_only_what_changed_and_match_an_uncached_build() {
    let p = project();
    p.write("provisioners/tiny/tasks.yml", TINY);
    p.write("provisioners/tiny/files/motd", "hello\n");
    p.write("provisioners/ov/tasks.yml", OV);
    p.write("provisioners/ov/files/tool", "#!/bin/sh\necho one\n");
    p.write("vars/b.yml", &vars(&p, "b", &["tiny"], ""));
    p.write("vars/o.yml", &vars(&p, "o", &["ov"], "base: b\n"));
    p.write(
        "playbooks/all.yml",
        "builds:\n  - {kind: basefs, vars: vars/b.yml}\n  - {kind: overlay, vars: vars/o.yml}\n",
    );
    cold_play_records_the_builtin_tables(&p);
    a_play_with_no_change_skips_both(&p);
    editing_the_last_task_reruns_it_and_the_overlay(&p);
    let b_before = editing_an_overlay_file_rebuilds_that_overlay_alone(&p);
    let o_before = a_forced_play_takes_each_cacheable_task_from_the_cache(&p, &b_before);
    an_uncached_build_gives_the_same_bytes(&p, &b_before, &o_before);
    a_build_on_disk_gives_the_same_bytes(&p, &b_before, &o_before);
    the_overlay_holds_whiteouts_and_nothing_is_left(&p);
}

/// `mkimage play playbooks/all.yml` with `extra` flags.
fn play(p: &Project, extra: &[&str]) -> Output {
    p.run(&[&["play", "playbooks/all.yml"], extra].concat())
}

/// A cold play builds everything; the built-in tables that shape a build
/// are among its inputs.
fn cold_play_records_the_builtin_tables(p: &Project) {
    let log = ok(&play(p, &[]), "cold play");
    assert!(
        log.contains("b.squashfs was never built here") && !log.contains(": cached"),
        "{log}"
    );
    // These machines have the RAM for `build_dir: auto` to work in a tmpfs;
    // the layers copied into the store behind the builds are what the
    // later plays mount (`: cached`).
    assert!(log.contains("build dir in RAM"), "{log}");

    // The built-in tables that shape a build are among its inputs.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.out().join("manifest.json")).unwrap())
            .unwrap();
    for (file, part) in [
        ("b.squashfs", "defaults:kernel_modules.drop"),
        ("b.squashfs", "defaults:never_ship"),
        ("o.cpio.gz", "defaults:never_ship"),
    ] {
        assert!(
            manifest["artifacts"][file]["inputs"][part].is_string(),
            "{file} records no {part}: {}",
            manifest["artifacts"][file]["inputs"]
        );
    }
}

/// A second play with nothing changed skips both builds.
fn a_play_with_no_change_skips_both(p: &Project) {
    let log = ok(&play(p, &[]), "no-change play");
    assert!(
        log.contains("basefs `b` is up to date (b.squashfs), skipped")
            && log.contains("overlay `o` is up to date"),
        "{log}"
    );
    assert!(
        !log.contains("building") && task_lines(&log, "tiny").is_empty(),
        "{log}"
    );
}

/// The last task of the basefs role: the earlier ones come from the
/// cache, the `cache: false` one runs, and the overlay follows its basefs.
fn editing_the_last_task_reruns_it_and_the_overlay(p: &Project) {
    // The last task of the basefs role: the earlier ones come from the
    // cache, the `cache: false` one runs, and the overlay follows its basefs.
    p.write(
        "provisioners/tiny/tasks.yml",
        &TINY.replace("line: one", "line: two"),
    );
    let log = ok(
        &play(p, &[]),
        "play after editing the basefs role's last task",
    );
    assert!(
        log.contains("basefs `b`: provisioners/tiny/tasks.yml changed; building"),
        "{log}"
    );
    assert_eq!(
        task_lines(&log, "tiny"),
        [
            "tiny | first: cached",
            "tiny | second: cached",
            "tiny | uncached",
            "tiny | last"
        ],
        "{log}"
    );
    assert!(
        log.contains("overlay `o`: parent:b.squashfs changed; building"),
        "{log}"
    );
    assert_eq!(
        task_lines(&log, "ov"),
        ["ov | make", "ov | drop", "ov | tool"],
        "a new basefs runs the overlay's tasks again:\n{log}"
    );
}

/// An overlay file edit rebuilds that overlay alone, from the task that
/// reads it; the basefs's sha, which it leaves alone.
fn editing_an_overlay_file_rebuilds_that_overlay_alone(p: &Project) -> String {
    // An overlay file edit rebuilds that overlay alone, from the task that reads it.
    let b_before = sha(p, "builds", "b.squashfs");
    p.write("provisioners/ov/files/tool", "#!/bin/sh\necho two\n");
    let log = ok(&play(p, &[]), "play after editing an overlay file");
    assert!(log.contains("basefs `b` is up to date"), "{log}");
    assert!(
        log.contains("overlay `o`: provisioners/ov/files/tool changed; building"),
        "{log}"
    );
    assert_eq!(
        task_lines(&log, "ov"),
        ["ov | make: cached", "ov | drop: cached", "ov | tool"],
        "{log}"
    );
    assert_eq!(sha(p, "builds", "b.squashfs"), b_before);
    b_before
}

/// --force: every cacheable task from the cache; the task after the
/// uncached one too. The same bytes as before; the overlay's sha.
fn a_forced_play_takes_each_cacheable_task_from_the_cache(p: &Project, b_before: &str) -> String {
    // --force: every cacheable task from the cache; the task after the
    // uncached one too, since that one made the same changes again.
    let o_before = sha(p, "builds", "o.cpio.gz");
    let log = ok(&play(p, &["--force"]), "forced play");
    assert_eq!(
        task_lines(&log, "tiny"),
        [
            "tiny | first: cached",
            "tiny | second: cached",
            "tiny | uncached",
            "tiny | last: cached"
        ],
        "{log}"
    );
    assert_eq!(
        task_lines(&log, "ov"),
        [
            "ov | make: cached",
            "ov | drop: cached",
            "ov | tool: cached"
        ],
        "{log}"
    );
    assert_eq!(
        (
            sha(p, "builds", "b.squashfs"),
            sha(p, "builds", "o.cpio.gz")
        ),
        (b_before.to_string(), o_before.clone())
    );
    o_before
}

/// The same bytes as a build that uses no cache at all (one layer per
/// build, every task run): the merged task layers equal one upper dir.
fn an_uncached_build_gives_the_same_bytes(p: &Project, b_before: &str, o_before: &str) {
    // The same bytes as a build that uses no cache at all (one layer per
    // build, every task run): the merged task layers equal one upper dir.
    let log = same_bytes(p, &["--no-cache", "--out", "uncached"], b_before, o_before);
    assert!(!log.contains(": cached"), "{log}");
}

/// `build_dir: disk` (every task run, on disk): the same bytes as the
/// builds in RAM, whose later builds mounted the layers copied behind them.
fn a_build_on_disk_gives_the_same_bytes(p: &Project, b_before: &str, o_before: &str) {
    let flags = ["--no-cache", "--var", "build_dir=disk", "--out", "ondisk"];
    let log = same_bytes(p, &flags, b_before, o_before);
    assert!(!log.contains("build dir in RAM"), "{log}");
}

/// A play with `flags` (the last two: `--out DIR`) gives the basefs and
/// overlay bytes `b_before` and `o_before`; its log.
fn same_bytes(p: &Project, flags: &[&str], b_before: &str, o_before: &str) -> String {
    let log = ok(&play(p, flags), &flags.join(" "));
    let out = flags[flags.len() - 1];
    for (file, before) in [("b.squashfs", b_before), ("o.cpio.gz", o_before)] {
        assert_eq!(
            sha(p, out, file),
            before,
            "{file} of a play with {flags:?} differs from the one built from layers"
        );
    }
    log
}

/// What the overlay holds; `cache --dry-run` names the layers; no mount
/// or build dir is left.
fn the_overlay_holds_whiteouts_and_nothing_is_left(p: &Project) {
    // What the overlay holds: the base file it removed as a whiteout, the
    // file one task made and another removed not at all, the replaced dir.
    let listing = stdout(
        &mkimage()
            .arg("inspect")
            .arg(p.out().join("o.cpio.gz"))
            .output()
            .unwrap(),
    );
    assert!(
        listing.contains("etc/second (whiteout)")
            && listing.contains("srv/data/a (whiteout)")
            && listing.contains("srv/data/b"),
        "{listing}"
    );
    assert!(
        !listing.contains("gone-later"),
        "a whiteout for a file the basefs never had:\n{listing}"
    );

    let shown = p.run(&["cache", "--cache-dir", "cache", "--dry-run"]);
    let out = stdout(&shown);
    assert!(
        shown.status.success()
            && out.contains("(role tiny, task first)")
            && out.contains("(role ov, task tool)"),
        "{out}{}",
        stderr(&shown)
    );
    assert!(
        mounts_under(p.path()).is_empty(),
        "{:?}",
        mounts_under(p.path())
    );
    assert!(
        std::fs::read_dir(p.out().join(".work"))
            .map(|rd| rd.count())
            .unwrap_or(0)
            == 0,
        "build dirs left"
    );
}

/// Wait (up to a minute) until the project's layer store holds a layer
/// whose `info.txt` mentions `what`.
fn wait_for_layer(p: &Project, what: &str) {
    let store = p.path().join("cache/layers");
    let found = || {
        std::fs::read_dir(&store)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                !e.file_name().to_string_lossy().starts_with('.')
                    && std::fs::read_to_string(e.path().join("info.txt"))
                        .is_ok_and(|i| i.contains(what))
            })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !found() {
        assert!(
            std::time::Instant::now() < deadline,
            "no layer of {what} in {} after a minute",
            store.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_killed_build_leaves_nothing_a_later_build_trusts() {
    let p = project();
    p.write("provisioners/slow/tasks.yml", "- name: before\n  shell: echo before > /etc/before\n- name: stuck\n  shell: echo half > /etc/half && sleep 600\n");
    p.write("vars/b.yml", &vars(&p, "k", &["slow"], ""));
    let mut child = mkimage()
        .current_dir(p.path())
        .args(["basefs", "--vars", "vars/b.yml"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("slow | stuck") {
            break;
        }
    }
    assert!(
        seen.contains("slow | stuck"),
        "the build never reached the stuck task:\n{seen}"
    );
    // The build works in RAM: the finished task's layer is copied into the
    // store behind it. Killed once that copy is in (a kill before it loses
    // that layer, and never trusts half of it).
    wait_for_layer(&p, "task before");
    child.kill().unwrap();
    child.wait().unwrap();

    p.write("provisioners/slow/tasks.yml", "- name: before\n  shell: echo before > /etc/before\n- name: stuck\n  shell: echo done > /etc/half\n");
    let log = ok(
        &p.run(&["basefs", "--vars", "vars/b.yml"]),
        "build after a killed one",
    );
    assert_eq!(
        task_lines(&log, "slow"),
        ["slow | before: cached", "slow | stuck"],
        "{log}"
    );
    assert!(
        log.contains("removing build dir left by an interrupted build"),
        "{log}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(p.path().join("cache/layers"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".new."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let listing = stdout(
        &mkimage()
            .arg("inspect")
            .arg(p.out().join("k.squashfs"))
            .output()
            .unwrap(),
    );
    assert!(
        listing.contains("etc/half") && listing.contains("etc/before"),
        "{listing}"
    );
    assert!(mounts_under(p.path()).is_empty());
}

#[test]
fn stage_archives_save_and_start_builds() {
    let p = project();
    require("zstd", "zstd");
    p.write("provisioners/tiny/tasks.yml", TINY);
    p.write("provisioners/tiny/files/motd", "hello\n");
    p.write(
        "provisioners/more/tasks.yml",
        "- shell: grep -q hello /etc/motd && echo more > /etc/more\n",
    );
    p.write("vars/a.yml", &vars(&p, "a", &["tiny"], ""));
    p.write("vars/v.yml", &vars(&p, "v", &["more"], ""));
    let archive = p.path().join("stage.tar.zst");
    ok(
        &p.run(&["basefs", "--vars", "vars/a.yml", "--save", "stage.tar.zst"]),
        "basefs --save",
    );
    assert!(archive.is_file());
    let log = ok(
        &p.run(&["basefs", "--vars", "vars/v.yml", "--from", "stage.tar.zst"]),
        "basefs --from",
    );
    assert!(
        log.contains("unpack the stage archive") && !log.contains("bootstrap bookworm (mmdebstrap"),
        "{log}"
    );
    let listing = stdout(
        &mkimage()
            .arg("inspect")
            .arg(p.out().join("v.squashfs"))
            .output()
            .unwrap(),
    );
    assert!(
        listing.contains("etc/more") && listing.contains("etc/uncached"),
        "{listing}"
    );
    let log = ok(
        &p.run(&["basefs", "--vars", "vars/v.yml", "--from", "stage.tar.zst"]),
        "basefs --from again",
    );
    assert!(log.contains("basefs `v` is up to date"), "{log}");

    let o = p.run(&["basefs", "--vars", "vars/v.yml", "--from", "nosuch.tar.zst"]);
    assert_failure_of(
        &p,
        &o,
        2,
        &["no such stage archive", "--save FILE"],
        Some("nosuch"),
    );
    let o = p.run(&["basefs", "--vars", "vars/a.yml", "--save", "stage.zip"]);
    assert_failure_of(&p, &o, 2, &["stage.zip", ".tar.zst"], Some("stage"));
}
