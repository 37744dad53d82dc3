//! Shared informers, as upstream's SharedInformerFactory: one watch per resource feeds one
//! reflector store that every controller reads, and a broadcast of changes — additions,
//! updates *and deletions* — that each controller subscribes to instead of opening its own
//! watch. (kube-runtime's own shared streams drop deletions, which a ReplicaSet must see to
//! replace a deleted pod, hence this small layer over its watcher and store.)
//!
//! Invariants: the store is updated before subscribers hear of a change, so a reconcile
//! triggered by it reads at least that state; after a re-list every object is announced again
//! and objects that vanished meanwhile are announced as deleted; a subscriber that falls more
//! than `BUFFER` changes behind is handed every cached object instead (a resync), never
//! blocking the watch; the watch re-lists with kube-runtime's default back-off after errors
//! (never a hot loop).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use futures::{stream, Stream, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

/// Changes buffered per subscriber before it is resynced from the store.
const BUFFER: usize = 4096;

/// One change of a watched object.
#[derive(Debug)]
pub enum Change<K> {
    Applied(Arc<K>),
    Deleted(Arc<K>),
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Applied(k) => Change::Applied(k.clone()),
            Change::Deleted(k) => Change::Deleted(k.clone()),
        }
    }
}

impl<K> Change<K> {
    pub fn object(&self) -> &K {
        match self {
            Change::Applied(k) | Change::Deleted(k) => k,
        }
    }
}

pub struct Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    api: Api<K>,
    store: Store<K>,
    writer: reflector::store::Writer<K>,
    tx: broadcast::Sender<Change<K>>,
    /// Set once the first list is in the store. (kube-runtime's `Store::wait_until_ready`
    /// wakes only one of several waiters, so readiness is announced here.)
    ready: tokio::sync::watch::Sender<bool>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    pub fn new(api: Api<K>) -> Self {
        let (store, writer) = reflector::store();
        let (tx, _) = broadcast::channel(BUFFER);
        let (ready, _) = tokio::sync::watch::channel(false);
        Self {
            api,
            store,
            writer,
            tx,
            ready,
        }
    }

    /// Resolves once the cache holds a full list.
    pub fn ready(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.ready.subscribe();
        async move {
            let _ = rx.wait_for(|r| *r).await;
        }
    }

    /// The shared cache (ready once the first list completed).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every change from now on (a resync of the whole cache after falling behind).
    pub fn subscribe(&self) -> impl Stream<Item = Change<K>> + Send + 'static {
        let store = self.store.clone();
        BroadcastStream::new(self.tx.subscribe()).flat_map(move |r| {
            let changes = match r {
                Ok(c) => vec![c],
                Err(BroadcastStreamRecvError::Lagged(_)) => {
                    store.state().into_iter().map(Change::Applied).collect()
                }
            };
            stream::iter(changes)
        })
    }

    /// The objects themselves, as a controller's main trigger (deletions need no reconcile).
    pub fn triggers(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        self.subscribe().filter_map(|c| async move {
            match c {
                Change::Applied(k) => Some(Ok((*k).clone())),
                Change::Deleted(_) => None,
            }
        })
    }

    /// Objects of another kind that a change of these concerns (its owners, say).
    pub fn related<O, F>(&self, map: F) -> impl Stream<Item = ObjectRef<O>> + Send + 'static
    where
        O: Resource<DynamicType = ()> + 'static,
        F: Fn(&K) -> Vec<ObjectRef<O>> + Send + 'static,
    {
        self.subscribe()
            .flat_map(move |c| stream::iter(map(c.object())))
    }

    /// The watch, to be run (spawned) until it is aborted.
    pub fn run(self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let Self {
            api,
            store,
            mut writer,
            tx,
            ready,
        } = self;
        let mut before: HashMap<ObjectRef<K>, Arc<K>> = HashMap::new();
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        async move {
            while let Some(ev) = events.next().await {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::debug!(error = %e, "informer watch error");
                        continue;
                    }
                };
                if matches!(ev, watcher::Event::Init) {
                    before = store
                        .state()
                        .into_iter()
                        .map(|o| (ObjectRef::from_obj(o.as_ref()), o))
                        .collect();
                }
                writer.apply_watcher_event(&ev);
                // No receivers is fine: send errors are ignored.
                match ev {
                    watcher::Event::Apply(obj) => {
                        let r = ObjectRef::from_obj(&obj);
                        let shared = store.get(&r).unwrap_or_else(|| Arc::new(obj));
                        let _ = tx.send(Change::Applied(shared));
                    }
                    watcher::Event::Delete(obj) => {
                        let _ = tx.send(Change::Deleted(Arc::new(obj)));
                    }
                    watcher::Event::InitDone => {
                        ready.send_replace(true);
                        for o in store.state() {
                            before.remove(&ObjectRef::from_obj(o.as_ref()));
                            let _ = tx.send(Change::Applied(o));
                        }
                        for (_, gone) in before.drain() {
                            let _ = tx.send(Change::Deleted(gone));
                        }
                    }
                    watcher::Event::Init | watcher::Event::InitApply(_) => {}
                }
            }
        }
    }
}
