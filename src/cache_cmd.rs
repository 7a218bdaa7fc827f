//! `mkimage cache`: what the shared caches hold, how big each part is, and
//! pruning by age (`--older-than`) and total size (`--max-size`), least
//! recently used first. The caches (`OUT/.cache` or `cache_dir:`) are:
//! `debs/` (every downloaded package, and the kernel image each basefs
//! build left out, `PACKAGE_VERSION.vmlinuz`), `bootstrap/` (bootstrapped trees and
//! unpacked stage archives by their inputs), `layers/` (what each task of
//! a role changed, by the task's key), `apt/` (the private apt for kernel
//! and busybox packages: its lists, `.deb`s and unpacked packages).
//! `apt-lists/` (the package lists the bootstrap and the roles share, a
//! few dozen MB per source) is not pruned: the next `apt-get update`
//! would fetch it all again.
//! Anything in use by a running build is skipped: pruning takes the same
//! locks the builds hold.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;

use crate::UsageError;

/// What `mkimage cache` does.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The cache dir (`OUT/.cache`, or a build's `cache_dir:`).
    pub cache_dir: PathBuf,
    /// Remove what was last used longer ago than this.
    pub older_than: Option<Duration>,
    /// Then remove the least recently used until the total is at most this.
    pub max_size: Option<u64>,
    /// Say what would go, remove nothing.
    pub dry_run: bool,
}

/// One removable thing in the cache.
#[derive(Debug, Clone)]
pub struct Item {
    pub part: &'static str,
    pub path: PathBuf,
    pub size: u64,
    pub last_used: SystemTime,
    /// The lock a build holds while using it, if any (`dir`, `file`).
    lock: Option<(PathBuf, String)>,
}

/// Every item of the cache, in no particular order.
pub fn items(cache: &Path) -> Vec<Item> {
    let mut out = Vec::new();
    let debs_lock = Some((cache.join("debs"), ".mkimage-lock".to_string()));
    for path in entries(&cache.join("debs"), |n| {
        n.ends_with(".deb") || n.ends_with(".vmlinuz")
    }) {
        out.push(item("debs", path, debs_lock.clone()));
    }
    let trees = cache.join("bootstrap");
    let stamps = [crate::bootstrap::USED, crate::bootstrap::ID, ".lock"];
    for path in entries(&trees, |n| {
        !n.starts_with('.') && !stamps.iter().any(|s| n.ends_with(s))
    }) {
        let key = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        // A tree's files keep their package mtimes and are read on every
        // reuse; its stamp says when a build last used it.
        let stamp = trees.join(format!("{key}{}", crate::bootstrap::USED));
        out.push(keyed("bootstrap", &trees, path, &stamp));
    }
    let layers = cache.join(crate::provision::layers::LAYERS);
    for path in entries(&layers, |n| !n.starts_with('.') && !n.ends_with(".lock")) {
        let stamp = path.join(crate::provision::layers::USED);
        out.push(keyed("layers", &layers, path, &stamp));
    }
    let apt = cache.join("apt");
    for sub in fs::read_dir(&apt)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
    {
        for path in entries(&sub.join("debs"), |n| n.ends_with(".deb"))
            .into_iter()
            .chain(entries(&sub.join("unpacked"), |n| !n.starts_with('.')))
        {
            out.push(item("apt", path, Some((sub.clone(), "lock".to_string()))));
        }
    }
    out
}

/// An entry of a keyed store (`DIR/KEY`, held by builds through
/// `DIR/KEY.lock`), last used when its stamp says.
fn keyed(part: &'static str, dir: &Path, path: PathBuf, stamp: &Path) -> Item {
    let key = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut it = item(part, path, None);
    if let Ok(t) = fs::metadata(stamp)
        .or_else(|_| fs::metadata(&it.path))
        .and_then(|m| m.modified())
    {
        it.last_used = t;
    }
    it.lock = Some((dir.to_path_buf(), format!("{key}.lock")));
    it
}

