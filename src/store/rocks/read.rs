//! Reads: point gets and ranges at a revision, and watch streams (history replay, then live).
//!
//! Reads at an explicit revision take a RocksDB snapshot *before* checking the compaction mark:
//! a compaction publishes its mark before deleting anything, so a snapshot that passed the check
//! cannot have lost the versions it needs.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rocksdb::{DBRawIteratorWithThreadMode, ReadOptions, DB};

use super::encoding::*;
use super::{owned, Shared};
use crate::store::{
    check_key, Error, Event, EventKind, KeyValue, RangeRequest, RangeResponse, Result, Revision,
    WatchStream,
};

type RawIter<'a> = DBRawIteratorWithThreadMode<'a, DB>;

/// Check that `rev` is readable: not compacted away and not in the future.
fn check_revision(shared: &Shared, rev: Revision) -> Result<()> {
    let compacted = shared.compacted.load(Ordering::SeqCst);
    if rev < compacted {
        return Err(Error::Compacted {
            requested: rev,
            compacted,
        });
    }
    let current = shared.committed.load(Ordering::SeqCst);
    if rev > current {
        return Err(Error::FutureRevision {
            requested: rev,
            current,
        });
    }
    Ok(())
}

/// The newest version of `key` at or below `rev`, if any (tombstones included).
pub(super) fn version_at(
    shared: &Shared,
    iter: &mut RawIter<'_>,
    key: &str,
    rev: Revision,
) -> Result<Option<(Revision, Version)>> {
    iter.seek_for_prev(version_key(key, rev));
    if !iter.valid() {
        iter.status().map_err(|e| shared.rocks_err(e))?;
        return Ok(None);
    }
    let (Some(raw_key), Some(raw_value)) = (iter.key(), iter.value()) else {
        return Ok(None);
    };
    match split_version_key(raw_key) {
        Some((k, found)) if k == key.as_bytes() => {
            let version = decode_version(raw_value).ok_or_else(|| corrupt(shared, key))?;
            Ok(Some((found, version)))
        }
        _ => Ok(None),
    }
}

fn corrupt(shared: &Shared, key: &str) -> Error {
    Error::Corrupt {
        path: shared.path.clone(),
        detail: format!("stored version of {key} is malformed"),
    }
}

pub(super) fn get(
    shared: &Shared,
    key: &str,
    revision: Option<Revision>,
) -> Result<Option<KeyValue>> {
    let cf = shared.cf(CF_KV)?;
    let found = match revision {
        None => {
            let rev = shared.committed.load(Ordering::SeqCst);
            let mut iter = shared.db.raw_iterator_cf(cf);
            version_at(shared, &mut iter, key, rev)?
        }
        Some(rev) => {
            let snapshot = shared.db.snapshot();
            check_revision(shared, rev)?;
            let mut opts = ReadOptions::default();
            opts.set_snapshot(&snapshot);
            let mut iter = shared.db.raw_iterator_cf_opt(cf, opts);
            version_at(shared, &mut iter, key, rev)?
        }
    };
    Ok(match found {
        Some((rev, v)) if !v.tombstone => Some(KeyValue {
            key: key.to_string(),
            value: v.value,
            mod_revision: rev,
        }),
        _ => None,
    })
}

