//! The modules that run programs in the chroot: `apt`, `shell`, `command`,
//! `user`, `service`, `debconf`.

use std::path::Path;

use anyhow::{bail, Context};

use super::paths::resolve;
use super::role::Run;
use super::task::{Apt, Command, Debconf, PkgState, Presence, Service, Shell, User};
use crate::exec::Cmd;

/// A command chrooted into the tree, with the build's environment.
fn in_chroot(run: &Run, program: &str) -> Cmd {
    let mut cmd = Cmd::new(program)
        .chroot(run.root)
        .env("HOME", "/root")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("DEBCONF_NONINTERACTIVE_SEEN", "true")
        .env("APT_LISTCHANGES_FRONTEND", "none")
        .env("SOURCE_DATE_EPOCH", run_epoch(run));
    for (k, v) in &run.env {
        cmd = cmd.env(k, v);
    }
    cmd
}

fn run_epoch(run: &Run) -> String {
    run.ctx
        .get_attr("source_date_epoch")
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_none())
        .map(|v| v.to_string())
        .unwrap_or_else(|| crate::artifact::source_date_epoch(0).to_string())
}

fn go(run: &Run, cmd: Cmd) -> anyhow::Result<()> {
    cmd.run_with(|line| run.progress.output(line))?;
    Ok(())
}

pub fn apt(run: &Run, a: &Apt) -> anyhow::Result<()> {
    // `pkg: "a b"` is two packages, as apt-get reads it.
    let pkgs: Vec<String> = a
        .pkg
        .as_ref()
        .map(|p| p.to_vec())
        .unwrap_or_default()
        .iter()
        .flat_map(|p| p.split_whitespace().map(str::to_string))
        .collect();
    if pkgs.iter().any(|p| p.starts_with('-')) {
        bail!("package names cannot start with `-`");
    }
    if run.dry {
        return Ok(());
    }
    let lists = run.root.join(super::chroot::APT_LISTS);
    // Builds share the lists and the package cache (bind-mounted here):
    // one apt at a time, from the update to the install.
    let _held = apt_caches_held(run)?;
    let listed = |what: &str| {
        std::fs::read_dir(&lists)
            .map(|rd| {
                rd.filter_map(|e| e.ok()).any(|e| {
                    e.file_name().to_string_lossy().contains(what)
                        && e.file_name().to_string_lossy().ends_with("_Packages")
                })
            })
            .unwrap_or(false)
    };
    // A lock's local repository needs its list too.
    let lock_repo_unlisted =
        run.root.join(super::chroot::LOCK_SOURCES).exists() && !listed("mkimage-lock-repo");
    if a.update || ((!listed("") || lock_repo_unlisted) && !pkgs.is_empty()) {
        go(run, in_chroot(run, "apt-get").args(["-q", "update"]))?;
    }
    if pkgs.is_empty() {
        return Ok(());
    }
    let dpkg_opts = [
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
    ];
    let cmd = match a.state {
        PkgState::Present => in_chroot(run, "apt-get")
            .args(["-q", "-y", "--no-install-recommends"])
            .args(dpkg_opts)
            .arg("install"),
        PkgState::Latest => in_chroot(run, "apt-get")
            .args(["-q", "-y", "--no-install-recommends"])
            .args(dpkg_opts)
            .args(["install", "--only-upgrade"]),
        PkgState::Absent => in_chroot(run, "apt-get")
            .args(["-q", "-y"])
            .arg(if a.purge { "purge" } else { "remove" }),
    };
    go(run, cmd.args(&pkgs))
}

/// The guards of the shared lists and package cache.
type Held = (
    Option<nix::fcntl::Flock<std::fs::File>>,
    Option<nix::fcntl::Flock<std::fs::File>>,
);

/// The lists and package cache other builds share, held while an `apt`
/// task runs, and a script or command too: it may run apt itself (the
/// base role's purge does), and apt's own locks there would make it fail
/// at once beside another build. Lists first, then the cache, the order
/// the bootstrap takes them.
fn apt_caches_held(run: &Run) -> anyhow::Result<Held> {
    let lists = crate::flock::apt_lists(&run.root.join(super::chroot::APT_LISTS), || {
        run.progress
            .done("waiting for another build's apt to finish with the package lists")
    })?;
    let debs = crate::flock::package_cache(&run.root.join("var/cache/apt/archives"))?;
    Ok((lists, debs))
}

pub fn shell(run: &Run, s: &Shell) -> anyhow::Result<()> {
    let (script, chdir, creates) = match s {
        Shell::Script(script) => (script.clone(), None, None),
        Shell::Full(f) => (f.cmd.clone(), f.chdir.clone(), f.creates.clone()),
    };
    if run.dry {
        return Ok(());
    }
    if let Some(path) = creates {
        if resolve(run.root, &path, true)
            .map_err(anyhow::Error::msg)?
            .exists()
        {
            return Ok(());
        }
    }
    let script = match chdir {
        Some(dir) => format!("cd {} || exit 1\n{script}", crate::exec::shell_quote(&dir)),
        None => script,
    };
    let _held = apt_caches_held(run)?;
    go(run, in_chroot(run, "/bin/sh").args(["-e", "-c", &script]))
}

