//! Bootstrapping a Debian tree with mmdebstrap or debootstrap, through the
//! apt proxy and the shared `.deb` cache, and the cache of bootstrapped
//! trees by their inputs (copied, never modified).

use std::fs;
use std::path::Path;

use anyhow::Context;

use crate::config::Plan;

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
        return Err(crate::UsageError(format!("`{program}` is not installed: apt-get install -y {program}")).into());
    }
    Ok(program)
}

/// Fill `target` with a bootstrapped tree: a copy of the cached tree with
/// the same inputs when there is one (the cached tree itself is never
/// touched), else a fresh bootstrap, which is then cached. What goes into
/// the cache carries nothing of this build's apt settings (proxy, cache).
pub fn prepare(plan: &Plan, target: &Path, progress: &crate::progress::Progress) -> anyhow::Result<()> {
    let program = pick(plan.bootstrapper)?;
    let key = cache_key(plan, program);
    let trees = plan.cache_dir.join("bootstrap");
    let cached = trees.join(&key);
    if plan.bootstrap_cache && cached.is_dir() {
        progress.step(format!("bootstrap {}: reuse cached tree {}", plan.suite, &key[..12]));
        // Held while copying, so `mkimage cache` does not prune it meanwhile.
        let _reading = crate::lock::shared(&trees, &format!("{key}.lock"))?;
        touch(&trees.join(format!("{key}{USED}")));
        return copy_tree(&cached, target);
    }
    run(plan, target, progress)?;
    // mmdebstrap writes every --aptopt (our proxy and cache settings) here;
    // the roles get their own for the build, and no later build inherits it.
    let _ = fs::remove_file(target.join(MMDEBSTRAP_APT_CONF));
    if plan.bootstrap_cache {
        for stale in crate::lock::stale(&trees, |n| n.starts_with(".new.")) {
            tracing::info!("removing {} left by an interrupted build", stale.display());
            let _ = fs::remove_dir_all(&stale);
        }
        let staging = crate::lock::claim_dir(&trees, ".new.")?;
        let tree = staging.path.join("tree");
        copy_tree(target, &tree)?;
        if fs::rename(&tree, &cached).is_ok() {
            touch(&trees.join(format!("{key}{USED}")));
        }
        // Else another build cached the same inputs first.
        let _ = fs::remove_dir_all(&staging.path);
    }
    Ok(())
}

/// Where mmdebstrap keeps the apt options it was given.
pub const MMDEBSTRAP_APT_CONF: &str = "etc/apt/apt.conf.d/99mmdebstrap";

/// Suffix of the stamp file whose mtime says when a cached tree was last used.
pub const USED: &str = ".used";

fn touch(path: &Path) {
    let _ = fs::write(path, b"");
}

/// What identifies a bootstrapped tree (the proxy is not part of it).
pub fn cache_key(plan: &Plan, program: &str) -> String {
    let text = format!(
        "{program}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        plan.suite, plan.variant, plan.arch, plan.components.join(","), plan.mirror, plan.packages.join(","), plan.exclude.join(",")
    );
    crate::artifact::sha256_bytes(text.as_bytes())
}

/// `cp -a` (with reflinks where the filesystem has them) of a tree's contents.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to)?;
    crate::exec::Cmd::new("cp")
        .args(["-a", "--reflink=auto", "--"])
        .arg(from.join("."))
        .arg(to)
        .run()
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
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
pub fn run(plan: &Plan, target: &Path, progress: &crate::progress::Progress) -> anyhow::Result<()> {
    let program = preflight(plan)?;
    let cache = plan.package_cache();
    fs::create_dir_all(&cache).with_context(|| format!("cannot create package cache {}", cache.display()))?;
    progress.step(format!("bootstrap {} ({program}, {}, {})", plan.suite, plan.variant, plan.arch));
    let started = std::time::Instant::now();
    let _lock = crate::lock::package_cache(&cache)?;
    let cmd = match program {
        "mmdebstrap" => mmdebstrap(plan, &cache, target),
        _ => debootstrap(plan, &cache, target),
    };
    cmd.run_with(|line| progress.output(line)).with_context(|| format!("bootstrapping {} with {program} failed", plan.suite))?;
    progress.done(format!("bootstrapped in {:.1}s", started.elapsed().as_secs_f64()));
    Ok(())
}

fn mmdebstrap(plan: &Plan, cache: &Path, target: &Path) -> crate::exec::Cmd {
    let q = |p: &Path| crate::exec::shell_quote(&p.to_string_lossy());
    let archives = "\"$1\"/var/cache/apt/archives";
    let mut cmd = crate::exec::Cmd::new("mmdebstrap")
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
        .arg(format!("--setup-hook=mkdir -p {archives} && mount --bind {} {archives}", q(cache)))
        .arg(format!("--customize-hook=umount {archives}"))
        .arg("--aptopt=APT::Keep-Downloaded-Packages \"true\"");
    if let Some(proxy) = &plan.apt_proxy {
        cmd = cmd.arg(format!("--aptopt=Acquire::http::Proxy \"{proxy}\""));
    }
    if !plan.packages.is_empty() {
        cmd = cmd.arg(format!("--include={}", plan.packages.join(",")));
    }
    cmd.arg(&plan.suite).arg(target).arg(&plan.mirror)
}

fn debootstrap(plan: &Plan, cache: &Path, target: &Path) -> crate::exec::Cmd {
    let mut cmd = crate::exec::Cmd::new("debootstrap")
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
