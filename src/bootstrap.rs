//! Bootstrapping a Debian tree with mmdebstrap or debootstrap, through the
//! apt proxy, the shared `.deb` cache and the shared package lists, and the
//! cache of bootstrapped trees by their inputs (mounted read-only under a
//! build, never modified); or the tree of a stage archive (`--from`),
//! cached the same way.
//!
//! A bootstrap that fails only in ways a mirror mends by itself
//! (`apt::failure`: a file caught mid-sync, a 5xx, a dropped connection)
//! runs again from an empty target; one that fails for good says so in one
//! line: the mirror's file and what is wrong with it, or the filesystem that
//! filled up (`space`).

mod space;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::Flock;

use crate::config::Plan;
use crate::lockfile::Pinned;
use crate::sys::write_behind::WriteBehind;

/// The program `bootstrapper: auto` picks: mmdebstrap when installed.
pub fn pick(choice: crate::config::Bootstrapper) -> anyhow::Result<&'static str> {
    use crate::config::Bootstrapper::*;
    let program = match choice {
        Mmdebstrap => "mmdebstrap",
        Debootstrap => "debootstrap",
        Auto if crate::exec::have("mmdebstrap") => "mmdebstrap",
        Auto => "debootstrap",
    };
    if !crate::exec::have(program) {
        return Err(crate::UsageError(format!(
            "`{program}` is not installed: apt-get install -y {program}"
        ))
        .into());
    }
    Ok(program)
}

/// The tree a basefs's roles start from, mounted read-only under them and
/// never modified: a cached tree (held, so `mkimage cache` leaves it
/// alone while the build runs), or a fresh one in the build dir.
pub struct BaseTree {
    pub path: PathBuf,
    /// Names the tree's content, for the layers built on it: a fresh id
    /// per bootstrap, the archive's hash for a `--from` tree.
    pub id: String,
    _held: Option<Flock<fs::File>>,
}

/// Where a basefs's tree comes from.
pub struct Source<'a> {
    /// `--from`: a stage archive instead of a bootstrap.
    pub from: Option<&'a Path>,
    /// The package index (or lock file) digest the bootstrap installs from.
    pub packages: &'a str,
    /// Reuse and keep trees in `CACHE/bootstrap` (false: `bootstrap_cache:
    /// false`, `--no-cache`).
    pub cache: bool,
    /// The lock in force, if any: the bootstrap installs exactly its versions.
    pub pins: Option<&'a Pinned>,
    /// Set when the build dir is in RAM: a fresh tree is used from there
    /// and copied into the cache behind the build.
    pub behind: Option<&'a WriteBehind>,
}

/// The tree for a basefs build: a cached tree with the same inputs (the
/// bootstrap's options and package index, or the stage archive), else a
/// fresh bootstrap (or unpacked archive) in `work`, which is then moved
/// into the cache. What goes into the cache carries nothing of this
/// build's apt settings (proxy, cache).
pub fn base_tree(
    plan: &Plan,
    work: &Path,
    src: &Source,
    progress: &crate::progress::Progress,
) -> anyhow::Result<BaseTree> {
    let key = match src.from {
        Some(archive) => crate::artifact::sha256_bytes(
            format!("from\n{}", crate::artifact::sha256_file(archive)?.1).as_bytes(),
        ),
        None => cache_key(plan, pick(plan.bootstrapper)?, src.packages),
    };
    let trees = plan.cache_dir.join("bootstrap");
    if src.cache {
        if let Some(tree) = cached(&trees, &key)? {
            progress.step(format!(
                "bootstrap {}: reuse cached tree {}",
                plan.suite,
                &key[..12]
            ));
            return Ok(tree);
        }
    }
    let fresh = work.join("bootstrap");
    match src.from {
        Some(archive) => {
            progress.step(format!("unpack the stage archive {}", archive.display()));
            crate::tree_tar::extract(archive, &fresh)?;
        }
        None => {
            run(plan, &fresh, src.pins, src.behind.is_some(), progress)?;
            // mmdebstrap writes every --aptopt (our proxy and cache settings)
            // here; the roles get their own for the build.
            let _ = fs::remove_file(fresh.join(MMDEBSTRAP_APT_CONF));
        }
    }
    let id = if src.from.is_some() {
        key.clone()
    } else {
        fresh_id(&key)
    };
    if !src.cache {
        return Ok(BaseTree {
            path: fresh,
            id,
            _held: None,
        });
    }
    if let Some(behind) = src.behind {
        let what = format!("bootstrapped tree {}", &key[..12]);
        let (id_, from) = (id.clone(), fresh.clone());
        behind.submit(what, move || keep(&trees, &key, &id_, &from, false));
        return Ok(BaseTree {
            path: fresh,
            id,
            _held: None,
        });
    }
    keep(&trees, &key, &id, &fresh, true)?;
    cached(&trees, &key)?.ok_or_else(|| {
        anyhow::anyhow!(
            "the cached tree {} was removed as it was stored",
            trees.join(&key).display()
        )
    })
}