fn entries(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| keep(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

fn item(part: &'static str, path: PathBuf, lock: Option<(PathBuf, String)>) -> Item {
    let (size, last_used) = usage(&path);
    Item {
        part,
        path,
        size,
        last_used,
        lock,
    }
}

/// Bytes under `path` and when it was last used (newest mtime or atime of its files).
fn usage(path: &Path) -> (u64, SystemTime) {
    let mut size = 0;
    let mut last = SystemTime::UNIX_EPOCH;
    for entry in crate::archive::walk(path).unwrap_or_default() {
        if entry.meta.is_file() {
            size += entry.meta.len();
        }
        for t in [entry.meta.modified(), entry.meta.accessed()]
            .into_iter()
            .flatten()
        {
            last = last.max(t);
        }
    }
    (size, last)
}

/// `mkimage cache`: show, and prune if asked.
pub fn run(req: &Request) -> anyhow::Result<()> {
    if !req.cache_dir.is_dir() {
        return Err(UsageError(format!(
            "{}: no cache there yet (builds create it; pass --dir OUT or --cache-dir DIR)",
            req.cache_dir.display()
        ))
        .into());
    }
    let mut all = items(&req.cache_dir);
    let removed = prune(&mut all, req)?;
    print!("{}", summary(&req.cache_dir, &all, &removed, req.dry_run));
    Ok(())
}

/// Remove (or with `dry_run`, pick) what the limits say must go.
fn prune(all: &mut Vec<Item>, req: &Request) -> anyhow::Result<Vec<Item>> {
    all.sort_by_key(|i| i.last_used);
    let now = SystemTime::now();
    let mut total: u64 = all.iter().map(|i| i.size).sum();
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    for it in all.drain(..) {
        let too_old = req
            .older_than
            .is_some_and(|age| now.duration_since(it.last_used).unwrap_or_default() > age);
        let too_big = req.max_size.is_some_and(|max| total > max);
        if (too_old || too_big) && (req.dry_run || remove(&it)?) {
            total -= it.size;
            removed.push(it);
        } else {
            kept.push(it);
        }
    }
    *all = kept;
    Ok(removed)
}

/// Remove one item unless a build holds it; true if removed.
fn remove(it: &Item) -> anyhow::Result<bool> {
    let _held = match &it.lock {
        Some((dir, name)) if dir.is_dir() => {
            let file = fs::File::create(dir.join(name))
                .with_context(|| format!("cannot open the lock {}", dir.join(name).display()))?;
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(lock) => Some(lock),
                Err(_) => {
                    tracing::info!("{} is in use by a build; kept", it.path.display());
                    return Ok(false);
                }
            }
        }
        _ => None,
    };
    let result = if it.path.is_dir() {
        fs::remove_dir_all(&it.path)
    } else {
        fs::remove_file(&it.path)
    };
    result.with_context(|| format!("cannot remove {}", it.path.display()))?;
    // A tree's stamps and lock go with it (a build that opens the lock
    // after this finds no tree and makes a new one).
    if let Some((dir, lock)) = &it.lock {
        if it.part == "bootstrap" || it.part == "layers" {
            for suffix in [crate::bootstrap::USED, crate::bootstrap::ID] {
                let _ = fs::remove_file(it.path.with_file_name(format!(
                    "{}{suffix}",
                    it.path.file_name().unwrap_or_default().to_string_lossy()
                )));
            }
            let _ = fs::remove_file(dir.join(lock));
        }
    }
    Ok(true)
}

fn summary(cache: &Path, kept: &[Item], removed: &[Item], dry_run: bool) -> String {
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    let mut out = format!("cache {}\n", cache.display());
    for part in ["debs", "bootstrap", "layers", "apt"] {
        let of: Vec<&Item> = kept.iter().filter(|i| i.part == part).collect();
        let size = of.iter().map(|i| i.size).sum();
        out.push_str(&format!(
            "  {part:<10} {:>5} item(s) {:>12}\n",
            of.len(),
            mb(size)
        ));
        if part == "bootstrap" || part == "layers" {
            for tree in of {
                let name = tree
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().chars().take(12).collect::<String>())
                    .unwrap_or_default();
                let used = tree
                    .last_used
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| crate::artifact::utc(d.as_secs()))
                    .unwrap_or_default();
                let (what, made_by) = match part {
                    "layers" => (
                        "layer",
                        fs::read_to_string(tree.path.join(crate::provision::layers::INFO))
                            .map(|t| format!("  ({})", t.trim()))
                            .unwrap_or_default(),
                    ),
                    _ => ("tree", String::new()),
                };
                out.push_str(&format!(
                    "    {what} {name}  {:>12}  last used {used} UTC{made_by}\n",
                    mb(tree.size)
                ));
            }
        }
    }
    out.push_str(&format!(
        "  total      {:>5} item(s) {:>12}\n",
        kept.len(),
        mb(kept.iter().map(|i| i.size).sum())
    ));
    if !removed.is_empty() {
        let verb = if dry_run { "would remove" } else { "removed" };
        out.push_str(&format!(
            "{verb} {} item(s), {}\n",
            removed.len(),
            mb(removed.iter().map(|i| i.size).sum())
        ));
    }
    out
}

