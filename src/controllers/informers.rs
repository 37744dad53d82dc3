//! Shared informers, as upstream's SharedInformerFactory: one watch per resource feeds one
//! reflector store that every controller reads, and each controller subscribes to the same
//! event stream (kube-runtime's shared reflectors) instead of opening its own watch.
//!
//! Invariants: the store is updated before subscribers see an event, so a reconcile triggered
//! by an event reads at least that state; the watch re-lists with kube-runtime's default
//! back-off after errors (never a hot loop); subscriptions are taken before `start`.

use std::fmt::Debug;
use std::hash::Hash;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ReflectHandle, Store};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Resource;
use serde::de::DeserializeOwned;

/// Events buffered per subscriber before the watch waits for the slowest one.
const BUFFER: usize = 1024;

pub struct Informer<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    api: Api<K>,
    store: Store<K>,
    writer: reflector::store::Writer<K>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    pub fn new(api: Api<K>) -> Self {
        let (store, writer) = reflector::store_shared(BUFFER);
        Self { api, store, writer }
    }

    /// The shared cache (ready once the first list completed).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// A new subscriber to the event stream.
    pub fn subscribe(&self) -> Option<ReflectHandle<K>> {
        self.writer.subscribe()
    }

    /// The watch, to be run (spawned) until it is aborted.
    pub fn run(self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let stream = watcher(self.api, watcher::Config::default())
            .default_backoff()
            .reflect_shared(self.writer);
        stream.for_each(|ev| async move {
            if let Err(e) = ev {
                tracing::debug!(error = %e, "informer watch error");
            }
        })
    }
}
