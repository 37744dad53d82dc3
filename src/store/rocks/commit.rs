//! The single writer: the only code that assigns revisions.
//!
//! It takes every request waiting in its queue (up to `max_batch`), checks each against the
//! latest state (the store, overlaid with earlier writes of the same batch), and commits all
//! that pass in one `WriteBatch` with a synced WAL. Only then are replies sent and events
//! published, so nobody ever observes a revision that a crash could take back.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use bytes::Bytes;
use rocksdb::{WriteBatch, WriteOptions};
use tokio::sync::oneshot;

use super::encoding::*;
use super::read::version_at;
use super::Shared;
use crate::store::{Error, Event, EventKind, Result, Revision};

pub(super) enum Op {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Revision,
    },
}

pub(super) struct Request {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Revision>>,
}

/// The latest state of one key as this batch sees it: `(mod_revision, value)` if live.
type Latest = Option<(Revision, Bytes)>;

pub(super) fn run(shared: Arc<Shared>, rx: Receiver<Request>, max_batch: usize) {
    let mut next = shared.committed.load(Ordering::SeqCst);
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) => break,
            }
        }
        next = commit_batch(&shared, batch, next);
    }
    shared.hub.close();
}

fn latest(shared: &Shared, overlay: &HashMap<String, Latest>, key: &str) -> Result<Latest> {
    if let Some(l) = overlay.get(key) {
        return Ok(l.clone());
    }
    let cf = shared.cf(CF_KV)?;
    let mut iter = shared.db.raw_iterator_cf(cf);
    Ok(match version_at(shared, &mut iter, key, u64::MAX)? {
        Some((rev, v)) if !v.tombstone => Some((rev, v.value)),
        _ => None,
    })
}

/// Commit one batch; returns the revision the next batch starts after.
fn commit_batch(shared: &Shared, batch: Vec<Request>, start: Revision) -> Revision {
    let mut rev = start;
    let mut overlay: HashMap<String, Latest> = HashMap::new();
    let mut wb = WriteBatch::default();
    let mut outcomes: Vec<(oneshot::Sender<Result<Revision>>, Result<Revision>)> =
        Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    let (cf_kv, cf_history, cf_meta) =
        match (shared.cf(CF_KV), shared.cf(CF_HISTORY), shared.cf(CF_META)) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            _ => {
                for req in batch {
                    let _ = req
                        .reply
                        .send(Err(Error::Storage("column family missing".into())));
                }
                return start;
            }
        };

    for Request { op, reply } in batch {
        let key = match &op {
            Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key.clone(),
        };
        let current = match latest(shared, &overlay, &key) {
            Ok(c) => c,
            Err(e) => {
                outcomes.push((reply, Err(e)));
                continue;
            }
        };
        let checked = match (&op, &current) {
            (Op::Create { .. }, Some(_)) => Err(Error::AlreadyExists { key: key.clone() }),
            (Op::Create { value, .. }, None) => Ok((EventKind::Create, value.clone(), false, None)),
            (Op::Update { .. } | Op::Delete { .. }, None) => {
                Err(Error::NotFound { key: key.clone() })
            }
            (Op::Update { expected, .. } | Op::Delete { expected, .. }, Some((cur, _)))
                if cur != expected =>
            {
                Err(Error::Conflict {
                    key: key.clone(),
                    expected: *expected,
                    current: *cur,
                })
            }
            (Op::Update { value, .. }, Some((_, last))) => {
                Ok((EventKind::Update, value.clone(), false, Some(last.clone())))
            }
            (Op::Delete { .. }, Some((_, last))) => {
                Ok((EventKind::Delete, last.clone(), true, None))
            }
        };
        match checked {
            Err(e) => outcomes.push((reply, Err(e))),
            Ok((kind, value, tombstone, prev_value)) => {
                rev += 1;
                wb.put_cf(
                    cf_kv,
                    version_key(&key, rev),
                    encode_version(tombstone, &value),
                );
                wb.put_cf(cf_history, rev.to_be_bytes(), encode_history(kind, &key));
                overlay.insert(key.clone(), (!tombstone).then(|| (rev, value.clone())));
                events.push(Arc::new(Event {
                    kind,
                    key,
                    value,
                    revision: rev,
                    prev_value,
                }));
                outcomes.push((reply, Ok(rev)));
            }
        }
    }

    if rev > start {
        wb.put_cf(cf_meta, META_REVISION, rev.to_be_bytes());
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        if let Err(e) = shared.db.write_opt(wb, &opts) {
            let err = shared.rocks_err(e);
            tracing::error!(error = %err, "store write failed; batch rejected");
            for (reply, outcome) in outcomes {
                let outcome = match outcome {
                    Ok(_) => Err(copy_error(&err)),
                    other => other,
                };
                let _ = reply.send(outcome);
            }
            return start;
        }
        shared.committed.store(rev, Ordering::SeqCst);
        shared.hub.publish(&events);
    }
    for (reply, outcome) in outcomes {
        let _ = reply.send(outcome);
    }
    rev
}

/// One failed batch write answers every writer in it with the same failure.
fn copy_error(err: &Error) -> Error {
    match err {
        Error::NoSpace => Error::NoSpace,
        Error::Corrupt { path, detail } => Error::Corrupt {
            path: path.clone(),
            detail: detail.clone(),
        },
        other => Error::Storage(other.to_string()),
    }
}
