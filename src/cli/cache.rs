//! `mkimage cache`: the flags (ages and sizes parsed) as a request for
//! `cache_cmd::run`.

use std::path::PathBuf;

use mkimage::cache_cmd::{parse_age, parse_size};

use super::paths::absolute;

/// `mkimage cache`.
#[derive(Debug, Clone, clap::Args)]
pub struct CacheArgs {
    /// The output dir whose cache (DIR/.cache) to show.
    #[arg(long, default_value = "builds")]
    pub dir: PathBuf,
    /// The cache dir itself (a build's `cache_dir:`), instead of DIR/.cache.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Remove what no build used for this long: 30d, 12h, 90m, 45s.
    #[arg(long, value_name = "AGE")]
    pub older_than: Option<String>,
    /// Then remove the least recently used until the cache is at most this big: 500M, 10G.
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn cache(a: &CacheArgs) -> anyhow::Result<()> {
    let usage = |e: String| mkimage::UsageError(e);
    let req = mkimage::cache_cmd::Request {
        cache_dir: match &a.cache_dir {
            Some(d) => absolute(d)?,
            None => absolute(&a.dir)?.join(".cache"),
        },
        older_than: a
            .older_than
            .as_deref()
            .map(parse_age)
            .transpose()
            .map_err(|e| usage(format!("--older-than {e}")))?,
        max_size: a
            .max_size
            .as_deref()
            .map(parse_size)
            .transpose()
            .map_err(|e| usage(format!("--max-size {e}")))?,
        dry_run: a.dry_run,
    };
    mkimage::cache_cmd::run(&req)
}