pub fn command(run: &Run, c: &Command) -> anyhow::Result<()> {
    let argv: Vec<String> = match c {
        Command::Line(line) => line.split_whitespace().map(str::to_string).collect(),
        Command::Argv(v) => v.clone(),
    };
    let Some((program, args)) = argv.split_first() else {
        bail!("empty command")
    };
    if run.dry {
        return Ok(());
    }
    let _held = apt_caches_held(run)?;
    go(run, in_chroot(run, program).args(args))
}

fn exists_in(root: &Path, db: &str, name: &str) -> bool {
    std::fs::read_to_string(root.join(db))
        .map(|t| t.lines().any(|l| l.split(':').next() == Some(name)))
        .unwrap_or(false)
}

pub fn user(run: &Run, u: &User) -> anyhow::Result<()> {
    let valid = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !n.starts_with('-')
    };
    for n in std::iter::once(&u.name)
        .chain(u.group.iter())
        .chain(u.groups.iter().flatten())
    {
        if !valid(n) {
            bail!("`{n}` is not a valid user or group name");
        }
    }
    if run.dry {
        return Ok(());
    }
    let root = run.root;
    if u.state == Presence::Absent {
        if exists_in(root, "etc/passwd", &u.name) {
            go(run, in_chroot(run, "userdel").args(["-r", &u.name]))?;
        }
        let _ = std::fs::remove_file(root.join("etc/sudoers.d").join(&u.name));
        return Ok(());
    }
    let group = u.group.clone().unwrap_or_else(|| u.name.clone());
    for g in std::iter::once(&group).chain(u.groups.iter().flatten()) {
        if !exists_in(root, "etc/group", g) {
            let mut cmd = in_chroot(run, "groupadd");
            if u.system {
                cmd = cmd.arg("--system");
            }
            go(run, cmd.arg(g))?;
        }
    }
    let exists = exists_in(root, "etc/passwd", &u.name);
    let mut cmd = in_chroot(run, if exists { "usermod" } else { "useradd" }).args(["-g", &group]);
    if !exists {
        cmd = cmd.arg(if u.system {
            "--system"
        } else {
            "--create-home"
        });
    }
    if let Some(groups) = &u.groups {
        if !groups.is_empty() {
            cmd = cmd.args(["-G", &groups.join(",")]);
        }
    }
    if let Some(uid) = u.uid {
        cmd = cmd.args(["-u", &uid.to_string()]);
    }
    cmd = cmd.args(["-s", u.shell.as_deref().unwrap_or("/bin/bash")]);
    if let Some(home) = &u.home {
        cmd = cmd.args(["-d", home]);
    }
    if let Some(hash) = &u.password {
        cmd = cmd.args(["-p", hash]);
    }
    go(run, cmd.arg(&u.name))?;
    if u.sudo {
        let dir = root.join("etc/sudoers.d");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(&u.name);
        std::fs::write(&path, format!("{} ALL=(ALL:ALL) NOPASSWD: ALL\n", u.name))
            .context("cannot write sudoers drop-in")?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440))?;
    }
    Ok(())
}

pub fn service(run: &Run, s: &Service) -> anyhow::Result<()> {
    let units = s.name.to_vec();
    if units.is_empty() {
        bail!("service needs `name:` (a unit or a list of units)");
    }
    if s.enabled.is_none() && s.masked.is_none() {
        bail!("service needs `enabled:` and/or `masked:`");
    }
    if run.dry {
        return Ok(());
    }
    let mut verbs = Vec::new();
    match s.masked {
        Some(true) => verbs.push("mask"),
        Some(false) => verbs.push("unmask"),
        None => {}
    }
    match s.enabled {
        Some(true) => verbs.push("enable"),
        Some(false) => verbs.push("disable"),
        None => {}
    }
    for verb in verbs {
        go(
            run,
            in_chroot(run, "systemctl")
                .args(["--no-reload", verb])
                .args(&units),
        )?;
    }
    Ok(())
}

pub fn debconf(run: &Run, d: &Debconf) -> anyhow::Result<()> {
    if [&d.name, &d.question, &d.vtype]
        .iter()
        .any(|s| s.contains(char::is_whitespace) || s.is_empty())
    {
        bail!("debconf name, question and vtype must be single words");
    }
    if run.dry {
        return Ok(());
    }
    let line = format!("{} {} {} {}\n", d.name, d.question, d.vtype, d.value);
    go(
        run,
        in_chroot(run, "debconf-set-selections").stdin_bytes(line),
    )
}
