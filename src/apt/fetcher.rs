//! A private apt: single Debian packages (`.deb`) fetched through the configured mirror,
//! apt proxy and a shared download cache — without touching the host's apt
//! state — and unpacking them with `dpkg-deb -x`.
//!
//! The initrd needs a kernel package and `busybox-static` from the same
//! mirror the basefs came from, never from the build host. apt runs with a
//! private configuration rooted in the cache dir, one per source
//! (`apt/SUITE-HASH/`: its own sources.list, lists, status file and
//! archives), so a second build finds every `.deb` already there (checked by
//! sha256) and downloads nothing, whichever suites share the cache.
//!
//! Whatever apt fetches is retried (`exec::Retry::MIRROR`) while it fails in
//! a way a mirror mends by itself (`failure`: a file caught mid-sync, a 5xx,
//! a dropped connection), and a fetch that fails for good is one line
//! naming the mirror, the file and what is wrong with it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::failure::{self, Failure, MirrorError};
use crate::exec::{Cmd, Output, Retry};

/// The file (in `preferences.d/`) that holds a lock file's pins while building.
pub const PREFERENCES: &str = "mkimage-lock.pref";

/// Where the last `InRelease` fetched for this mirror and suite is kept.
pub fn kept(cache_dir: &Path, mirror: &str, suite: &str) -> PathBuf {
    let url = format!("{}/dists/{suite}/InRelease", mirror.trim_end_matches('/'));
    cache_dir.join("apt/index").join(format!(
        "{}.InRelease",
        &crate::artifact::sha256_bytes(url.as_bytes())[..16]
    ))
}

/// Where packages come from.
#[derive(Debug, Clone, PartialEq)]
pub struct AptSource {
    /// Debian mirror URL; `None` means the build host's (`mirror::host_mirror`).
    pub mirror: Option<String>,
    pub suite: String,
    pub components: Vec<String>,
    /// e.g. an apt-cacher-ng at `http://127.0.0.1:3142`.
    pub apt_proxy: Option<String>,
    /// Shared cache: apt lists and downloaded `.deb`s live here across builds.
    pub cache_dir: PathBuf,
    /// Keyring that signs the mirror's Release file.
    pub keyring: PathBuf,
    /// Components whose `Contents` index (file → package) apt fetches too.
    pub contents: Vec<String>,
    /// apt preferences (a lock file's pins), if any.
    pub preferences: Option<String>,
    /// More `deb …` lines (a lock's local repository of cached `.deb`s).
    pub extra_sources: Vec<String>,
}

impl AptSource {
    /// bookworm/main from the host's mirror, cached in `cache_dir`.
    pub fn new(suite: &str, cache_dir: &Path) -> Self {
        AptSource {
            mirror: None,
            suite: suite.to_string(),
            components: vec!["main".into()],
            apt_proxy: None,
            cache_dir: cache_dir.to_path_buf(),
            keyring: PathBuf::from("/usr/share/keyrings/debian-archive-keyring.gpg"),
            contents: Vec::new(),
            preferences: None,
            extra_sources: Vec::new(),
        }
    }
}

/// Errors of the package fetcher.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("package `{name}` is not in {suite} ({mirror}); check the name, or the suite/components in your vars file")]
    NotFound {
        name: String,
        suite: String,
        mirror: String,
    },
    #[error("apt-cache gave no {field} for `{name}`")]
    MissingField { name: String, field: &'static str },
    #[error("keyring {0} is missing (install it: apt-get install -y debian-archive-keyring)")]
    NoKeyring(PathBuf),
    #[error("downloaded {file} has sha256 {got}, the archive says {want}")]
    Checksum {
        file: String,
        got: String,
        want: String,
    },
}

/// One resolved package version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// Path of the `.deb` in the cache (after `fetch`).
    pub deb: PathBuf,
    pub depends: String,
    pub(super) sha256: String,
}

