//! Bad config and role inputs: each exits 2 with a message naming the
//! place, before anything is built (no root needed, nothing written).

use crate::common;
use common::*;

fn check(p: &Project, vars: &str) -> std::process::Output {
    p.run(&["check", "--vars", vars])
}

#[test]
fn help_lists_every_subcommand() {
    let o = mkimage().arg("--help").output().unwrap();
    let text = stdout(&o);
    for cmd in [
        "basefs",
        "overlay",
        "initrd",
        "play",
        "serve",
        "check",
        "inspect",
        "boot-test",
    ] {
        assert!(text.contains(cmd), "--help lacks {cmd}:\n{text}");
    }
}

#[test]
fn yaml_syntax_error() {
    let p = Project::new();
    p.write("vars/x.yml", "name: x\npackages: [a, b\n");
    let o = p.run(&["basefs", "--vars", "vars/x.yml"]);
    assert_clean_failure(&p, &o, 2, &["vars/x.yml:", "mkimage: "]);
    assert!(!stderr(&o).contains("vars/x.yml:0:0"));
}

#[test]
fn unknown_top_level_key() {
    let p = Project::new();
    p.write("vars/x.yml", "name: x\npackges: [curl]\n");
    let o = p.run(&["basefs", "--vars", "vars/x.yml"]);
    assert_clean_failure(&p, &o, 2, &["vars/x.yml:2:1: unknown field `packges`"]);
}

#[test]
fn undefined_template_variable() {
    let p = Project::new();
    p.write("vars/x.yml", "name: x\nvars:\n  motd: \"{{ sutie }}\"\n");
    let o = p.run(&["basefs", "--vars", "vars/x.yml"]);
    assert_clean_failure(&p, &o, 2, &["vars/x.yml:3:3", "undefined variable `sutie`"]);
}

#[test]
fn missing_role() {
    let p = Project::new();
    p.write("provisioners/real/tasks.yml", "- shell: \"true\"\n");
    p.write("vars/x.yml", "name: x\nprovisioners: [real, nosuchrole]\n");
    let o = p.run(&["basefs", "--vars", "vars/x.yml"]);
    assert_clean_failure(&p, &o, 2, &["provisioner `nosuchrole`", "roles in", "real"]);
}

#[test]
fn missing_copy_source() {
    let p = Project::new();
    p.write(
        "provisioners/r/tasks.yml",
        "- name: put motd\n  copy: {src: motd, dest: /etc/motd}\n",
    );
    p.write("vars/x.yml", "name: x\nprovisioners: [r]\n");
    let o = p.run(&["basefs", "--vars", "vars/x.yml"]);
    assert_clean_failure(
        &p,
        &o,
        2,
        &["role `r`, task `put motd`", "src `motd`", "files/"],
    );
}

#[test]
fn unknown_module_and_two_modules() {
    let p = Project::new();
    p.write(
        "provisioners/r/tasks.yml",
        "- name: a\n  shell: \"true\"\n- name: b\n  aptt: {pkg: x}\n",
    );
    p.write("vars/x.yml", "name: x\nprovisioners: [r]\n");
    let o = check(&p, "vars/x.yml");
    assert_clean_failure(&p, &o, 2, &["tasks.yml:4:3", "unknown field `aptt`"]);
    p.write(
        "provisioners/r/tasks.yml",
        "- name: a\n  shell: \"true\"\n  command: ls\n",
    );
    let o = check(&p, "vars/x.yml");
    assert_clean_failure(
        &p,
        &o,
        2,
        &["tasks.yml:1:", "more than one module (shell, command)"],
    );
}

#[test]
fn template_in_role_with_undefined_variable() {
    let p = Project::new();
    p.write("provisioners/r/templates/motd.j2", "hello {{ who }}\n");
    p.write(
        "provisioners/r/tasks.yml",
        "- name: motd\n  template: {src: motd.j2, dest: /etc/motd}\n",
    );
    p.write("vars/x.yml", "name: x\nprovisioners: [r]\n");
    let o = check(&p, "vars/x.yml");
    assert_clean_failure(
        &p,
        &o,
        2,
        &[
            "role `r`, task `motd`",
            "motd.j2",
            "undefined variable `who`",
        ],
    );
    let o = p.run(&["check", "--vars", "vars/x.yml", "--var", "who=world"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Every vars file and playbook the repository ships passes `check`
/// (`vars/boot.yml` is a boot config: `serve` checks it, not `check`).
#[test]
fn check_accepts_every_shipped_config() {
    let mut checked = 0;
    for dir in ["vars", "playbooks"] {
        let mut files: Vec<_> = std::fs::read_dir(repo().join(dir))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        files.sort();
        for file in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "yml") && !f.ends_with("boot.yml"))
        {
            let rel = file
                .strip_prefix(repo())
                .unwrap()
                .to_string_lossy()
                .to_string();
            let args: Vec<&str> = if dir == "vars" {
                vec!["check", "--vars", &rel]
            } else {
                vec!["check", &rel]
            };
            let o = mkimage().current_dir(repo()).args(&args).output().unwrap();
            assert!(o.status.success(), "{rel}: {}", stderr(&o));
            assert!(stdout(&o).contains(": ok ("), "{rel}: {}", stdout(&o));
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} shipped configs found");
}

/// Options are checked before anything is built, and a `--var` that nothing
/// reads is an error naming the closest key.
#[test]
fn invalid_options_and_unread_vars_fail_check() {
    let p = Project::new();
    p.write("vars/common.yml", "mirror: http://mirror.invalid/debian\n");
    for (body, want) in [
        ("squashfs: {compressor: lzo}", "unknown variant `lzo`"),
        ("squashfs: {block_size: 3000}", "block_size 3000"),
        ("variant: minbsae", "not a bootstrap variant"),
    ] {
        p.write(
            "vars/bad.yml",
            &format!("include: common.yml\nname: bad\n{body}\n"),
        );
        let o = check(&p, "vars/bad.yml");
        assert_clean_failure(&p, &o, 2, &["vars/bad.yml:3:", want]);
    }
    p.write(
        "vars/ok.yml",
        "include: common.yml\nname: ok\nvars:\n  motd: \"{{ greeting }}\"\n  greeting: hi\n",
    );
    let o = p.run(&["check", "--vars", "vars/ok.yml", "--var", "greting=hello"]);
    assert_clean_failure(&p, &o, 2, &["--var greting", "did you mean `greeting`?"]);
    let o = p.run(&[
        "check",
        "--vars",
        "vars/ok.yml",
        "--var",
        "greeting=hello",
        "--var",
        "suite=trixie",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn suite_must_be_a_supported_release() {
    let p = Project::new();
    p.write("vars/x.yml", "name: x\nsuite: trixy\n");
    let o = check(&p, "vars/x.yml");
    assert_clean_failure(
        &p,
        &o,
        2,
        &[
            "vars/x.yml:2:1: suite: `trixy` is not a suite",
            "bookworm (Debian 12), trixie (Debian 13)",
        ],
    );
    let o = p.run(&["check", "--vars", "vars/x.yml", "--var", "suite=stable"]);
    assert_clean_failure(&p, &o, 2, &["--var suite", "codename"]);
    let o = p.run(&["check", "--vars", "vars/x.yml", "--var", "suite=trixie"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("vars/x.yml: ok (basefs build, trixie, 0 roles)"),
        "{}",
        stdout(&o)
    );
}
