//! The lock file: the exact version and `.deb` sha256 of every package the
//! builds install, written by `mkimage lock` and named by the vars key
//! `lock:`. A build with a lock installs exactly those — apt is pinned to
//! the locked versions (preferences at priority 1001, for the bootstrap, the
//! roles' apt tasks and the initrd's packages), every locked version must
//! be on the mirror or in the `.deb` cache before anything is built
//! (`repo`: cached `.deb`s the mirror dropped are served to apt from a
//! local repository), and what got installed is checked against the lock
//! afterwards.

mod format;
pub mod index;
pub mod repo;

pub use format::{Lock, Locked};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::UsageError;

pub use crate::apt::PREFERENCES;

/// A lock in force for a build: checked against the mirror (and the `.deb`
/// cache), with the local repository for versions only the cache has.
#[derive(Debug, Clone)]
pub struct Pinned {
    pub path: PathBuf,
    pub lock: Lock,
    /// A local repository of cached `.deb`s the mirror no longer has.
    pub repo: Option<PathBuf>,
}

impl Pinned {
    /// Load the lock at `path` (named by `lock:` in `named_in`) for a build
    /// from `src` (for `arch`), and check that every locked version is
    /// available — fetching fresh package lists once per process and lock.
    pub fn prepare(
        path: &Path,
        named_in: &Path,
        src: &crate::apt::AptSource,
        arch: &str,
        debs: &Path,
    ) -> anyhow::Result<Pinned> {
        use std::sync::Mutex;
        static DONE: Mutex<BTreeMap<String, Pinned>> = Mutex::new(BTreeMap::new());
        let lock = Lock::load(path, named_in)?;
        lock.check_for(path, &src.suite, arch)?;
        let memo = format!(
            "{} {}",
            path.display(),
            crate::artifact::sha256_file(path)?.1
        );
        if let Some(done) = DONE.lock().ok().and_then(|m| m.get(&memo).cloned()) {
            return Ok(done);
        }
        tracing::info!(
            "checking the {} locked packages of {} against the mirror",
            lock.packages.len(),
            path.display()
        );
        let wanted = lock
            .packages
            .iter()
            .map(|(n, p)| (n.clone(), p.version.clone()))
            .collect();
        let offered = index::lookup(&index::fresh_lists(src)?, &wanted)?;
        let repo = repo::prepare(&lock, path, &offered, debs, &src.cache_dir)?;
        let pinned = Pinned {
            path: path.to_path_buf(),
            lock,
            repo,
        };
        if let Ok(mut m) = DONE.lock() {
            m.insert(memo, pinned.clone());
        }
        Ok(pinned)
    }

    /// The apt source line of the local repository, if there is one.
    pub fn source_line(&self) -> Option<String> {
        self.repo.as_deref().map(repo::source_line)
    }

    /// Fail when `what` installed anything the lock does not pin.
    pub fn check_installed(
        &self,
        what: &str,
        installed: &BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let wrong = self.lock.mismatches(installed);
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(mismatch_error(&self.path, what, &wrong))
        }
    }
}

/// The error for a build that installed other versions than its lock.
pub fn mismatch_error(path: &Path, what: &str, mismatches: &[String]) -> anyhow::Error {
    let shown: Vec<&str> = mismatches.iter().take(10).map(String::as_str).collect();
    let more = if mismatches.len() > 10 {
        format!(" and {} more", mismatches.len() - 10)
    } else {
        String::new()
    };
    UsageError(format!(
        "{what} installed packages its lock file {} does not pin: {}{more}; a role installs something new (run `mkimage lock` again) or apt ignored a pin",
        path.display(),
        shown.join(", ")
    ))
    .into()
}