pub(super) fn range(shared: &Shared, req: &RangeRequest) -> Result<RangeResponse> {
    if req.prefix.contains('\0') {
        return Err(Error::InvalidKey(req.prefix.escape_debug().to_string()));
    }
    let cf = shared.cf(CF_KV)?;
    let snapshot = shared.db.snapshot();
    let rev = match req.revision {
        Some(rev) => {
            check_revision(shared, rev)?;
            rev
        }
        None => shared.committed.load(Ordering::SeqCst),
    };
    let mut opts = ReadOptions::default();
    opts.set_snapshot(&snapshot);
    let mut iter = shared.db.raw_iterator_cf_opt(cf, opts);
    let start = match &req.start_after {
        // Everything of `after` sorts before `after ++ 0x01` (NUL separates key and revision).
        Some(after) => {
            let mut k = after.as_bytes().to_vec();
            k.push(1);
            if k.as_slice() < req.prefix.as_bytes() {
                req.prefix.as_bytes().to_vec()
            } else {
                k
            }
        }
        None => req.prefix.as_bytes().to_vec(),
    };
    iter.seek(&start);
    let mut items = Vec::new();
    let mut more = false;
    // The newest version <= rev of the key group being walked.
    let mut pending: Option<(Vec<u8>, Revision, Version)> = None;
    let flush = |pending: &mut Option<(Vec<u8>, Revision, Version)>,
                 items: &mut Vec<KeyValue>|
     -> Result<bool> {
        if let Some((key, mod_revision, v)) = pending.take() {
            if !v.tombstone {
                if req.limit > 0 && items.len() >= req.limit {
                    return Ok(true);
                }
                let key = String::from_utf8(key).map_err(|_| corrupt(shared, "<non-utf8>"))?;
                items.push(KeyValue {
                    key,
                    value: v.value,
                    mod_revision,
                });
            }
        }
        Ok(false)
    };
    while iter.valid() {
        let (Some(raw_key), Some(raw_value)) = (iter.key(), iter.value()) else {
            break;
        };
        if !raw_key.starts_with(req.prefix.as_bytes()) {
            break;
        }
        let (key, version_rev) =
            split_version_key(raw_key).ok_or_else(|| corrupt(shared, &req.prefix))?;
        let same_group = pending.as_ref().is_some_and(|(k, _, _)| k == key);
        if !same_group && flush(&mut pending, &mut items)? {
            more = true;
            break;
        }
        if version_rev <= rev {
            let v = decode_version(raw_value)
                .ok_or_else(|| corrupt(shared, &String::from_utf8_lossy(key)))?;
            pending = Some((key.to_vec(), version_rev, v));
        } else if !same_group {
            // Only versions newer than `rev` so far: the key did not exist yet then.
            pending = None;
        }
        iter.next();
    }
    iter.status().map_err(|e| shared.rocks_err(e))?;
    if !more && flush(&mut pending, &mut items)? {
        more = true;
    }
    Ok(RangeResponse {
        items,
        revision: rev,
        more,
    })
}

/// Load up to `max` history events (and about [`REPLAY_CHUNK_BYTES`]) in `(after, until]`
/// for `prefix`.
fn history_chunk(
    shared: &Shared,
    prefix: &str,
    after: Revision,
    until: Revision,
    max: usize,
) -> Result<(Vec<Event>, Revision)> {
    let snapshot = shared.db.snapshot();
    let compacted = shared.compacted.load(Ordering::SeqCst);
    if after < compacted {
        return Err(Error::Compacted {
            requested: after,
            compacted,
        });
    }
    let history = shared.cf(CF_HISTORY)?;
    let kv = shared.cf(CF_KV)?;
    let mut opts = ReadOptions::default();
    opts.set_snapshot(&snapshot);
    let mut iter = shared.db.raw_iterator_cf_opt(history, opts);
    let mut kv_opts = ReadOptions::default();
    kv_opts.set_snapshot(&snapshot);
    let mut kv_iter = shared.db.raw_iterator_cf_opt(kv, kv_opts);
    iter.seek((after + 1).to_be_bytes());
    let mut out = Vec::new();
    let mut cursor = after;
    let mut bytes = 0usize;
    let full = |out: &Vec<Event>, bytes: usize| out.len() >= max || bytes >= REPLAY_CHUNK_BYTES;
    while iter.valid() && !full(&out, bytes) {
        let (Some(k), Some(v)) = (iter.key(), iter.value()) else {
            break;
        };
        let rev = decode_u64(k).ok_or_else(|| corrupt(shared, "<history>"))?;
        if rev > until {
            break;
        }
        cursor = rev;
        let (kind, key) = decode_history(v).ok_or_else(|| corrupt(shared, "<history>"))?;
        if key.starts_with(prefix) {
            let (_, version) = version_at(shared, &mut kv_iter, &key, rev)?
                .ok_or_else(|| corrupt(shared, &key))?;
            let prev_value = match kind {
                EventKind::Update => version_at(shared, &mut kv_iter, &key, rev - 1)?
                    .filter(|(_, v)| !v.tombstone)
                    .map(|(_, v)| v.value),
                _ => None,
            };
            bytes += key.len() + version.value.len() + prev_value.as_ref().map_or(0, |p| p.len());
            out.push(Event {
                kind,
                key,
                value: version.value,
                revision: rev,
                prev_value,
            });
        }
        iter.next();
    }
    iter.status().map_err(|e| shared.rocks_err(e))?;
    if !full(&out, bytes) {
        cursor = until;
    }
    Ok((out, cursor))
}

