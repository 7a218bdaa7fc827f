//! Bootstrapping a Debian tree with mmdebstrap or debootstrap, through the
//! apt proxy and the shared `.deb` cache, and the cache of bootstrapped
//! trees by their inputs (copied, never modified).

use std::fs;
use std::path::Path;

use anyhow::Context;

/// What to bootstrap, from the build's config.
#[derive(Debug, Clone)]
pub struct Bootstrap<'a> {
    pub cfg: &'a crate::config::Config,
    /// The shared .deb cache directory.
    pub cache: &'a Path,
}

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
/// touched), else a fresh bootstrap, which is then cached.
pub fn prepare(b: &Bootstrap, cache_root: &Path, target: &Path, progress: &crate::progress::Progress) -> anyhow::Result<()> {
    let cfg = b.cfg;
    let program = pick(cfg.bootstrapper)?;
    let key = cache_key(cfg, program);
    let cached = cache_root.join("bootstrap").join(&key);
    if cfg.bootstrap_cache && cached.is_dir() {
        progress.step(format!("bootstrap {}: reuse cached tree {}", cfg.suite, &key[..12]));
        return copy_tree(&cached, target);
    }
    run(b, target, progress)?;
    if cfg.bootstrap_cache {
        let dir = cache_root.join("bootstrap");
        fs::create_dir_all(&dir)?;
        let staging = tempfile::Builder::new().prefix(".new.").tempdir_in(&dir)?;
        copy_tree(target, staging.path())?;
        let staged = staging.keep();
        if fs::rename(&staged, &cached).is_err() {
            // Another build cached the same inputs first.
            let _ = fs::remove_dir_all(&staged);
        }
    }
    Ok(())
}

/// What identifies a bootstrapped tree (the proxy is not part of it).
pub fn cache_key(cfg: &crate::config::Config, program: &str) -> String {
    let text = format!(
        "{program}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        cfg.suite, cfg.variant, cfg.arch, cfg.components.join(","), cfg.mirror, cfg.packages.join(","), cfg.exclude.join(",")
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

/// Bootstrap a Debian tree into `target` (an empty directory) with the
/// configured bootstrapper, through the apt proxy, keeping the downloaded
/// .debs in the shared cache so the next build does not fetch them again.
pub fn run(b: &Bootstrap, target: &Path, progress: &crate::progress::Progress) -> anyhow::Result<()> {
    let cfg = b.cfg;
    let program = pick(cfg.bootstrapper)?;
    if program == "mmdebstrap" && !cfg.exclude.is_empty() {
        return Err(crate::UsageError(format!(
            "{}: `exclude:` is a debootstrap option (mmdebstrap has none); set `bootstrapper: debootstrap` or remove packages in a role",
            cfg.file.display()
        ))
        .into());
    }
    if program == "debootstrap" {
        if let Some(pin) = cfg.packages.iter().find(|p| p.contains('=')) {
            return Err(crate::UsageError(format!(
                "{}: package pin `{pin}` in `packages:` needs mmdebstrap (debootstrap cannot pin); install it or pin in a role's apt task",
                cfg.file.display()
            ))
            .into());
        }
    }
    fs::create_dir_all(b.cache).with_context(|| format!("cannot create package cache {}", b.cache.display()))?;
    let cache = b.cache.canonicalize()?;
    progress.step(format!("bootstrap {} ({program}, {}, {})", cfg.suite, cfg.variant, cfg.arch));
    let started = std::time::Instant::now();
    let _lock = crate::apt::lock::package_cache(&cache)?;
    let cmd = match program {
        "mmdebstrap" => mmdebstrap(cfg, &cache, target),
        _ => debootstrap(cfg, &cache, target),
    };
    cmd.run_with(|line| progress.output(line)).with_context(|| format!("bootstrapping {} with {program} failed", cfg.suite))?;
    progress.done(format!("bootstrapped in {:.1}s", started.elapsed().as_secs_f64()));
    Ok(())
}

fn mmdebstrap(cfg: &crate::config::Config, cache: &Path, target: &Path) -> crate::exec::Cmd {
    let q = |p: &Path| crate::exec::shell_quote(&p.to_string_lossy());
    let archives = "\"$1\"/var/cache/apt/archives";
    let mut cmd = crate::exec::Cmd::new("mmdebstrap")
        .arg("--mode=root")
        .arg(format!("--variant={}", cfg.variant))
        .arg(format!("--architectures={}", cfg.arch))
        .arg(format!("--components={}", cfg.components.join(",")))
        // The shared cache is bind-mounted over the tree's archive dir for the
        // whole run and unmounted before mmdebstrap finishes, so the .debs
        // stay in the cache and never in the tree.
        .arg("--skip=essential/unlink")
        .arg("--skip=download/empty")
        .arg("--skip=cleanup/apt/cache")
        .arg(format!("--setup-hook=mkdir -p {archives} && mount --bind {} {archives}", q(cache)))
        .arg(format!("--customize-hook=umount {archives}"))
        .arg("--aptopt=APT::Keep-Downloaded-Packages \"true\"");
    if let Some(proxy) = &cfg.apt_proxy {
        cmd = cmd.arg(format!("--aptopt=Acquire::http::Proxy \"{proxy}\""));
    }
    if !cfg.packages.is_empty() {
        cmd = cmd.arg(format!("--include={}", cfg.packages.join(",")));
    }
    cmd.arg(&cfg.suite).arg(target).arg(&cfg.mirror)
}

fn debootstrap(cfg: &crate::config::Config, cache: &Path, target: &Path) -> crate::exec::Cmd {
    let mut cmd = crate::exec::Cmd::new("debootstrap")
        .arg(format!("--variant={}", cfg.variant))
        .arg(format!("--arch={}", cfg.arch))
        .arg(format!("--components={}", cfg.components.join(",")))
        .arg(format!("--cache-dir={}", cache.display()));
    if !cfg.packages.is_empty() {
        cmd = cmd.arg(format!("--include={}", cfg.packages.join(",")));
    }
    if !cfg.exclude.is_empty() {
        cmd = cmd.arg(format!("--exclude={}", cfg.exclude.join(",")));
    }
    if let Some(proxy) = &cfg.apt_proxy {
        cmd = cmd.env("http_proxy", proxy);
    }
    cmd.arg(&cfg.suite).arg(target).arg(&cfg.mirror)
}