/// Where `mkimage lock` writes: `--output`, else the `lock:` every build names.
pub fn target(
    output: Option<&Path>,
    named: &[(PathBuf, Option<PathBuf>)],
) -> Result<PathBuf, UsageError> {
    if let Some(o) = output {
        return Ok(o.to_path_buf());
    }
    let locks: Vec<&PathBuf> = named.iter().filter_map(|(_, l)| l.as_ref()).collect();
    match locks.first() {
        None => Err(UsageError("no build sets `lock:`: add `lock: packages.lock` to vars/common.yml (so builds use it), or pass --output FILE".into())),
        Some(first) if locks.len() == named.len() && locks.iter().all(|l| l == first) => Ok(first.to_path_buf()),
        Some(_) => {
            let each: Vec<String> = named.iter().map(|(v, l)| format!("{}: {}", v.display(), l.as_ref().map_or("none".into(), |l| l.display().to_string()))).collect();
            Err(UsageError(format!("the builds do not name one lock file ({}): set `lock:` once, e.g. in vars/common.yml, or pass --output FILE", each.join(", "))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lock {
        let sha = "a".repeat(64);
        let mut packages = BTreeMap::new();
        packages.insert(
            "curl".into(),
            Locked {
                version: "7.88.1-10+deb12u5".into(),
                sha256: sha.clone(),
                filename: "pool/main/c/curl/curl_7.88.1-10+deb12u5_amd64.deb".into(),
            },
        );
        packages.insert(
            "bsdutils".into(),
            Locked {
                version: "1:2.38.1-5+b1".into(),
                sha256: sha,
                filename: "pool/main/u/util-linux/bsdutils_2.38.1-5+b1_amd64.deb".into(),
            },
        );
        Lock {
            suite: "bookworm".into(),
            arch: "amd64".into(),
            packages,
        }
    }

    #[test]
    fn round_trip_pins_and_mismatches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("packages.lock");
        let lock = sample();
        lock.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Written by `mkimage lock`"), "{text}");
        assert_eq!(
            Lock::load(&path, Path::new("vars/common.yml")).unwrap(),
            lock
        );
        let prefs = lock.preferences();
        assert!(
            prefs.contains("Package: bsdutils\nPin: version 1:2.38.1-5+b1\nPin-Priority: 1001\n"),
            "{prefs}"
        );
        let installed: BTreeMap<String, String> = [
            ("curl", "7.88.1-10+deb12u5"),
            ("bsdutils", "1:2.38.1-6"),
            ("jq", "1.6-2.1"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(
            lock.mismatches(&installed),
            [
                "bsdutils 1:2.38.1-6 (locked: 1:2.38.1-5+b1)",
                "jq 1.6-2.1 (not in the lock)"
            ]
        );
        assert!(lock
            .check_for(&path, "trixie", "amd64")
            .unwrap_err()
            .0
            .contains("locks bookworm/amd64"));
    }

    #[test]
    fn bad_lock_files_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("packages.lock");
        let missing = Lock::load(&path, Path::new("vars/common.yml"))
            .unwrap_err()
            .0;
        assert!(
            missing.contains("does not exist") && missing.contains("mkimage lock"),
            "{missing}"
        );
        std::fs::write(&path, "suite: bookworm\narch: amd64\npackages:\n  curl: {version: '1', sha256: nothex, filename: x.deb}\n").unwrap();
        let bad = Lock::load(&path, Path::new("v.yml")).unwrap_err().0;
        assert!(
            bad.contains(":4:") && bad.contains("packages.curl"),
            "{bad}"
        );
        std::fs::write(
            &path,
            "suite: bookworm\narch: amd64\npackages: {}\nextra: 1\n",
        )
        .unwrap();
        assert!(Lock::load(&path, Path::new("v.yml")).is_err());
    }

    #[test]
    fn the_lock_target_is_one_file() {
        let named = |a: Option<&str>, b: Option<&str>| {
            vec![
                (PathBuf::from("a.yml"), a.map(PathBuf::from)),
                (PathBuf::from("b.yml"), b.map(PathBuf::from)),
            ]
        };
        assert_eq!(
            target(None, &named(Some("/p/x.lock"), Some("/p/x.lock"))).unwrap(),
            PathBuf::from("/p/x.lock")
        );
        assert!(target(None, &named(Some("/p/x.lock"), Some("/p/y.lock"))).is_err());
        assert!(target(None, &named(Some("/p/x.lock"), None))
            .unwrap_err()
            .0
            .contains("b.yml: none"));
        assert!(target(None, &named(None, None))
            .unwrap_err()
            .0
            .contains("lock: packages.lock"));
        assert_eq!(
            target(Some(Path::new("/o.lock")), &named(None, None)).unwrap(),
            PathBuf::from("/o.lock")
        );
    }
}
