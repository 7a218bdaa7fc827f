//! What the archive formats share when they fail: [`ArchiveError`], and
//! how many files with extended attributes an error names.

use std::io;
use std::path::PathBuf;

/// Files carrying xattrs that an archive cannot hold (at most this many are
/// named in an error; the count says how many there were).
pub const XATTR_REPORT_LIMIT: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{count} file(s) in {} carry extended attributes, which {format} cannot hold: {}; {fix}",
        root.display(), describe_xattrs(files))]
    Xattrs {
        root: PathBuf,
        format: &'static str,
        count: usize,
        /// The first few files and their attribute names.
        files: Vec<(PathBuf, Vec<String>)>,
        fix: String,
    },
    #[error("{}: {what}", path.display())]
    Squashfs { path: PathBuf, what: String },
    #[error("invalid squashfs options: {0}")]
    Options(String),
    #[error("{}: no entry matches `{pattern}`", image.display())]
    NotFound { image: PathBuf, pattern: String },
    #[error(transparent)]
    Exec(#[from] crate::exec::ExecError),
}

impl ArchiveError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ArchiveError {
        let path = path.into();
        move |source| ArchiveError::Io { path, source }
    }
}

/// backhand's error text (its Display is empty without the `error-strings`
/// feature, so fall back to the variant name).
pub(crate) fn bh_text(e: &backhand::BackhandError) -> String {
    let s = e.to_string();
    if s.trim().is_empty() {
        format!("{e:?}")
    } else {
        s
    }
}

fn describe_xattrs(files: &[(PathBuf, Vec<String>)]) -> String {
    files
        .iter()
        .map(|(p, names)| format!("{} ({})", p.display(), names.join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}
