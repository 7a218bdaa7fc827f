//! Before a locked build: is every locked version still available? The
//! mirror's index must list it with the locked sha256; a version the mirror
//! dropped (a point release replaced it) is taken from the shared `.deb`
//! cache when a build downloaded it before — served to apt from a local
//! flat repository (`Packages` made from each `.deb`'s control fields,
//! `[trusted=yes]`: the `.deb`s were checked against the locked sha256).
//! Anything in neither fails the build before it starts, naming the
//! packages.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::format::{Lock, Locked};
use crate::UsageError;

/// Where local repositories live, under the cache dir.
pub const REPOS: &str = "lock-repos";

/// How apt names a downloaded `.deb` in its archive dir (and so in the
/// shared cache): `NAME_VERSION_ARCH.deb`, the epoch's `:` as `%3a`.
pub fn cache_name(name: &str, p: &Locked) -> String {
    let base = p
        .filename
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .trim_end_matches(".deb");
    let arch = base.rsplit('_').next().unwrap_or("all");
    format!("{name}_{}_{arch}.deb", p.version.replace(':', "%3a"))
}

/// Check the lock against what the mirror offers (`offered`, by
/// [`super::index::lookup`]) and the `.deb` cache `debs`; returns the local
/// repository to add as an apt source when some versions come from the
/// cache.
pub fn prepare(
    lock: &Lock,
    lock_path: &Path,
    offered: &BTreeMap<String, Locked>,
    debs: &Path,
    cache_dir: &Path,
) -> anyhow::Result<Option<PathBuf>> {
    let mut from_cache = Vec::new();
    let mut missing = Vec::new();
    for (name, p) in &lock.packages {
        if offered.get(name).is_some_and(|o| o.sha256 == p.sha256) {
            continue;
        }
        let deb = debs.join(cache_name(name, p));
        let cached = deb.is_file()
            && crate::artifact::sha256_file(&deb).is_ok_and(|(_, sha)| sha == p.sha256);
        if cached {
            from_cache.push((name.clone(), deb));
        } else {
            missing.push(match offered.get(name) {
                Some(_) => format!(
                    "{name} {} (the mirror's .deb has another sha256)",
                    p.version
                ),
                None => format!("{name} {} (not on the mirror)", p.version),
            });
        }
    }
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(10).map(String::as_str).collect();
        let more = if missing.len() > 10 {
            format!(" and {} more", missing.len() - 10)
        } else {
            String::new()
        };
        return Err(UsageError(format!(
            "{}: {} locked package(s) are neither on the mirror nor in the .deb cache ({}): {}{more}; run `mkimage lock` again to move to the mirror's versions, or set `mirror:` to a snapshot that has them",
            lock_path.display(),
            missing.len(),
            debs.display(),
            shown.join(", ")
        ))
        .into());
    }
    if from_cache.is_empty() {
        return Ok(None);
    }
    Ok(Some(local_repo(&from_cache, &cache_dir.join(REPOS))?))
}

/// A flat repository holding these `.deb`s, made once per set.
fn local_repo(debs: &[(String, PathBuf)], repos: &Path) -> anyhow::Result<PathBuf> {
    let id = crate::artifact::sha256_bytes(
        debs.iter()
            .map(|(_, d)| d.display().to_string())
            .collect::<Vec<_>>()
            .join("\n")
            .as_bytes(),
    );
    let dir = repos.join(&id[..16]);
    if dir.join("Release").is_file() {
        return Ok(dir);
    }
    for stale in crate::flock::stale(repos, |n| n.starts_with(".new.")) {
        let _ = fs::remove_dir_all(stale);
    }
    let staging = crate::flock::claim_dir(repos, ".new.")?;
    let mut packages = String::new();
    for (name, deb) in debs {
        let file = deb
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if fs::hard_link(deb, staging.path.join(&file)).is_err() {
            fs::copy(deb, staging.path.join(&file))
                .with_context(|| format!("cannot copy {}", deb.display()))?;
        }
        let control = crate::exec::Cmd::new("dpkg-deb")
            .arg("-f")
            .arg(deb)
            .run()
            .with_context(|| {
                format!(
                    "cannot read the control fields of {name} ({})",
                    deb.display()
                )
            })?;
        let (size, sha) = crate::artifact::sha256_file(deb)?;
        packages.push_str(&format!(
            "{}\nFilename: ./{file}\nSize: {size}\nSHA256: {sha}\n\n",
            control.stdout.trim_end()
        ));
    }
    fs::write(staging.path.join("Packages"), &packages)?;
    let release = format!(
        "Origin: mkimage\nLabel: mkimage lock\nDate: Thu, 01 Jan 1970 00:00:00 UTC\nSHA256:\n {} {} Packages\n",
        crate::artifact::sha256_bytes(packages.as_bytes()),
        packages.len()
    );
    fs::write(staging.path.join("Release"), release)?;
    let _ = fs::remove_file(staging.path.join(crate::flock::DIR_LOCK));
    if fs::rename(&staging.path, &dir).is_err() && !dir.join("Release").is_file() {
        anyhow::bail!("cannot create the local repository {}", dir.display());
    }
    let _ = fs::remove_dir_all(&staging.path);
    Ok(dir)
}

