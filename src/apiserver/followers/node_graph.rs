//! Feeds the node authorizer's graph (`auth::cedar::NodeGraph`) from the store's pods and
//! PersistentVolumeClaims (the pvc → pv edges), as upstream's graph populator does from its
//! informers.

use std::sync::Arc;

use serde_json::Value;

use std::sync::atomic::{AtomicBool, Ordering};

use super::follow::{follow, Follower};
use crate::auth::cedar::NodeGraph;
use crate::store::Backend;

const PODS_PREFIX: &str = crate::apiserver::storage::Builtin::Pods.prefix();
const CLAIMS_PREFIX: &str = crate::apiserver::storage::Builtin::PersistentVolumeClaims.prefix();

struct Pods(Arc<NodeGraph>);

impl Follower for Pods {
    fn reset(&self, items: Vec<(String, Value)>) {
        self.0.clear();
        for (_, pod) in &items {
            self.0.apply(pod);
        }
    }
    fn apply(&self, _key: &str, pod: &Value) {
        self.0.apply(pod);
    }
    fn remove(&self, _key: &str, pod: &Value) {
        self.0.remove(pod);
    }
}

struct Claims(Arc<NodeGraph>);

impl Follower for Claims {
    fn reset(&self, items: Vec<(String, Value)>) {
        self.0.clear_claims();
        for (_, pvc) in &items {
            self.0.apply_claim(pvc);
        }
    }
    fn apply(&self, _key: &str, pvc: &Value) {
        self.0.apply_claim(pvc);
    }
    fn remove(&self, _key: &str, pvc: &Value) {
        self.0.remove_claim(pvc);
    }
}

/// One of the two lists the graph needs: once its first list is in and the other's is too,
/// the graph is synced (whichever lands second says so; no polling).
struct Half<F> {
    inner: F,
    mine: Arc<AtomicBool>,
    other: Arc<AtomicBool>,
    synced: Arc<AtomicBool>,
}

impl<F: Follower> Follower for Half<F> {
    fn reset(&self, items: Vec<(String, Value)>) {
        self.inner.reset(items);
        // SeqCst: of two resets racing, at least one sees the other's store.
        self.mine.store(true, Ordering::SeqCst);
        if self.other.load(Ordering::SeqCst) {
            self.synced.store(true, Ordering::Release);
        }
    }
    fn apply(&self, key: &str, obj: &Value) {
        self.inner.apply(key, obj);
    }
    fn remove(&self, key: &str, obj: &Value) {
        self.inner.remove(key, obj);
    }
}

/// Follow the store's pods and claims forever; `synced` is set once the first list of both
/// is in the graph.
pub async fn run(graph: Arc<NodeGraph>, store: Arc<dyn Backend>, synced: Arc<AtomicBool>) {
    let pods_listed = Arc::new(AtomicBool::new(false));
    let claims_listed = Arc::new(AtomicBool::new(false));
    let pods = Half {
        inner: Pods(graph.clone()),
        mine: pods_listed.clone(),
        other: claims_listed.clone(),
        synced: synced.clone(),
    };
    let claims = Half {
        inner: Claims(graph),
        mine: claims_listed,
        other: pods_listed,
        synced,
    };
    tokio::join!(
        follow("node graph", PODS_PREFIX, store.clone(), Arc::new(pods)),
        follow("node graph claims", CLAIMS_PREFIX, store, Arc::new(claims)),
    );
}
