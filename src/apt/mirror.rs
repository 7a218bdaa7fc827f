//! The Debian mirror of the build host's own apt sources, so nothing in the
//! repository names a mirror host: deb822 `.sources` files first, then the
//! one-line `sources.list` format.

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
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sources"))
    {
        let text =
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        for p in super::deb822::parse(&text) {
            let enabled = p.get("Enabled").is_none_or(|v| v != "no");
            if enabled
                && p.get("Types")
                    .is_some_and(|t| t.split_whitespace().any(|t| t == "deb"))
            {
                candidates.extend(
                    p.get("URIs")
                        .unwrap_or_default()
                        .split_whitespace()
                        .map(str::to_string),
                );
            }
        }
    }
    for path in [apt_dir.join("sources.list")].iter().chain(
        files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "list")),
    ) {
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
        assert_eq!(
            host_mirror_in(dir.path()).unwrap(),
            "http://mirror.invalid/debian"
        );
    }

    #[test]
    fn reads_one_line_format() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("sources.list"),
            "# x\ndeb [arch=amd64] http://mirror.invalid/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(
            host_mirror_in(dir.path()).unwrap(),
            "http://mirror.invalid/debian"
        );
    }

    #[test]
    fn none_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = host_mirror_in(dir.path()).unwrap_err();
        assert_eq!(crate::exit_code(&err), 2);
        assert!(err.to_string().contains("mirror:"));
    }
}