/// A private apt rooted in the cache dir.
pub struct Fetcher {
    pub(super) src: AptSource,
    pub(super) mirror: String,
    pub(super) root: PathBuf,
    pub(super) updated: std::cell::Cell<bool>,
}

impl Fetcher {
    /// Set up the private apt configuration (lists are fetched on first need).
    pub fn new(src: &AptSource) -> anyhow::Result<Fetcher> {
        let mirror = match &src.mirror {
            Some(m) => m.trim_end_matches('/').to_string(),
            None => super::mirror::host_mirror()?,
        };
        if !src.keyring.is_file() {
            return Err(DebError::NoKeyring(src.keyring.clone()).into());
        }
        let mut line = source_lines(src, &mirror);
        // Extra sources (a lock's local repository) make a source of their own.
        for extra in &src.extra_sources {
            line.push_str(&format!("{extra}\n"));
        }
        let root = src
            .cache_dir
            .join("apt")
            .join(state_dir_name(&src.suite, &line));
        for dir in [
            "etc/apt.conf.d",
            "etc/preferences.d",
            "etc/trusted.gpg.d",
            "state/lists/partial",
            "cache/archives/partial",
            "debs",
        ] {
            fs::create_dir_all(root.join(dir))
                .with_context(|| format!("cannot create {}", root.join(dir).display()))?;
        }
        let _lock = crate::flock::exclusive(&root, "lock")?;
        // Downloads and unpacks happen under this lock, so any temp dir
        // still here was left by a build that was killed.
        for dir in ["debs", "unpacked"] {
            for tmp in crate::flock::stale(&root.join(dir), |n| n.starts_with(".tmp")) {
                tracing::info!("removing {} left by an interrupted build", tmp.display());
                let _ = fs::remove_dir_all(&tmp);
            }
        }
        let prefs = root.join("etc/preferences.d").join(PREFERENCES);
        match &src.preferences {
            Some(text) if fs::read_to_string(&prefs).ok().as_deref() != Some(text.as_str()) => {
                crate::artifact::write_atomic(&root.join("etc/preferences.d"), PREFERENCES, |f| {
                    std::io::Write::write_all(f, text.as_bytes())
                })?;
            }
            Some(_) => {}
            None => {
                let _ = fs::remove_file(&prefs);
            }
        }
        let list = root.join("etc/sources.list");
        if fs::read_to_string(&list).ok().as_deref() != Some(line.as_str()) {
            fs::write(&list, &line).with_context(|| format!("cannot write {}", list.display()))?;
        }
        let status = root.join("state/status");
        if !status.exists() {
            fs::write(&status, b"")?;
        }
        let fetcher = Fetcher {
            src: src.clone(),
            mirror,
            root,
            updated: std::cell::Cell::new(false),
        };
        let conf = fetcher.root.join("apt.conf");
        let text = fetcher.config();
        if fs::read_to_string(&conf).ok().as_deref() != Some(text.as_str()) {
            crate::artifact::write_atomic(&fetcher.root, "apt.conf", |f| {
                std::io::Write::write_all(f, text.as_bytes())
            })?;
        }
        Ok(fetcher)
    }

    /// The private apt.conf: read through APT_CONFIG before anything
    /// else, so the host's apt.conf.d, sources and state are never used.
    pub(super) fn config(&self) -> String {
        let r = self.root.display();
        let mut conf = format!(
            "Dir::Etc \"{r}/etc\";\nDir::Etc::SourceList \"sources.list\";\nDir::Etc::SourceParts \"-\";\n\
             Dir::Etc::Parts \"apt.conf.d\";\nDir::Etc::Preferences \"preferences\";\nDir::Etc::PreferencesParts \"preferences.d\";\n\
             Dir::Etc::TrustedParts \"trusted.gpg.d\";\nDir::State \"{r}/state\";\nDir::State::status \"{r}/state/status\";\n\
             Dir::Cache \"{r}/cache\";\nDebug::NoLocking \"1\";\nAPT::Architecture \"amd64\";\nAPT::Architectures {{ \"amd64\"; }};\n\
             Acquire::Languages {{ \"none\"; }};\nAcquire::Retries \"3\";\nAcquire::Retries::Delay \"true\";\n"
        );
        if let Some(proxy) = &self.src.apt_proxy {
            conf.push_str(&format!("Acquire::http::Proxy \"{proxy}\";\n"));
        }
        if !self.src.contents.is_empty() {
            conf.push_str(CONTENTS_TARGET);
        }
        conf
    }

