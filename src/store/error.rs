//! Store errors. Each variant is something a caller can act on; the apiserver maps them to
//! `metav1.Status` (AlreadyExists 409, Conflict 409, NotFound 404, Expired 410, ...).

use std::path::PathBuf;

use super::Revision;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("key {key} not found")]
    NotFound { key: String },
    #[error("key {key} was modified: expected revision {expected}, current revision {current}")]
    Conflict {
        key: String,
        expected: u64,
        current: u64,
    },
    #[error(
        "revision {requested} has been compacted (history now starts after revision {compacted})"
    )]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("watcher fell too far behind and was closed; re-list and watch again")]
    WatchTooSlow,
    #[error("invalid key {0:?}: keys must be non-empty and contain no NUL byte")]
    InvalidKey(String),
    #[error(
        "data directory {path} is locked by another process (is another rampart server running?)"
    )]
    Locked { path: PathBuf },
    #[error("data directory {path} is damaged: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("data directory {path} is not usable: {detail}")]
    BadDataDir { path: PathBuf, detail: String },
    #[error("no space left on the device holding the data directory; free space and restart")]
    NoSpace,
    #[error("the store is shutting down")]
    Closed,
    #[error("storage error: {0}")]
    Storage(String),
}

impl Error {
    /// Classify a RocksDB error by what an operator must do about it.
    pub(crate) fn from_rocks(err: rocksdb::Error, path: &std::path::Path) -> Self {
        let text = err.into_string();
        let lower = text.to_ascii_lowercase();
        if lower.contains("no space left") || lower.contains("nospace") {
            Error::NoSpace
        } else if lower.contains("lock") && lower.contains("resource temporarily unavailable") {
            Error::Locked {
                path: path.to_path_buf(),
            }
        } else if lower.contains("corruption") || lower.contains("checksum") {
            Error::Corrupt {
                path: path.to_path_buf(),
                detail: text,
            }
        } else {
            Error::Storage(text)
        }
    }
}
