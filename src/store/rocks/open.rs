//! Opening the data directory, refusing anything that is not clearly ours or is damaged.
//!
//! An existing, non-empty directory without RocksDB's `CURRENT` file is refused rather than
//! initialised: creating a fresh store there would silently hide the old data.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

use super::encoding::*;
use super::{compact, RocksConfig, Shared};
use crate::store::watch::Hub;
use crate::store::{Error, Result};

pub(super) fn open(cfg: &RocksConfig) -> Result<Shared> {
    let path = cfg.path.as_path();
    let bad = |detail: String| Error::BadDataDir {
        path: path.to_path_buf(),
        detail,
    };
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => return Err(bad("it exists but is not a directory".into())),
        Ok(_) => {
            let mut entries = std::fs::read_dir(path).map_err(|e| bad(e.to_string()))?;
            let empty = entries.next().is_none();
            if !empty && !path.join("CURRENT").exists() {
                return Err(Error::Corrupt {
                    path: path.to_path_buf(),
                    detail: "it is not empty but has no CURRENT file; refusing to create a new \
                             store over existing files"
                        .into(),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path).map_err(|e| bad(format!("cannot create it: {e}")))?;
        }
        Err(e) => return Err(bad(e.to_string())),
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| bad(format!("cannot set permissions: {e}")))?;

    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_paranoid_checks(true);
    opts.set_max_background_jobs(2);
    opts.set_keep_log_file_num(3);
    opts.set_max_total_wal_size(64 << 20);
    let cf_opts = || {
        let mut o = Options::default();
        o.set_compression_type(rocksdb::DBCompressionType::Lz4);
        o
    };
    let cfs = [CF_KV, CF_HISTORY, CF_META]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, cf_opts()));
    let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| Error::from_rocks(e, path))?;

    let shared_db = Shared {
        db,
        path: path.to_path_buf(),
        committed: AtomicU64::new(0),
        compacted: AtomicU64::new(0),
        hub: Hub::new(0, hub_limits(cfg)),
        compaction: Mutex::new(()),
    };
    let (revision, compacted) = check_meta(&shared_db, path)?;
    let shared = Shared {
        committed: AtomicU64::new(revision),
        compacted: AtomicU64::new(compacted),
        hub: Hub::new(revision, hub_limits(cfg)),
        ..shared_db
    };
    // A compaction interrupted by a crash left old versions behind; finish it.
    compact::finish_physical(&shared)?;
    Ok(shared)
}

fn hub_limits(cfg: &RocksConfig) -> crate::store::watch::Limits {
    crate::store::watch::Limits {
        events: cfg.watch_buffer,
        bytes: cfg.watch_buffer_bytes,
        total_bytes: cfg.watch_total_bytes,
    }
}

/// Read and cross-check the metadata; write it for a new store.
fn check_meta(shared: &Shared, path: &Path) -> Result<(u64, u64)> {
    let meta = shared.cf(CF_META)?;
    let history = shared.cf(CF_HISTORY)?;
    let read = |name: &[u8]| -> Result<Option<u64>> {
        match shared
            .db
            .get_cf(meta, name)
            .map_err(|e| shared.rocks_err(e))?
        {
            None => Ok(None),
            Some(raw) => decode_u64(&raw).map(Some).ok_or_else(|| Error::Corrupt {
                path: path.to_path_buf(),
                detail: format!("metadata {} is malformed", String::from_utf8_lossy(name)),
            }),
        }
    };
    let format = read(META_FORMAT)?;
    let revision = read(META_REVISION)?.unwrap_or(0);
    let compacted = read(META_COMPACTED)?.unwrap_or(0);
    let mut last_history = shared.db.raw_iterator_cf(history);
    last_history.seek_to_last();
    let last_logged = last_history.key().and_then(decode_u64);
    match format {
        None if revision == 0 && last_logged.is_none() => {
            shared
                .db
                .put_cf(meta, META_FORMAT, FORMAT_VERSION.to_be_bytes())
                .map_err(|e| shared.rocks_err(e))?;
            shared.db.flush_wal(true).map_err(|e| shared.rocks_err(e))?;
        }
        None => {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                detail: "store has data but no format marker".into(),
            })
        }
        Some(FORMAT_VERSION) => {}
        Some(other) => {
            return Err(Error::BadDataDir {
                path: path.to_path_buf(),
                detail: format!(
                    "store format {other} is not supported by this version (expects \
                     {FORMAT_VERSION})"
                ),
            })
        }
    }
    if let Some(logged) = last_logged {
        if logged != revision {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                detail: format!("history ends at revision {logged} but the store says {revision}"),
            });
        }
    }
    if compacted > revision {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            detail: format!("compacted revision {compacted} is past the current {revision}"),
        });
    }
    Ok((revision, compacted))
}