/// Put the tree `fresh` into the cache as `trees/KEY` with its id: moved
/// (`take`), or copied (the build goes on using it). When another build
/// cached the same inputs first, that tree stays.
fn keep(trees: &Path, key: &str, id: &str, fresh: &Path, take: bool) -> anyhow::Result<()> {
    for stale in crate::flock::stale(trees, |n| n.starts_with(".new.")) {
        tracing::info!("removing {} left by an interrupted build", stale.display());
        let _ = fs::remove_dir_all(&stale);
    }
    let staging = crate::flock::claim_dir(trees, ".new.")?;
    let tree = staging.path.join("tree");
    if !take || fs::rename(fresh, &tree).is_err() {
        crate::sys::copy_tree(fresh, &tree)?;
    }
    crate::artifact::write_atomic(trees, &format!("{key}{ID}"), |f| f.write_all(id.as_bytes()))?;
    let _ = fs::rename(&tree, trees.join(key));
    let _ = fs::remove_dir_all(&staging.path);
    Ok(())
}

/// The cached tree `trees/KEY`, held (shared) until dropped, if there is one.
fn cached(trees: &Path, key: &str) -> anyhow::Result<Option<BaseTree>> {
    let path = trees.join(key);
    if !path.is_dir() {
        return Ok(None);
    }
    let held = crate::flock::shared(trees, &format!("{key}.lock"))?;
    if !path.is_dir() {
        return Ok(None);
    }
    touch(&trees.join(format!("{key}{USED}")));
    let id_file = format!("{key}{ID}");
    let id = match fs::read_to_string(trees.join(&id_file)) {
        Ok(id) => id,
        Err(_) => {
            // A tree cached before trees had ids.
            let id = fresh_id(key);
            crate::artifact::write_atomic(trees, &id_file, |f| f.write_all(id.as_bytes()))?;
            id
        }
    };
    Ok(Some(BaseTree {
        path,
        id,
        _held: Some(held),
    }))
}

/// An id no other tree has.
fn fresh_id(key: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    crate::artifact::sha256_bytes(format!("{key} {} {now}", std::process::id()).as_bytes())
}

/// Where mmdebstrap keeps the apt options it was given.
pub const MMDEBSTRAP_APT_CONF: &str = "etc/apt/apt.conf.d/99mmdebstrap";
/// Where mmdebstrap keeps the dpkg options it was given.
pub const MMDEBSTRAP_DPKG_CONF: &str = "etc/dpkg/dpkg.cfg.d/99mmdebstrap";

/// Suffix of the stamp file whose mtime says when a cached tree was last used.
pub const USED: &str = ".used";
/// Suffix of the file holding a cached tree's id.
pub const ID: &str = ".id";

fn touch(path: &Path) {
    let _ = fs::write(path, b"");
}

/// What identifies a bootstrapped tree: the bootstrap's options, the
/// package index (or lock file) it installed from and SOURCE_DATE_EPOCH
/// (e.g. /etc/shadow's change dates); not the proxy.
pub fn cache_key(plan: &Plan, program: &str, packages: &str) -> String {
    // The hook makes another tree (no usrmerge, no perl).
    let hook = if program == "mmdebstrap" && merged_usr_hook(plan) {
        "+merged-usr"
    } else {
        ""
    };
    let text = format!(
        "{program}{hook}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{packages}\n{}",
        plan.suite,
        plan.variant,
        plan.arch,
        plan.components.join(","),
        plan.mirror,
        plan.packages.join(","),
        plan.exclude.join(","),
        plan.source_date_epoch
    );
    crate::artifact::sha256_bytes(text.as_bytes())
}