    /// The `Contents` indexes of `AptSource::contents` (fetched, and
    /// verified against the signed Release file, by `apt-get update`).
    pub fn contents_files(&self) -> anyhow::Result<Vec<PathBuf>> {
        let _lock = self.lock()?;
        let find = || -> Vec<PathBuf> {
            let mut found: Vec<PathBuf> = fs::read_dir(self.root.join("state/lists"))
                .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
                .unwrap_or_default();
            found.retain(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                self.src
                    .contents
                    .iter()
                    .any(|c| name.ends_with(&format!("_{c}_Contents-all")))
            });
            found.sort();
            found
        };
        if find().is_empty() || !self.lists_present() {
            self.update()?;
        }
        Ok(find())
    }

    /// The mirror URL (without a trailing `/`).
    pub fn mirror(&self) -> &str {
        &self.mirror
    }

    /// Download one file from the mirror (apt's downloader, through the
    /// proxy) into a fresh temp dir in `dir` (builds in their sandboxes all
    /// run as PID 1, so no name made from the pid is unique), retried as
    /// `retry` says; the caller moves the file out before the dir is dropped.
    pub fn download(
        &self,
        url: &str,
        dir: &Path,
        retry: Retry,
    ) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
        let tmp = tempfile::Builder::new()
            .prefix(".download.")
            .tempdir_in(dir)
            .with_context(|| format!("cannot create a temp dir in {}", dir.display()))?;
        let dest = tmp.path().join("file");
        let cmd = self
            .apt("/usr/lib/apt/apt-helper")
            .args(["-q", "download-file", url])
            .arg(&dest);
        self.fetching(&cmd, retry)
            .with_context(|| format!("cannot download {url}"))?;
        Ok((tmp, dest))
    }

    /// Run an apt command that fetches from the mirror, again while it
    /// fails only in ways that pass (`Failure::transient`), up to `retry`;
    /// a failure to fetch is then one line (`MirrorError`), anything else
    /// the command's own error.
    pub(super) fn fetching(&self, cmd: &Cmd, retry: Retry) -> anyhow::Result<Output> {
        let attempt = || {
            let mut output = String::new();
            cmd.run_with(|line| {
                output.push_str(line);
                output.push('\n');
            })
            .map_err(|e| (e, output))
        };
        let passing = |(_, output): &(crate::exec::ExecError, String)| {
            let failures = failure::parse(output);
            let first = failures.first()?;
            failures
                .iter()
                .all(Failure::transient)
                .then(|| first.describe(&self.mirror, &self.inreleases()))
        };
        let gave_up = match crate::exec::retry(retry, attempt, passing) {
            Ok(output) => return Ok(output),
            Err(gave_up) => gave_up,
        };
        let (error, output) = gave_up.error;
        let failures = failure::parse(&output);
        match MirrorError::new(
            &failures,
            &self.mirror,
            &self.inreleases(),
            gave_up.retries,
            gave_up.elapsed,
        ) {
            Some(mirror) => {
                tracing::debug!("{error}");
                Err(mirror.into())
            }
            None => Err(error.into()),
        }
    }

    /// The suite's InRelease files at hand (this apt's lists, the one
    /// being fetched, the index digest's), to name by-hash URLs by.
    pub(super) fn inreleases(&self) -> Vec<PathBuf> {
        let lists = self.root.join("state/lists");
        let mut found: Vec<PathBuf> = [lists.join("partial"), lists]
            .iter()
            .filter_map(|dir| fs::read_dir(dir).ok())
            .flat_map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with("_InRelease"))
            .collect();
        found.push(kept(&self.src.cache_dir, &self.mirror, &self.src.suite));
        found
    }

    pub(super) fn apt(&self, program: &str) -> Cmd {
        Cmd::new(program).env("APT_CONFIG", self.root.join("apt.conf"))
    }

    /// Hold the cache's lock (concurrent builds share one cache).
    pub(super) fn lock(&self) -> anyhow::Result<nix::fcntl::Flock<fs::File>> {
        crate::flock::exclusive(&self.root, "lock")
    }

    pub(super) fn lists_present(&self) -> bool {
        fs::read_dir(self.root.join("state/lists"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
            })
            .unwrap_or(false)
    }

    /// The package lists, fetched fresh (`apt-get update`).
    pub fn fresh_lists(&self) -> anyhow::Result<Vec<PathBuf>> {
        let _lock = self.lock()?;
        self.update()?;
        let dir = self.root.join("state/lists");
        let mut lists: Vec<PathBuf> = fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with("_Packages"))
            .collect();
        lists.sort();
        Ok(lists)
    }

    /// A digest of the package lists' names, sizes and mtimes (and `name`).
    pub(super) fn lists_key(&self, name: &str) -> String {
        let mut parts = vec![
            name.to_string(),
            self.config(),
            self.src.preferences.clone().unwrap_or_default(),
        ];
        if let Ok(rd) = fs::read_dir(self.root.join("state/lists")) {
            let mut files: Vec<String> = rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    let mtime = m
                        .modified()
                        .ok()?
                        .duration_since(std::time::UNIX_EPOCH)
                        .ok()?
                        .as_nanos();
                    Some(format!(
                        "{} {} {mtime}",
                        e.file_name().to_string_lossy(),
                        m.len()
                    ))
                })
                .collect();
            files.sort();
            parts.extend(files);
        }
        crate::artifact::sha256_bytes(parts.join("\n").as_bytes())
    }

    /// `apt-get update` against the private sources (once per fetcher).
    pub fn update(&self) -> anyhow::Result<()> {
        tracing::info!(mirror = %self.mirror, suite = %self.src.suite, "apt-get update (private lists)");
        // --error-on=any: an index that could not be fetched (a connection
        // that failed, say) fails the update instead of a warning and a
        // package that "is not there" later.
        let cmd = self.apt("apt-get").args(["update", "--error-on=any"]);
        self.fetching(&cmd, Retry::MIRROR)
            .context("cannot fetch the package lists")?;
        self.updated.set(true);
        Ok(())
    }
}

