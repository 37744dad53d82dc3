//! Following a store prefix from inside the API server, the way upstream's in-process
//! informers feed the RBAC authorizer, the node authorizer's graph and policy caches: list the
//! prefix and hand over the whole snapshot, then apply watch events; after any error (a
//! compacted revision, a lagging watcher) wait briefly and start over with a fresh list.
//!
//! Invariant: a follower always sees a full `reset` before the events that follow it, so it
//! never has to reconcile a gap itself.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::apiserver::storage;
use crate::store::{Backend, EventKind, RangeRequest};

/// What a follower does with the objects under its prefix (decoded JSON, with their keys).
pub trait Follower: Send + Sync + 'static {
    fn reset(&self, items: Vec<(String, Value)>);
    fn apply(&self, key: &str, obj: &Value);
    fn remove(&self, key: &str, obj: &Value);
}

/// A follower that also records that its first list was handed over (what `/readyz`'s
/// `informer-sync` check waits for).
pub struct Tracked<F> {
    pub inner: F,
    pub synced: Arc<std::sync::atomic::AtomicBool>,
}

impl<F: Follower> Follower for Tracked<F> {
    fn reset(&self, items: Vec<(String, Value)>) {
        self.inner.reset(items);
        self.synced
            .store(true, std::sync::atomic::Ordering::Release);
    }
    fn apply(&self, key: &str, obj: &Value) {
        self.inner.apply(key, obj);
    }
    fn remove(&self, key: &str, obj: &Value) {
        self.inner.remove(key, obj);
    }
}

/// Follow `prefix` forever. `what` names it in logs.
pub async fn follow(
    what: &'static str,
    prefix: &'static str,
    store: Arc<dyn Backend>,
    follower: Arc<dyn Follower>,
) {
    loop {
        if let Err(e) = sync(prefix, &store, follower.as_ref()).await {
            tracing::debug!(error = %e, what, "watch ended; relisting");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sync(
    prefix: &str,
    store: &Arc<dyn Backend>,
    follower: &dyn Follower,
) -> Result<(), crate::store::Error> {
    let list = store
        .range(RangeRequest {
            prefix: prefix.into(),
            ..Default::default()
        })
        .await?;
    let items = list
        .items
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), storage::decode_object(kv).ok()?)))
        .collect();
    follower.reset(items);
    let mut events = store.watch(prefix, list.revision).await?;
    while let Some(ev) = events.next().await {
        let ev = ev?;
        // Values that are not JSON objects were not written by the API server: skip them.
        // A deleted object carries the deletion's revision, as upstream's DELETED events do.
        let Ok(v) = storage::decode_stored(&ev.value, ev.revision) else {
            continue;
        };
        match ev.kind {
            EventKind::Delete => follower.remove(&ev.key, &v),
            _ => follower.apply(&ev.key, &v),
        }
    }
    Ok(())
}