/// What can be known wrong before bootstrapping: the bootstrapper is
/// installed and takes the options given. Returns the program.
pub fn preflight(plan: &Plan) -> anyhow::Result<&'static str> {
    let program = pick(plan.bootstrapper)?;
    if program == "mmdebstrap" && !plan.exclude.is_empty() {
        return Err(crate::UsageError(format!(
            "{}: `exclude:` is a debootstrap option (mmdebstrap has none); set `bootstrapper: debootstrap` or remove packages in a role",
            plan.file.display()
        ))
        .into());
    }
    if program == "debootstrap" {
        if let Some(lock) = &plan.lock {
            return Err(crate::UsageError(format!(
                "{}: `lock: {}` needs mmdebstrap (debootstrap cannot pin versions); install it or set `bootstrapper: mmdebstrap`",
                plan.file.display(),
                lock.display()
            ))
            .into());
        }
        if let Some(pin) = plan.packages.iter().find(|p| p.contains('=')) {
            return Err(crate::UsageError(format!(
                "{}: package pin `{pin}` in `packages:` needs mmdebstrap (debootstrap cannot pin); install it or pin in a role's apt task",
                plan.file.display()
            ))
            .into());
        }
    }
    Ok(program)
}

/// Bootstrap a Debian tree into `target` (an empty directory) with the
/// configured bootstrapper, through the apt proxy, keeping the downloaded
/// .debs in the shared cache so the next build does not fetch them again.
/// `in_ram`: `target` is in the build's own tmpfs (`build_dir:`), which a
/// full-filesystem error then names.
pub fn run(
    plan: &Plan,
    target: &Path,
    pins: Option<&Pinned>,
    in_ram: bool,
    progress: &crate::progress::Progress,
) -> anyhow::Result<()> {
    let program = preflight(plan)?;
    let cache = plan.package_cache();
    fs::create_dir_all(&cache)
        .with_context(|| format!("cannot create package cache {}", cache.display()))?;
    progress.step(format!(
        "bootstrap {} ({program}, {}, {})",
        plan.suite, plan.variant, plan.arch
    ));
    let started = std::time::Instant::now();
    // mmdebstrap's apt fetches into the shared lists; debootstrap keeps
    // its indexes to itself.
    let lists =
        (program == "mmdebstrap").then(|| plan.apt_lists(pins.is_some_and(|p| p.repo.is_some())));
    // The lists before the .debs, in the order the roles' apt tasks take them.
    let _lists = match &lists {
        Some(lists) => shared_lists(lists, progress)?,
        None => None,
    };
    let _lock = crate::flock::package_cache(&cache)?;
    let cmd = match &lists {
        Some(lists) => mmdebstrap(plan, &cache, lists, target, pins)?,
        None => debootstrap(plan, &cache, target),
    };
    attempts(plan, &cmd, (target, in_ram), &cache, progress)
        .with_context(|| format!("bootstrapping {} with {program} failed", plan.suite))?;
    progress.done(format!(
        "bootstrapped in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Create the shared lists dir `lists` (and its `partial/`) and hold it
/// until dropped, saying so when another build holds it first.
pub fn shared_lists(
    lists: &Path,
    progress: &crate::progress::Progress,
) -> anyhow::Result<Option<Flock<fs::File>>> {
    fs::create_dir_all(lists.join("partial"))
        .with_context(|| format!("cannot create the apt lists dir {}", lists.display()))?;
    crate::flock::apt_lists(lists, || {
        progress.done(format!(
            "waiting for another build using the apt lists {}",
            lists.display()
        ))
    })
}

/// A bootstrap attempt that failed: the bootstrapper (and its output), or
/// emptying the target before another.
enum Attempt {
    Failed(crate::exec::ExecError, String),
    Clear(anyhow::Error),
}

/// Run the bootstrapper, again from an empty target while it fails only in
/// ways that pass (`exec::Retry::MIRROR`); a failure for good is one line
/// when it is the mirror's (`MirrorError`) or a full disk (`space`).
fn attempts(
    plan: &Plan,
    cmd: &crate::exec::Cmd,
    (target, in_ram): (&Path, bool),
    cache: &Path,
    progress: &crate::progress::Progress,
) -> anyhow::Result<()> {
    use crate::apt::failure::{self, Failure, MirrorError};
    let mirror = plan.mirror.trim_end_matches('/');
    let kept = crate::apt::index::kept(&plan.cache_dir, mirror, &plan.suite);
    // The InReleases that name the files of by-hash URLs.
    let inreleases = || -> Vec<PathBuf> {
        let lists = target.join("var/lib/apt/lists");
        let mut found: Vec<PathBuf> = [lists.join("partial"), lists]
            .iter()
            .filter_map(|d| fs::read_dir(d).ok())
            .flat_map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with("_InRelease"))
            .collect();
        found.push(kept.clone());
        found
    };
    let before = space::Before::measure(target, in_ram, cache);
    let mut first = true;
    let attempt = || -> Result<(), Attempt> {
        if !std::mem::take(&mut first) {
            clear(target).map_err(Attempt::Clear)?;
        }
        let mut output = String::new();
        cmd.run_with(|line| {
            progress.output(line);
            output.push_str(line);
            output.push('\n');
        })
        .map(drop)
        .map_err(|e| Attempt::Failed(e, output))
    };
    let passing = |a: &Attempt| {
        let Attempt::Failed(_, output) = a else {
            return None;
        };
        let failures = failure::parse(output);
        let first = failures.first()?;
        (!space::is_full(output) && failures.iter().all(Failure::transient))
            .then(|| first.describe(mirror, &inreleases()))
    };
    let gave_up = match crate::exec::retry(crate::exec::Retry::MIRROR, attempt, passing) {
        Ok(()) => return Ok(()),
        Err(gave_up) => gave_up,
    };
    let (error, output) = match gave_up.error {
        Attempt::Clear(e) => return Err(e),
        Attempt::Failed(error, output) => (error, output),
    };
    tracing::debug!("{error}");
    if space::is_full(&output) {
        let need = space::Need {
            suite: &plan.suite,
            variant: &plan.variant,
            arch: &plan.arch,
            components: &plan.components,
            include: &plan.packages,
            target,
            inrelease: Some(&kept),
        };
        anyhow::bail!(space::full_error(&before, &need));
    }
    let failures = failure::parse(&output);
    match MirrorError::new(
        &failures,
        mirror,
        &inreleases(),
        gave_up.retries,
        gave_up.elapsed,
    ) {
        Some(e) => Err(e.into()),
        None => Err(error.into()),
    }
}

/// Empty the target for another attempt: what the bootstrapper mounted in
/// it (the package cache and the lists, bound over its archives and its
/// lists) first.
fn clear(target: &Path) -> anyhow::Result<()> {
    // What the failed attempt left half-fetched in the shared lists (held
    // by this build): the next starts those downloads afresh, as from an
    // empty target.
    let partial = target.join("var/lib/apt/lists/partial");
    for entry in fs::read_dir(&partial).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(entry.path());
        }
    }
    crate::sys::unmount_all(&crate::sys::REAL, target)?;
    crate::sys::remove_tree(&crate::sys::REAL, target)
}