/// The apt source line of a local repository at `dir` (as apt sees it).
pub fn source_line(dir: &Path) -> String {
    format!("deb [trusted=yes] file:{} ./", dir.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_follow_apt() {
        let p = |v: &str, f: &str| Locked {
            version: v.into(),
            sha256: String::new(),
            filename: f.into(),
        };
        assert_eq!(
            cache_name(
                "bsdutils",
                &p(
                    "1:2.38.1-5+deb12u3",
                    "pool/main/u/util-linux/bsdutils_2.38.1-5+deb12u3_amd64.deb"
                )
            ),
            "bsdutils_1%3a2.38.1-5+deb12u3_amd64.deb"
        );
        assert_eq!(
            cache_name(
                "adduser",
                &p("3.134", "pool/main/a/adduser/adduser_3.134_all.deb")
            ),
            "adduser_3.134_all.deb"
        );
    }

    #[test]
    fn missing_versions_are_named_and_cached_ones_served() {
        let dir = tempfile::tempdir().unwrap();
        let debs = dir.path().join("debs");
        fs::create_dir_all(&debs).unwrap();
        // A real (tiny) .deb in the cache, that the mirror no longer has.
        let pkg = dir.path().join("pkg");
        fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
        fs::write(pkg.join("DEBIAN/control"), "Package: mkimage-test\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.invalid>\nDescription: test\n").unwrap();
        let deb = debs.join("mkimage-test_1.0_all.deb");
        crate::exec::Cmd::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&pkg)
            .arg(&deb)
            .run()
            .unwrap();
        let sha = crate::artifact::sha256_file(&deb).unwrap().1;
        let locked = |v: &str, sha: &str| Locked {
            version: v.into(),
            sha256: sha.into(),
            filename: format!("pool/main/m/x/mkimage-test_{v}_all.deb"),
        };
        let mut lock = Lock {
            suite: "bookworm".into(),
            arch: "amd64".into(),
            packages: BTreeMap::new(),
        };
        lock.packages
            .insert("mkimage-test".into(), locked("1.0", &sha));
        lock.packages
            .insert("curl".into(), locked("7.0", &"b".repeat(64)));
        let mut offered = BTreeMap::new();
        offered.insert("curl".into(), locked("7.0", &"b".repeat(64)));
        let repo = prepare(&lock, Path::new("p.lock"), &offered, &debs, dir.path())
            .unwrap()
            .expect("a local repo");
        let packages = fs::read_to_string(repo.join("Packages")).unwrap();
        assert!(
            packages.contains("Package: mkimage-test\n")
                && packages.contains(&format!("SHA256: {sha}\n"))
                && packages.contains("Filename: ./mkimage-test_1.0_all.deb"),
            "{packages}"
        );
        assert!(repo.join("Release").is_file() && repo.join("mkimage-test_1.0_all.deb").is_file());

        lock.packages
            .insert("jq".into(), locked("1.5", &"c".repeat(64)));
        offered.insert("curl".into(), locked("7.0", &"d".repeat(64)));
        let err = prepare(&lock, Path::new("p.lock"), &offered, &debs, dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("2 locked package(s)")
                && err.contains("jq 1.5 (not on the mirror)")
                && err.contains("curl 7.0 (the mirror's .deb has another sha256)"),
            "{err}"
        );
    }
}