struct WatchState {
    shared: Arc<Shared>,
    prefix: String,
    cursor: Revision,
    replay_until: Revision,
    buffered: VecDeque<Event>,
    sub: crate::store::watch::Subscription,
    done: bool,
}

const REPLAY_CHUNK: usize = 512;
/// A replay chunk stops growing past this many bytes, so a watcher resuming far back holds
/// about this much history at a time however large the objects are.
const REPLAY_CHUNK_BYTES: usize = 1 << 20;

pub(super) fn watch(shared: Arc<Shared>, prefix: &str, after: Revision) -> Result<WatchStream> {
    if !prefix.is_empty() {
        check_key(prefix)?;
    }
    let compacted = shared.compacted.load(Ordering::SeqCst);
    if after < compacted {
        return Err(Error::Compacted {
            requested: after,
            compacted,
        });
    }
    let sub = shared.hub.subscribe(prefix).ok_or(Error::Closed)?;
    let state = WatchState {
        cursor: after,
        replay_until: sub.replay_until,
        shared,
        prefix: prefix.to_string(),
        buffered: VecDeque::new(),
        sub,
        done: false,
    };
    Ok(Box::pin(futures::stream::unfold(state, next_event)))
}

async fn next_event(mut st: WatchState) -> Option<(Result<Event>, WatchState)> {
    if st.done {
        return None;
    }
    loop {
        if let Some(ev) = st.buffered.pop_front() {
            return Some((Ok(ev), st));
        }
        if st.cursor < st.replay_until {
            let shared = st.shared.clone();
            let (prefix, after, until) = (st.prefix.clone(), st.cursor, st.replay_until);
            let chunk = tokio::task::spawn_blocking(move || {
                history_chunk(&shared, &prefix, after, until, REPLAY_CHUNK)
            })
            .await
            .unwrap_or_else(|e| Err(Error::Storage(format!("replay task failed: {e}"))));
            match chunk {
                Ok((events, cursor)) => {
                    st.cursor = cursor;
                    st.buffered.extend(events);
                    continue;
                }
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            }
        }
        // Live: skip anything at or before where the caller asked to start.
        match st.sub.recv().await {
            Some(ev) if ev.revision <= st.cursor => continue,
            Some(ev) => return Some((Ok(owned(&ev)), st)),
            None => {
                st.done = true;
                let err = if st.sub.lagged() {
                    Error::WatchTooSlow
                } else {
                    Error::Closed
                };
                return Some((Err(err), st));
            }
        }
    }
}

pub(super) fn count_versions(shared: &Shared) -> Result<u64> {
    let cf = shared.cf(CF_KV)?;
    let mut iter = shared.db.raw_iterator_cf(cf);
    iter.seek_to_first();
    let mut n = 0;
    while iter.valid() {
        n += 1;
        iter.next();
    }
    iter.status().map_err(|e| shared.rocks_err(e))?;
    Ok(n)
}