/// The private apt's directory for one source (`SUITE-HASH`): each source
/// has lists, `.deb`s and a lock of its own, so builds of different suites
/// (bookworm and trixie) sharing one cache neither evict each other's lists
/// nor ever read one suite's packages for the other.
fn state_dir_name(suite: &str, source_line: &str) -> String {
    let safe: String = suite
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{safe}-{}",
        &crate::artifact::sha256_bytes(source_line.as_bytes())[..12]
    )
}

/// The `Contents-all` index as an apt download target, off unless a source
/// line turns it on (`Contents-mkimage=yes`). Its MetaKey names no
/// `$(ARCHITECTURE)`, so apt makes one target of it and never asks for
/// `Contents-amd64`: the files of `Architecture: all` packages (every
/// firmware package a kernel module's firmware comes from) are only in
/// `Contents-all`, and an index the build does not read is one more a
/// mirror caught mid-sync can fail it with.
const CONTENTS_TARGET: &str = "Acquire::IndexTargets::deb::Contents-mkimage {\n  MetaKey \"$(COMPONENT)/Contents-all\";\n  \
     ShortDescription \"Contents-all\";\n  Description \"$(RELEASE)/$(COMPONENT) all Contents (mkimage)\";\n  \
     DefaultEnabled \"false\";\n  PDiffs \"false\";\n};\n";