/// mmdebstrap's hook that merges /usr the way debootstrap does, without the
/// usrmerge package (see `suite::Suite::merged_usr_hook`).
const MERGED_USR_HOOK: &str = "/usr/share/mmdebstrap/hooks/merged-usr";

/// Whether mmdebstrap merges `plan`'s /usr with `MERGED_USR_HOOK`.
fn merged_usr_hook(plan: &Plan) -> bool {
    crate::suite::lookup(&plan.suite).is_some_and(|s| s.merged_usr_hook)
        && Path::new(MERGED_USR_HOOK).is_dir()
}

fn mmdebstrap(
    plan: &Plan,
    cache: &Path,
    lists: &Path,
    target: &Path,
    pins: Option<&Pinned>,
) -> anyhow::Result<crate::exec::Cmd> {
    let q = |p: &Path| crate::exec::shell_quote(&p.to_string_lossy());
    let archives = "\"$1\"/var/cache/apt/archives";
    let lists_dir = "\"$1\"/var/lib/apt/lists";
    // SOURCE_DATE_EPOCH: the tree is the same on any day (maintainer
    // scripts stamp dates, e.g. /etc/shadow's), cached or not.
    let mut cmd = crate::exec::Cmd::new("mmdebstrap")
        .env("SOURCE_DATE_EPOCH", plan.source_date_epoch.to_string())
        .arg("--mode=root")
        .arg(format!("--variant={}", plan.variant))
        .arg(format!("--architectures={}", plan.arch))
        .arg(format!("--components={}", plan.components.join(",")))
        // The shared cache is bind-mounted over the tree's archive dir for the
        // whole run and unmounted before mmdebstrap finishes, so the .debs
        // stay in the cache and never in the tree.
        .arg("--skip=essential/unlink")
        .arg("--skip=download/empty")
        .arg("--skip=cleanup/apt/cache")
        .arg(format!(
            "--setup-hook=mkdir -p {archives} && mount --bind {} {archives}",
            q(cache)
        ))
        .arg(format!("--customize-hook=umount {archives}"))
        // The shared package lists, the same way: apt's update finds the
        // last build's lists and fetches only what changed; unmounted
        // before mmdebstrap's cleanup, which then finds none to remove.
        .arg(format!(
            "--setup-hook=mkdir -p {lists_dir} && mount --bind {} {lists_dir}",
            q(lists)
        ))
        .arg(format!("--customize-hook=umount {lists_dir}"))
        .arg("--aptopt=APT::Keep-Downloaded-Packages \"true\"")
        // dpkg without fsync (the tree is packed afterwards; a crashed
        // bootstrap starts over); the option's file is not shipped.
        .arg("--dpkgopt=force-unsafe-io")
        .arg(format!(
            "--customize-hook=rm -f \"$1\"/{MMDEBSTRAP_DPKG_CONF}"
        ));
    if let Some(proxy) = &plan.apt_proxy {
        cmd = cmd.arg(format!("--aptopt=Acquire::http::Proxy \"{proxy}\""));
    }
    if merged_usr_hook(plan) {
        cmd = cmd.arg(format!("--hook-dir={MERGED_USR_HOOK}"));
    }
    if !plan.packages.is_empty() {
        cmd = cmd.arg(format!("--include={}", plan.packages.join(",")));
    }
    let (mut cmd, extra) = match pins {
        Some(pins) => with_pins(cmd, pins, target)?,
        None => (cmd, None),
    };
    cmd = cmd.arg(&plan.suite).arg(target).arg(&plan.mirror);
    Ok(match extra {
        Some(line) => cmd.arg(line),
        None => cmd,
    })
}

