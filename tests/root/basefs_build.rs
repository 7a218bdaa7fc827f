//! Root end-to-end tests of `mkimage basefs`: real mmdebstrap, real chroot,
//! real squashfs, loop-mounted and inspected.

use crate::common;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Run `script` with the squashfs loop-mounted read-only at `$M` (inside a
/// private mount namespace, so the mount cannot outlive the test).
fn in_image(image: &std::path::Path, script: &str) -> String {
    let mnt = tempfile::tempdir_in(scratch()).unwrap();
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-ec"])
        .arg(format!(
            "mount -t squashfs -o loop,ro \"$1\" \"$2\"; M=\"$2\"; cd \"$M\"; {script}"
        ))
        .args(["sh"])
        .arg(image)
        .arg(mnt.path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "script failed: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    stdout(&o)
}

/// Build one of the repository's own vars files into `p`'s output dir.
fn build_shipped(kind: &str, vars: &str, p: &Project) -> std::process::Output {
    build_shipped_with(kind, vars, p, &[])
}

fn build_shipped_with(kind: &str, vars: &str, p: &Project, extra: &[&str]) -> std::process::Output {
    let mut cmd = mkimage();
    cmd.current_dir(repo())
        .args([kind, "--vars", vars, "--out"])
        .arg(p.out())
        .arg("--var")
        .arg(format!("cache_dir={}", shared_cache().display()));
    for e in extra {
        cmd.args(["--var", e]);
    }
    cmd.output().unwrap()
}

/// The shipped vars/basefs.yml, built once for every test in this file.
fn shipped_basefs() -> &'static (Project, String) {
    static BUILT: OnceLock<(Project, String)> = OnceLock::new();
    BUILT.get_or_init(|| {
        require_root();
        require("mmdebstrap", "mmdebstrap");
        let p = Project::new();
        // A fresh bootstrap (not a cached tree), so the next test shows the
        // bootstrap itself is deterministic.
        let o = build_shipped_with("basefs", "vars/basefs.yml", &p, &["bootstrap_cache=false"]);
        assert!(o.status.success(), "basefs build failed:\n{}", stderr(&o));
        let sha = std::fs::read_to_string(p.out().join("basefs.squashfs.sha256")).unwrap();
        (p, sha.split_whitespace().next().unwrap().to_string())
    })
}

/// What the shipped basefs must (and must not) hold, one `key=value` line each.
const FACTS: &str = r#"
        echo "hostname=$(cat etc/hostname)"
        grep -q microkernel etc/hosts && echo hosts=ok
        grep -q '^monorail:' etc/passwd && echo user=ok
        grep -q 'NOPASSWD' etc/sudoers.d/monorail && echo sudo=ok
        test -f etc/dpkg/dpkg.cfg.d/01-mkimage-nodoc && echo nodoc=ok
        for d in downloads uploads drivers; do test -d opt/$d && echo opt-$d=ok; done
        echo "init=$(readlink -f sbin/init)"
        echo "modules=$(ls lib/modules)"
        ls boot/vmlinuz-* >/dev/null 2>&1 && echo vmlinuz=present
        ls boot/initrd.img* >/dev/null 2>&1 && echo initrd-in-image=yes
        test -e etc/resolv.conf && echo "resolv=$(md5sum < etc/resolv.conf)"
        test -e usr/sbin/policy-rc.d && echo policy-rc.d=present
        grep -rils 'proxy' etc/apt/ && echo proxy-config=present
        ls etc/ssh/ssh_host_* >/dev/null 2>&1 && echo host-keys=present
        echo "machine-id-bytes=$(wc -c < etc/machine-id)"
        ls var/lib/apt/lists | grep -q Packages && echo apt-lists=present
        ls var/cache/apt/archives | grep -q deb && echo debs=present
        test -L etc/systemd/system/multi-user.target.wants/mkimage-boot-hooks.service && echo hooks=enabled
        test -L etc/systemd/system/ssh.service.requires/mkimage-ssh-keygen.service && echo keygen=enabled
        true
        "#;

#[test]
fn shipped_basefs_has_the_base_role_and_no_build_leftovers() {
    let (p, sha) = shipped_basefs();
    let image = p.out().join("basefs.squashfs");
    let facts = in_image(&image, FACTS);
    for want in [
        "hostname=microkernel",
        "hosts=ok",
        "user=ok",
        "sudo=ok",
        "nodoc=ok",
        "opt-downloads=ok",
        "opt-uploads=ok",
        "opt-drivers=ok",
        "init=/usr/lib/systemd/systemd",
        "machine-id-bytes=0",
        "hooks=enabled",
        "keygen=enabled",
    ] {
        assert!(facts.contains(want), "image lacks `{want}`:\n{facts}");
    }
    // The kernel image is left out: the initrd build takes it from the kernel package.
    for bad in [
        "vmlinuz=present",
        "initrd-in-image",
        "policy-rc.d=present",
        "proxy-config=present",
        "host-keys=present",
        "apt-lists=present",
        "debs=present",
    ] {
        assert!(!facts.contains(bad), "image has `{bad}`:\n{facts}");
    }
    if let Some(line) = facts.lines().find(|l| l.starts_with("resolv=")) {
        let host = Command::new("sh")
            .args(["-c", "md5sum < /etc/resolv.conf"])
            .output()
            .unwrap();
        assert_ne!(
            line.trim_start_matches("resolv="),
            stdout(&host),
            "the host's resolv.conf is in the image"
        );
    }
    let modules = facts
        .lines()
        .find_map(|l| l.strip_prefix("modules="))
        .unwrap_or_default()
        .to_string();
    assert!(modules.starts_with("6."), "no /lib/modules/<ver>: {facts}");

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.out().join("manifest.json")).unwrap()).unwrap();
    let entry = &manifest["artifacts"]["basefs.squashfs"];
    assert_eq!(entry["sha256"], sha.as_str());
    assert_eq!(entry["kernel_version"], modules.as_str());
    assert!(entry["packages"]["systemd-sysv"].is_string(), "{entry}");
    assert!(entry["packages"]["openssh-server"].is_string(), "{entry}");
    assert_eq!(entry["size"], std::fs::metadata(&image).unwrap().len());
}