/// `30d`, `12h`, `90m`, `45s` (or plain seconds).
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.trim().len()),
    );
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: use a number with s, m, h or d, e.g. 30d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("`{s}`: use s, m, h or d, e.g. 30d")),
    };
    Ok(Duration::from_secs(secs))
}

/// `500M`, `10G`, `2T` (or plain bytes; powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: use a number with K, M, G or T, e.g. 10G"))?;
    let mult = match unit.to_ascii_uppercase().trim_end_matches('B') {
        "" => 1,
        "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return Err(format!("`{s}`: use K, M, G or T, e.g. 10G")),
    };
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aged(path: &Path, bytes: usize, days_ago: u64) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, vec![0u8; bytes]).unwrap();
        let t = SystemTime::now() - Duration::from_secs(days_ago * 86400);
        let f = fs::File::options().write(true).open(path).unwrap();
        f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
            .unwrap();
    }

    #[test]
    fn prunes_by_age_then_size_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path();
        aged(&c.join("debs/old_1.deb"), 1000, 40);
        aged(&c.join("debs/mid_1.deb"), 2000, 10);
        aged(&c.join("debs/new_1.deb"), 3000, 1);
        aged(&c.join("bootstrap/abc/etc/x"), 4000, 5);
        aged(&c.join("bootstrap/abc.used"), 0, 5);
        aged(&c.join("apt/src1/unpacked/busybox_1/bin/busybox"), 500, 2);
        aged(&c.join("layers/k1/tree/etc/x"), 1500, 20);
        aged(&c.join("layers/k1/used"), 0, 20);
        aged(&c.join("layers/k2/tree/etc/y"), 10, 0);
        aged(&c.join("layers/k2/used"), 0, 0);
        let found = items(c);
        assert_eq!(found.len(), 7, "{found:?}");
        let req = Request {
            cache_dir: c.to_path_buf(),
            older_than: Some(parse_age("30d").unwrap()),
            max_size: Some(6000),
            dry_run: false,
        };
        run(&req).unwrap();
        assert!(!c.join("debs/old_1.deb").exists(), "older than 30 days");
        assert!(
            !c.join("debs/mid_1.deb").exists() && !c.join("bootstrap/abc").exists(),
            "least recently used until <= 6000 bytes"
        );
        assert!(
            !c.join("bootstrap/abc.used").exists(),
            "a tree's stamp goes with it"
        );
        assert!(
            !c.join("layers/k1").exists() && !c.join("layers/k1.lock").exists(),
            "a layer unused for 20 days, the lock with it"
        );
        assert!(
            c.join("debs/new_1.deb").exists()
                && c.join("apt/src1/unpacked/busybox_1").exists()
                && c.join("layers/k2/tree/etc/y").exists()
        );
    }

    #[test]
    fn a_tree_or_layer_in_use_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path();
        aged(&c.join("bootstrap/abc/etc/x"), 10, 50);
        aged(&c.join("layers/k1/tree/etc/x"), 10, 50);
        let store = crate::provision::layers::Store::open(c).unwrap();
        let _layer = store.get("k1").unwrap().expect("stored");
        aged(&c.join("layers/k1/used"), 0, 50);
        let _reader = crate::flock::shared(&c.join("bootstrap"), "abc.lock").unwrap();
        run(&Request {
            cache_dir: c.to_path_buf(),
            older_than: Some(Duration::from_secs(1)),
            ..Default::default()
        })
        .unwrap();
        assert!(c.join("bootstrap/abc").exists() && c.join("layers/k1/tree").exists());
    }

    #[test]
    fn units() {
        assert_eq!(parse_age("30d").unwrap(), Duration::from_secs(30 * 86400));
        assert_eq!(parse_age("90").unwrap(), Duration::from_secs(90));
        assert!(parse_age("3w").is_err());
        assert_eq!(parse_size("10G").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("500mb").unwrap(), 500_000_000);
        assert!(parse_size("x").is_err());
    }
}
