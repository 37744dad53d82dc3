//! Watch-fed caches (kube-rs reflectors) for the node's network components — the service
//! proxy and the NetworkPolicy engine — which follow the cluster through a client that can
//! be replaced: the agent hands over a new one when it fails over to another API server
//! (k3s's agent load balancer) or renews the node's network certificate.
//!
//! Invariants: every event of every watch wakes the component (deletions and watch errors
//! included, so a re-list is noticed); a [`Reflectors`] set belongs to one client and is
//! replaced as a whole, its watch tasks aborted when it is dropped; [`Reflectors::ready`]
//! resolves only once every store holds its first list, and components sync only after it
//! (a sync from a half-listed store would delete rules that still hold).

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::{watch, Notify};

/// The reflectors of one component over one client.
pub struct Reflectors {
    what: &'static str,
    notify: Arc<Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ready: Vec<BoxFuture<'static, bool>>,
}

impl Reflectors {
    /// `what` names the component in logs; `notify` is woken by every watch event.
    pub fn new(what: &'static str, notify: Arc<Notify>) -> Reflectors {
        Reflectors {
            what,
            notify,
            tasks: Vec::new(),
            ready: Vec::new(),
        }
    }

    /// Start a reflector of `api` (re-listing with back-off after errors).
    pub fn watch<K>(&mut self, api: Api<K>, config: watcher::Config) -> Store<K>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let (store, writer) = reflector::store();
        let (notify, what) = (self.notify.clone(), self.what);
        self.tasks.push(tokio::spawn(async move {
            let stream = reflector::reflector(writer, watcher(api, config))
                .default_backoff()
                .touched_objects();
            futures::pin_mut!(stream);
            // Deletions also pass through the reflector (as events, not touched objects), so
            // every event of the underlying watch wakes the sync, whatever it carried.
            while let Some(ev) = stream.next().await {
                if let Err(e) = ev {
                    tracing::debug!(component = what, error = %e, "watch error; re-listing with back-off");
                }
                notify.notify_one();
            }
        }));
        let s = store.clone();
        self.ready
            .push(async move { s.wait_until_ready().await.is_ok() }.boxed());
        store
    }

    /// Resolves once every store holds its first list: `false` if a reflector stopped first.
    pub async fn ready(&mut self) -> bool {
        let all = futures::future::join_all(std::mem::take(&mut self.ready)).await;
        all.into_iter().all(|ok| ok)
    }
}

impl Drop for Reflectors {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The next client the agent hands over; never resolves once the agent dropped the sender
/// (the component then keeps the client it has).
pub async fn next_client(clients: &mut watch::Receiver<kube::Client>) -> kube::Client {
    if clients.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
    clients.borrow_and_update().clone()
}