/// `cmd` with a lock's pins: its preferences while bootstrapping, and its
/// local repository's source line (returned, for the command's end).
fn with_pins(
    mut cmd: crate::exec::Cmd,
    pins: &Pinned,
    target: &Path,
) -> anyhow::Result<(crate::exec::Cmd, Option<String>)> {
    let q = |p: &Path| crate::exec::shell_quote(&p.to_string_lossy());
    let mut extra = None;
    // apt reads the pins from the tree while bootstrapping; they and the
    // local repository's source line are gone before it is packed.
    let prefs = target.with_file_name(crate::lockfile::PREFERENCES);
    fs::write(&prefs, pins.lock.preferences())
        .with_context(|| format!("cannot write {}", prefs.display()))?;
    let dest = format!(
        "\"$1\"/etc/apt/preferences.d/{}",
        crate::lockfile::PREFERENCES
    );
    cmd = cmd
        .arg(format!(
            "--setup-hook=mkdir -p \"$1\"/etc/apt/preferences.d && cp {} {dest}",
            q(&prefs)
        ))
        .arg(format!("--customize-hook=rm -f {dest}"));
    if let (Some(line), Some(repo)) = (pins.source_line(), &pins.repo) {
        cmd = cmd.arg(format!(
            "--customize-hook=sed -i '\\|{}|d' \"$1\"/etc/apt/sources.list",
            repo.display()
        ));
        extra = Some(line);
    }
    Ok((cmd, extra))
}

fn debootstrap(plan: &Plan, cache: &Path, target: &Path) -> crate::exec::Cmd {
    let mut cmd = crate::exec::Cmd::new("debootstrap")
        .env("SOURCE_DATE_EPOCH", plan.source_date_epoch.to_string())
        .arg(format!("--variant={}", plan.variant))
        .arg(format!("--arch={}", plan.arch))
        .arg(format!("--components={}", plan.components.join(",")))
        .arg(format!("--cache-dir={}", cache.display()));
    if !plan.packages.is_empty() {
        cmd = cmd.arg(format!("--include={}", plan.packages.join(",")));
    }
    if !plan.exclude.is_empty() {
        cmd = cmd.arg(format!("--exclude={}", plan.exclude.join(",")));
    }
    if let Some(proxy) = &plan.apt_proxy {
        cmd = cmd.env("http_proxy", proxy);
    }
    cmd.arg(&plan.suite).arg(target).arg(&plan.mirror)
}
