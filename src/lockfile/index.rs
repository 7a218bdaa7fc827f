//! What the mirror offers now, for the packages a lock names: each
//! package's version, `.deb` sha256 and pool filename, read from the
//! private apt's `Packages` lists after a fresh `apt-get update`. The lists
//! are tens of MB; one pass picks out only the wanted (name, version)
//! pairs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;

use super::format::Locked;
use crate::apt::{AptSource, Fetcher};

/// The `Packages` lists of the source, fetched fresh.
pub fn fresh_lists(src: &AptSource) -> anyhow::Result<Vec<PathBuf>> {
    Fetcher::new(src)?.fresh_lists()
}

/// For each wanted package (name → version), the mirror's entry at that
/// version, if the lists have one.
pub fn lookup(
    lists: &[PathBuf],
    wanted: &BTreeMap<String, String>,
) -> anyhow::Result<BTreeMap<String, Locked>> {
    let mut found = BTreeMap::new();
    for list in lists {
        let text = std::fs::read_to_string(list)
            .with_context(|| format!("cannot read the package list {}", list.display()))?;
        scan(&text, wanted, &mut found);
    }
    Ok(found)
}

/// One pass over a `Packages` text.
fn scan(text: &str, wanted: &BTreeMap<String, String>, found: &mut BTreeMap<String, Locked>) {
    let (mut name, mut version, mut sha256, mut filename) = ("", "", "", "");
    for line in text.lines().chain(std::iter::once("")) {
        if line.is_empty() {
            if wanted.get(name).is_some_and(|v| v == version) && !sha256.is_empty() {
                found.insert(
                    name.to_string(),
                    Locked {
                        version: version.to_string(),
                        sha256: sha256.to_string(),
                        filename: filename.to_string(),
                    },
                );
            }
            (name, version, sha256, filename) = ("", "", "", "");
        } else if let Some(v) = line.strip_prefix("Package: ") {
            name = v.trim();
        } else if let Some(v) = line.strip_prefix("Version: ") {
            version = v.trim();
        } else if let Some(v) = line.strip_prefix("SHA256: ") {
            sha256 = v.trim();
        } else if let Some(v) = line.strip_prefix("Filename: ") {
            filename = v.trim();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_wanted_versions() {
        let text = "Package: curl\nVersion: 7.88.1-10+deb12u5\nFilename: pool/main/c/curl/curl_7.88.1-10+deb12u5_amd64.deb\nSHA256: aa\nDescription: x\n multi\n\nPackage: curl\nVersion: 7.88.1-10+deb12u6\nSHA256: bb\nFilename: pool/c.deb\n\nPackage: jq\nVersion: 1.6-2.1\nSHA256: cc\nFilename: pool/j.deb";
        let wanted: BTreeMap<String, String> = [
            ("curl", "7.88.1-10+deb12u5"),
            ("jq", "1.6-2.1"),
            ("gone", "1"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let mut found = BTreeMap::new();
        scan(text, &wanted, &mut found);
        assert_eq!(found.len(), 2);
        assert_eq!(found["curl"].sha256, "aa");
        assert_eq!(
            found["curl"].filename,
            "pool/main/c/curl/curl_7.88.1-10+deb12u5_amd64.deb"
        );
        assert_eq!(found["jq"].sha256, "cc");
    }
}
