//! The package index a build installs from, as one digest: the sha256 of
//! the mirror's `InRelease` for the suite (it lists the checksum of every
//! `Packages` file, so any change to any package changes it). Fetched with
//! apt's own downloader (`apt-helper download-file`, through the apt proxy)
//! once per process and source — one small request, so a build that is up
//! to date knows it in a fraction of a second.
//!
//! The digest only detects change; apt verifies the signature when it
//! installs. When the mirror cannot be reached, the last `InRelease`
//! fetched stands in (with a warning), so builds work offline.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;

pub use super::fetcher::kept;
use super::fetcher::{AptSource, Fetcher};
use crate::exec::Retry;

/// What a digest stands for: `index:SUITE/COMPONENTS`.
pub fn part_name(src: &AptSource) -> String {
    format!("index:{}/{}", src.suite, src.components.join(","))
}

/// The sha256 of the suite's `InRelease` on the source's mirror.
pub fn digest(src: &AptSource) -> anyhow::Result<String> {
    static SEEN: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
    let fetcher = Fetcher::new(src)?;
    let url = format!("{}/dists/{}/InRelease", fetcher.mirror(), src.suite);
    let memo_key = format!("{url} {:?}", src.apt_proxy);
    if let Some(hash) = SEEN.lock().ok().and_then(|m| m.get(&memo_key).cloned()) {
        return Ok(hash);
    }
    let kept = kept(&src.cache_dir, fetcher.mirror(), &src.suite);
    let dir = src.cache_dir.join("apt/index");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // With an InRelease to fall back on, a mirror that fails is not waited for.
    let retry = if kept.is_file() {
        Retry::NONE
    } else {
        Retry::MIRROR
    };
    let hash = match fetcher.download(&url, &dir, retry) {
        Ok((_tmp, got)) => {
            let hash = crate::artifact::sha256_file(&got)?.1;
            fs::rename(&got, &kept).with_context(|| format!("cannot keep {}", kept.display()))?;
            hash
        }
        Err(e) => offline(&kept, &url, e)?,
    };
    if let Ok(mut m) = SEEN.lock() {
        m.insert(memo_key, hash.clone());
    }
    Ok(hash)
}

/// The last `InRelease` fetched, when the mirror cannot be reached now.
fn offline(kept: &Path, url: &str, err: anyhow::Error) -> anyhow::Result<String> {
    if kept.is_file() {
        tracing::warn!(
            "cannot fetch {url} ({}); using the index fetched before",
            crate::progress::format_error(&err)
        );
        return Ok(crate::artifact::sha256_file(kept)?.1);
    }
    Err(err.context(format!("cannot fetch {url}: the package index decides whether a build is up to date (check `mirror:`/`apt_proxy:`, or pin packages with `mkimage lock`)")))
}