/// The private sources.list: one line for the components, and one that
/// also fetches the Contents index for those in `contents`.
fn source_lines(src: &AptSource, mirror: &str) -> String {
    let line = |opts: &str, comps: &[&String]| {
        let comps: Vec<&str> = comps.iter().map(|c| c.as_str()).collect();
        format!(
            "deb [signed-by={}{opts}] {mirror} {} {}\n",
            src.keyring.display(),
            src.suite,
            comps.join(" ")
        )
    };
    let (with, plain): (Vec<&String>, Vec<&String>) = src
        .components
        .iter()
        .partition(|c| src.contents.contains(c));
    let mut text = String::new();
    if !plain.is_empty() {
        text.push_str(&line("", &plain));
    }
    if !with.is_empty() {
        text.push_str(&line(" Contents-mkimage=yes", &with));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_config_carries_mirror_and_proxy() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = dir.path().join("k.gpg");
        fs::write(&keyring, b"").unwrap();
        let mut src = AptSource::new("bookworm", &dir.path().join("cache"));
        src.mirror = Some("http://mirror.invalid/debian/".into());
        src.apt_proxy = Some("http://127.0.0.1:3142".into());
        src.keyring = keyring.clone();
        let f = Fetcher::new(&src).unwrap();
        assert!(
            f.root.starts_with(dir.path().join("cache/apt"))
                && f.root
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("bookworm-"),
            "{}",
            f.root.display()
        );
        let conf = fs::read_to_string(f.root.join("apt.conf")).unwrap();
        assert!(
            conf.contains("Acquire::http::Proxy \"http://127.0.0.1:3142\";"),
            "{conf}"
        );
        assert!(
            conf.contains("Dir::Etc::Parts \"apt.conf.d\";"),
            "host apt.conf.d must not be read: {conf}"
        );
        let list = fs::read_to_string(f.root.join("etc/sources.list")).unwrap();
        assert_eq!(
            list,
            format!(
                "deb [signed-by={}] http://mirror.invalid/debian bookworm main\n",
                keyring.display()
            )
        );
        assert_eq!(f.apt("apt-get").display(), "apt-get");
        // Another suite in the same cache gets state of its own; the first keeps its lists.
        fs::write(f.root.join("state/lists/x_Packages"), b"").unwrap();
        let trixie = Fetcher::new(&AptSource {
            suite: "trixie".into(),
            ..src.clone()
        })
        .unwrap();
        assert_ne!(trixie.root, f.root);
        assert!(fs::read_to_string(trixie.root.join("etc/sources.list"))
            .unwrap()
            .contains(" trixie main"));
        assert!(f.lists_present() && !trixie.lists_present());
        // The firmware's Contents index: Contents-all alone, never Contents-ARCH.
        let firmware = Fetcher::new(&AptSource {
            components: vec!["main".into(), "non-free-firmware".into()],
            contents: vec!["non-free-firmware".into()],
            ..src.clone()
        })
        .unwrap();
        let conf = fs::read_to_string(firmware.root.join("apt.conf")).unwrap();
        assert!(
            conf.contains("MetaKey \"$(COMPONENT)/Contents-all\";")
                && !conf.contains("$(ARCHITECTURE)"),
            "{conf}"
        );
        assert!(fs::read_to_string(firmware.root.join("etc/sources.list"))
            .unwrap()
            .contains(
                " Contents-mkimage=yes] http://mirror.invalid/debian bookworm non-free-firmware\n"
            ));
        src.keyring = dir.path().join("missing.gpg");
        assert!(Fetcher::new(&src)
            .err()
            .unwrap()
            .to_string()
            .contains("debian-archive-keyring"));
    }
}