/// Two builds, each bootstrapping afresh (no cached tree), give the same bytes.
#[test]
fn same_inputs_give_the_same_squashfs() {
    let (_, first) = shipped_basefs();
    let p = Project::new();
    let o = build_shipped_with("basefs", "vars/basefs.yml", &p, &["bootstrap_cache=false"]);
    assert!(
        stderr(&o).contains("bootstrap bookworm (mmdebstrap"),
        "the second build bootstrapped afresh: {}",
        stderr(&o)
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let second = std::fs::read_to_string(p.out().join("basefs.squashfs.sha256")).unwrap();
    assert_eq!(
        second.split_whitespace().next().unwrap(),
        first,
        "two builds of the same inputs differ"
    );
}

#[test]
fn failing_shell_task_names_role_task_command_and_output() {
    require_root();
    let p = Project::new();
    p.write("provisioners/breaks/tasks.yml", "- name: ok step\n  shell: echo fine\n- name: broken step\n  shell: \"echo about to fail; echo reason-xyz >&2; exit 7\"\n");
    p.write("vars/x.yml", &small_vars("x", &["breaks"]));
    let o = p.run(&["basefs", "--vars", "vars/x.yml"]);
    assert_clean_failure(
        &p,
        &o,
        1,
        &[
            "role `breaks`, task `broken step`",
            "exit status 7",
            "reason-xyz",
            "/bin/sh",
        ],
    );
    assert!(
        !p.out().join(".work").read_dir().unwrap().any(|_| true),
        "build dir left behind"
    );
}

#[test]
fn unknown_package_fails_cleanly() {
    require_root();
    let p = Project::new();
    p.write(
        "provisioners/pkgs/tasks.yml",
        "- name: install nonsense\n  apt: {pkg: [mkimage-no-such-package]}\n",
    );
    p.write("vars/x.yml", &small_vars("x", &["pkgs"]));
    let o = p.run(&["basefs", "--vars", "vars/x.yml"]);
    assert_clean_failure(
        &p,
        &o,
        1,
        &[
            "role `pkgs`, task `install nonsense`",
            "mkimage-no-such-package",
            "apt-get",
        ],
    );
}

#[test]
fn sigkill_mid_role_leaves_no_mount_and_next_build_succeeds() {
    require_root();
    let p = Project::new();
    p.write(
        "provisioners/slow/tasks.yml",
        "- name: marker\n  shell: touch /root/started\n- name: hang\n  shell: sleep 600\n",
    );
    p.write(
        "provisioners/quick/tasks.yml",
        "- name: motd\n  copy: {src: motd, dest: /etc/motd}\n",
    );
    p.write("provisioners/quick/files/motd", "built by mkimage\n");
    p.write("vars/slow.yml", &small_vars("slow", &["slow"]));
    p.write("vars/quick.yml", &small_vars("quick", &["quick"]));

    let mut child = start_until_it_hangs(&p);
    std::thread::sleep(Duration::from_secs(2));
    // While it runs, its mounts are invisible here: they live in its namespace.
    assert!(mounts_under(p.path()).is_empty());
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        mounts_under(p.path()).is_empty(),
        "mounts left: {:?}",
        mounts_under(p.path())
    );
    // No process of the build (the chrooted sleep) survives.
    let work = p.out().join(".work");
    let survivors: Vec<_> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path().join("root")).ok())
        .filter(|root| root.starts_with(&work))
        .collect();
    assert!(
        survivors.is_empty(),
        "processes still chrooted in the build dir: {survivors:?}"
    );

    let o = p.run(&["basefs", "--vars", "vars/quick.yml"]);
    assert!(o.status.success(), "the next build failed:\n{}", stderr(&o));
    assert!(
        stderr(&o).contains("left by an interrupted build"),
        "{}",
        stderr(&o)
    );
    let motd = in_image(&p.out().join("quick.squashfs"), "cat etc/motd");
    assert_eq!(motd, "built by mkimage\n");
    assert!(mounts_under(p.path()).is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert!(leftovers.is_empty(), "build dirs left: {leftovers:?}");
}

