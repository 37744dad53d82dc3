//! Compaction: forget history up to a revision, as etcd's `Compact` does.
//!
//! Two steps. First the logical mark (`compacted`) is made durable and published, so reads and
//! watches below it fail from then on. Then old versions are removed physically in bounded
//! batches: for every key written at or before the mark, all versions but the newest one at the
//! mark are deleted (and that one too if it is a tombstone), along with the history entries.
//! `compacted_done` records how far the physical step got, so a crash in between is finished at
//! the next open. Writers are never blocked: they only touch revisions above the mark.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use rocksdb::{WriteBatch, WriteOptions};

use super::encoding::*;
use super::Shared;
use crate::store::{Error, Result, Revision};

/// History entries handled per physical batch.
const CHUNK: usize = 2048;

pub(super) fn compact(shared: &Shared, revision: Revision) -> Result<()> {
    let _guard = shared
        .compaction
        .lock()
        .map_err(|_| Error::Storage("a previous compaction panicked".into()))?;
    let current = shared.committed.load(Ordering::SeqCst);
    if revision > current {
        return Err(Error::FutureRevision {
            requested: revision,
            current,
        });
    }
    if revision <= shared.compacted.load(Ordering::SeqCst) {
        return Ok(());
    }
    let meta = shared.cf(CF_META)?;
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    shared
        .db
        .put_cf_opt(meta, META_COMPACTED, revision.to_be_bytes(), &opts)
        .map_err(|e| shared.rocks_err(e))?;
    shared.compacted.store(revision, Ordering::SeqCst);
    physical(shared, revision)
}

/// Finish a physical compaction a crash interrupted.
pub(super) fn finish_physical(shared: &Shared) -> Result<()> {
    let target = shared.compacted.load(Ordering::SeqCst);
    if target > 0 {
        physical(shared, target)?;
    }
    Ok(())
}

fn physical(shared: &Shared, target: Revision) -> Result<()> {
    let kv = shared.cf(CF_KV)?;
    let history = shared.cf(CF_HISTORY)?;
    let meta = shared.cf(CF_META)?;
    let done = shared
        .db
        .get_cf(meta, META_COMPACTED_DONE)
        .map_err(|e| shared.rocks_err(e))?
        .and_then(|raw| decode_u64(&raw))
        .unwrap_or(0);
    let mut from = done;
    while from < target {
        // Collect the keys touched by the next chunk of history.
        let mut iter = shared.db.raw_iterator_cf(history);
        iter.seek((from + 1).to_be_bytes());
        let mut keys = BTreeSet::new();
        let mut last = from;
        while iter.valid() && keys.len() < CHUNK {
            let Some(rev) = iter.key().and_then(decode_u64) else {
                break;
            };
            if rev > target {
                break;
            }
            if let Some((_, key)) = iter.value().and_then(decode_history) {
                keys.insert(key);
            }
            last = rev;
            iter.next();
        }
        iter.status().map_err(|e| shared.rocks_err(e))?;
        let chunk_end = if iter.valid() && keys.len() >= CHUNK {
            last
        } else {
            target
        };
        drop(iter);

        let mut wb = WriteBatch::default();
        let mut versions = shared.db.raw_iterator_cf(kv);
        for key in &keys {
            // Versions of `key` up to the chunk end; keep only the newest, unless a tombstone.
            versions.seek(version_key(key, 0));
            let mut older: Vec<(Vec<u8>, bool)> = Vec::new();
            while versions.valid() {
                let (Some(raw), Some(val)) = (versions.key(), versions.value()) else {
                    break;
                };
                match split_version_key(raw) {
                    Some((k, rev)) if k == key.as_bytes() && rev <= chunk_end => {
                        let tombstone = decode_version(val).is_some_and(|v| v.tombstone);
                        older.push((raw.to_vec(), tombstone));
                    }
                    _ => break,
                }
                versions.next();
            }
            if let Some((newest, tombstone)) = older.pop() {
                if tombstone {
                    wb.delete_cf(kv, newest);
                }
            }
            for (raw, _) in older {
                wb.delete_cf(kv, raw);
            }
        }
        drop(versions);
        wb.delete_range_cf(
            history,
            (from + 1).to_be_bytes(),
            (chunk_end + 1).to_be_bytes(),
        );
        wb.put_cf(meta, META_COMPACTED_DONE, chunk_end.to_be_bytes());
        shared
            .db
            .write_opt(wb, &WriteOptions::default())
            .map_err(|e| shared.rocks_err(e))?;
        from = chunk_end;
    }
    Ok(())
}
