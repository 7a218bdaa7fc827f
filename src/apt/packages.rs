//! Single packages through the private apt (`fetcher`): a name resolved to
//! its candidate version (a `linux-image-*` metapackage followed to the
//! versioned kernel package), the `.deb` fetched into the cache and checked
//! by sha256, and unpacked once into the cache for later builds.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::fetcher::{DebError, Fetcher, Package};
use crate::exec::{Cmd, Retry};

impl Fetcher {
    /// Resolve a package name to its candidate version, following a
    /// `linux-image-*` metapackage (e.g. `linux-image-amd64`) to the real
    /// versioned kernel package it depends on.
    pub fn resolve(&self, name: &str) -> anyhow::Result<Package> {
        let _lock = self.lock()?;
        if !self.lists_present() {
            self.update()?;
        }
        let mut pkg = match self.show(name) {
            Ok(p) => p,
            Err(_) if !self.updated.get() => {
                self.update()?;
                self.show(name)?
            }
            Err(e) => return Err(e),
        };
        for _ in 0..4 {
            match kernel_dependency(&pkg.name, &pkg.depends) {
                Some(real) => pkg = self.show(&real)?,
                None => break,
            }
        }
        Ok(pkg)
    }

    /// Exactly `name` = `version` (no metapackage is followed).
    pub fn resolve_exact(&self, name: &str, version: &str) -> anyhow::Result<Package> {
        let _lock = self.lock()?;
        let spec = format!("{name}={version}");
        if !self.lists_present() {
            self.update()?;
        }
        match self.show(&spec) {
            Err(_) if !self.updated.get() => {
                self.update()?;
                self.show(&spec)
            }
            other => other,
        }
    }

