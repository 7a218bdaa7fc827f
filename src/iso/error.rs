//! What building an ISO fails with.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Exec(#[from] crate::exec::ExecError),
}

impl IsoError {
    pub fn io(path: &Path, source: std::io::Error) -> IsoError {
        IsoError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