/// `mkimage basefs` of the slow role, once its log reaches the task that hangs.
fn start_until_it_hangs(p: &Project) -> std::process::Child {
    let mut child = mkimage()
        .current_dir(p.path())
        .args(["basefs", "--vars", "vars/slow.yml"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr_pipe = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(400);
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) if line.contains("slow | hang") => break,
            Ok(line) => seen.push(line),
            Err(_) if Instant::now() > deadline => {
                let _ = child.kill();
                panic!(
                    "the build never reached the hanging task:\n{}",
                    seen.join("\n")
                );
            }
            Err(_) => {}
        }
    }
    child
}

#[test]
fn discovery_overlay_holds_its_tools_and_nothing_else() {
    let (p, _) = shipped_basefs();
    let o = build_shipped("overlay", "vars/discovery.yml", p);
    assert!(
        o.status.success(),
        "discovery overlay failed:\n{}",
        stderr(&o)
    );
    let listing = mkimage()
        .arg("inspect")
        .arg(p.out().join("discovery.cpio.gz"))
        .output()
        .unwrap();
    assert!(listing.status.success(), "{}", stderr(&listing));
    let text = stdout(&listing);
    for want in [
        "usr/sbin/dmidecode",
        "usr/bin/lshw",
        "usr/bin/lsscsi",
        "usr/sbin/ethtool",
        "usr/sbin/smartctl",
        "sbin/hdparm",
        "usr/local/sbin/mkimage-discovery",
        "etc/systemd/system/mkimage-discovery.service",
        "var/lib/dpkg/status",
    ] {
        assert!(
            text.lines()
                .any(|l| l.ends_with(want) || l.contains(&format!("{want} "))),
            "overlay lacks {want}:\n{text}"
        );
    }
    // Every byte of an overlay stays in the machine's RAM: no ICU data (lldpd's libxml2 brought it).
    assert!(
        !text.contains("libicudata"),
        "the discovery overlay carries ICU's data library again"
    );
    for unchanged in ["usr/bin/bash", "usr/lib/systemd/systemd", "etc/hostname"] {
        assert!(
            !text.lines().any(|l| l.ends_with(unchanged)),
            "overlay carries the basefs's {unchanged}"
        );
    }
    for build_only in [
        "var/lib/apt/lists/",
        "etc/resolv.conf",
        "policy-rc.d",
        "00mkimage-build",
        "var/log/apt",
        "var/cache/apt/archives/",
    ] {
        assert!(
            !text.contains(build_only),
            "overlay carries build-only {build_only}:\n{text}"
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.out().join("manifest.json")).unwrap()).unwrap();
    let entry = &manifest["artifacts"]["discovery.cpio.gz"];
    assert!(entry["packages"]["lshw"].is_string(), "{entry}");
    assert_eq!(entry["base"]["file"], "basefs.squashfs");
}