    /// `apt-cache show` of the candidate, remembered per state of the lists
    /// (the answer only changes when the lists do; saves apt's start-up).
    fn show(&self, name: &str) -> anyhow::Result<Package> {
        let key = self.lists_key(name);
        let memo = self
            .root
            .join("show")
            .join(format!("{}.txt", name.replace('/', "_")));
        let text = match fs::read_to_string(&memo)
            .ok()
            .and_then(|t| t.strip_prefix(&format!("{key}\n")).map(str::to_string))
        {
            Some(text) => text,
            None => {
                let out = self
                    .apt("apt-cache")
                    .args(["show", "--no-all-versions", name])
                    .run();
                let Ok(out) = out else {
                    return Err(DebError::NotFound {
                        name: name.into(),
                        suite: self.src.suite.clone(),
                        mirror: self.mirror.clone(),
                    }
                    .into());
                };
                let dir = self.root.join("show");
                fs::create_dir_all(&dir)?;
                let body = format!("{key}\n{}", out.stdout);
                crate::artifact::write_atomic(
                    &dir,
                    &format!("{}.txt", name.replace('/', "_")),
                    |f| std::io::Write::write_all(f, body.as_bytes()),
                )?;
                out.stdout
            }
        };
        let field = |key: &'static str| -> Result<String, DebError> {
            super::deb822::first_field(&text, key).ok_or(DebError::MissingField {
                name: name.into(),
                field: key,
            })
        };
        let filename = field("Filename")?;
        let base = filename.rsplit('/').next().unwrap_or(&filename).to_string();
        Ok(Package {
            name: field("Package")?,
            version: field("Version")?,
            deb: self.root.join("debs").join(base),
            depends: super::deb822::first_field(&text, "Depends").unwrap_or_default(),
            sha256: field("SHA256")?,
        })
    }

    /// Make sure the package's `.deb` is in the cache (verified by sha256),
    /// downloading it only if it is not.
    pub fn fetch(&self, pkg: &Package) -> anyhow::Result<PathBuf> {
        let _lock = self.lock()?;
        self.fetch_locked(pkg)
    }

    fn fetch_locked(&self, pkg: &Package) -> anyhow::Result<PathBuf> {
        self.download_locked(&[pkg])?;
        Ok(pkg.deb.clone())
    }

    /// `fetch` for several packages, downloading those not in the cache
    /// with one `apt-get download` (one connection, no start-up each).
    pub fn fetch_all(&self, pkgs: &[Package]) -> anyhow::Result<()> {
        let _lock = self.lock()?;
        self.download_locked(&pkgs.iter().collect::<Vec<_>>())
    }

    /// Whether `pkg`'s `.deb` is in this apt's cache, or copied in from
    /// the builds' shared `.deb` cache (apt in the chroot), checked by sha256.
    fn cached_locked(&self, pkg: &Package) -> anyhow::Result<bool> {
        if pkg.deb.is_file() && crate::artifact::sha256_file(&pkg.deb)?.1 == pkg.sha256 {
            tracing::debug!(deb = %pkg.deb.display(), "cached");
            return Ok(true);
        }
        if let Some(name) = pkg.deb.file_name() {
            let shared = self.src.cache_dir.join("debs").join(name);
            if shared.is_file() && crate::artifact::sha256_file(&shared)?.1 == pkg.sha256 {
                fs::copy(&shared, &pkg.deb).with_context(|| {
                    format!("cannot copy {} into the apt cache", shared.display())
                })?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Download the packages of `pkgs` the cache lacks, check each by
    /// sha256 and move it into the cache.
    fn download_locked(&self, pkgs: &[&Package]) -> anyhow::Result<()> {
        let mut missing = Vec::new();
        for pkg in pkgs {
            if !self.cached_locked(pkg)? {
                missing.push(*pkg);
            }
        }
        let Some(first) = missing.first() else {
            return Ok(());
        };
        for pkg in &missing {
            tracing::info!(package = %pkg.name, version = %pkg.version, "downloading");
        }
        let dir = first.deb.parent().unwrap_or(&self.root);
        let tmp = tempfile::tempdir_in(dir).context("cannot create a download dir")?;
        let specs: Vec<String> = missing
            .iter()
            .map(|p| format!("{}={}", p.name, p.version))
            .collect();
        let cmd = self
            .apt("apt-get")
            .arg("download")
            .args(&specs)
            .cwd(tmp.path());
        self.fetching(&cmd, Retry::MIRROR)
            .with_context(|| format!("cannot download {}", specs.join(" ")))?;
        // apt names a download NAME_VERSION_ARCH.deb (an epoch as `%3a`,
        // unlike the pool's name); a package name has no `_`.
        let got: Vec<PathBuf> = fs::read_dir(tmp.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .collect();
        for pkg in missing {
            let prefix = format!("{}_", pkg.name);
            let got = got
                .iter()
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                })
                .ok_or_else(|| anyhow::anyhow!("apt-get download left no .deb for {}", pkg.name))?;
            let sha = crate::artifact::sha256_file(got)?.1;
            if sha != pkg.sha256 {
                return Err(DebError::Checksum {
                    file: got.display().to_string(),
                    got: sha,
                    want: pkg.sha256.clone(),
                }
                .into());
            }
            fs::rename(got, &pkg.deb)
                .with_context(|| format!("cannot move the download to {}", pkg.deb.display()))?;
        }
        Ok(())
    }

    /// The package's content, unpacked once into `cache/unpacked/NAME_VERSION`
    /// and reused by later builds (unpacked to a temp dir, then renamed).
    pub fn unpacked(&self, pkg: &Package) -> anyhow::Result<PathBuf> {
        let _lock = self.lock()?;
        let dest = self.root.join("unpacked").join(format!(
            "{}_{}",
            pkg.name,
            pkg.version.replace(':', "%3a")
        ));
        if dest.is_dir() {
            return Ok(dest);
        }
        let deb = self.fetch_locked(pkg)?;
        let parent = self.root.join("unpacked");
        fs::create_dir_all(&parent)?;
        let tmp = tempfile::tempdir_in(&parent).context("cannot create an unpack dir")?;
        extract(&deb, tmp.path())?;
        let tmp = tmp.keep();
        if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = fs::remove_dir_all(&tmp);
            if !dest.is_dir() {
                return Err(e)
                    .with_context(|| format!("cannot move unpacked {} into place", pkg.name));
            }
        }
        Ok(dest)
    }
}

/// `dpkg-deb -x DEB DEST`.
pub fn extract(deb: &Path, dest: &Path) -> anyhow::Result<()> {
    Cmd::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(dest)
        .run()
        .with_context(|| format!("cannot unpack {}", deb.display()))?;
    Ok(())
}

/// For a `linux-image-*` metapackage, the versioned `linux-image-*` package
/// it depends on (first alternative).
fn kernel_dependency(name: &str, depends: &str) -> Option<String> {
    if !name.starts_with("linux-image-") {
        return None;
    }
    depends
        .split(',')
        .filter_map(|d| d.split('|').next())
        .map(|d| d.split_whitespace().next().unwrap_or("").to_string())
        .find(|d| d.starts_with("linux-image-") && d != name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_kernel_metapackage() {
        let deps = "linux-image-6.1.0-28-amd64 (= 6.1.119-1)";
        assert_eq!(
            kernel_dependency("linux-image-amd64", deps).as_deref(),
            Some("linux-image-6.1.0-28-amd64")
        );
        assert_eq!(
            kernel_dependency(
                "linux-image-6.1.0-28-amd64",
                "kmod, linux-base (>= 4.3~), initramfs-tools | linux-initramfs-tool"
            ),
            None
        );
        assert_eq!(kernel_dependency("busybox-static", deps), None);
    }
}
