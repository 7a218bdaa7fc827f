//! Bootstrapping a Debian tree with debootstrap or mmdebstrap, and finding
//! the mirror the build host's own apt uses.

use std::fs;
use std::path::Path;

use anyhow::Context;

/// The Debian mirror of the host's apt sources (deb822 `.sources` files
/// first, then `sources.list`): the first `deb` URI that serves Debian's main
/// archive (not `-security`, not a `file:` or `cdrom:` source).
pub fn host_mirror() -> anyhow::Result<String> {
    host_mirror_in(Path::new("/etc/apt"))
}

pub fn host_mirror_in(apt_dir: &Path) -> anyhow::Result<String> {
    let mut candidates = Vec::new();
    let mut files: Vec<_> = fs::read_dir(apt_dir.join("sources.list.d"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "sources")) {
        let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
                })
            };
            let enabled = field("Enabled").is_none_or(|v| v != "no");
            if enabled && field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb")) {
                for uri in field("URIs").unwrap_or_default().split_whitespace() {
                    candidates.push(uri.to_string());
                }
            }
        }
    }
    for path in [apt_dir.join("sources.list")].iter().chain(files.iter().filter(|p| p.extension().is_some_and(|e| e == "list"))) {
        if let Ok(text) = fs::read_to_string(path) {
            for line in text.lines() {
                let mut words = line.split_whitespace().filter(|w| !w.starts_with('['));
                if words.next() == Some("deb") {
                    if let Some(uri) = words.next() {
                        candidates.push(uri.to_string());
                    }
                }
            }
        }
    }
    candidates
        .into_iter()
        .find(|u| (u.starts_with("http://") || u.starts_with("https://")) && !u.trim_end_matches('/').ends_with("-security"))
        .map(|u| u.trim_end_matches('/').to_string())
        .ok_or_else(|| {
            anyhow::anyhow!(crate::UsageError(format!(
                "no Debian mirror found in {}/sources.list or sources.list.d/*.sources; set `mirror:` in your vars file (e.g. vars/common.yml)",
                apt_dir.display()
            )))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_deb822_and_skips_security() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sources.list.d")).unwrap();
        fs::write(
            dir.path().join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n\nTypes: deb deb-src\nURIs: http://mirror.invalid/debian/\nSuites: bookworm\n",
        )
        .unwrap();
        assert_eq!(host_mirror_in(dir.path()).unwrap(), "http://mirror.invalid/debian");
    }

    #[test]
    fn reads_one_line_format() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("sources.list"), "# x\ndeb [arch=amd64] http://mirror.invalid/debian bookworm main\n").unwrap();
        assert_eq!(host_mirror_in(dir.path()).unwrap(), "http://mirror.invalid/debian");
    }

    #[test]
    fn none_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = host_mirror_in(dir.path()).unwrap_err();
        assert_eq!(crate::exit_code(&err), 2);
        assert!(err.to_string().contains("mirror:"));
    }
}

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

/// Take the package cache's lock (blocking): builds share the cache, and
/// apt and the bootstrappers must not download into it at the same time.
pub fn lock_cache(dir: &Path) -> anyhow::Result<Option<nix::fcntl::Flock<fs::File>>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let file = fs::File::create(dir.join(".mkimage-lock")).with_context(|| format!("cannot create a lock in {}", dir.display()))?;
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("cannot lock {}", dir.display()))?;
    Ok(Some(lock))
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
    let _lock = lock_cache(&cache)?;
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
