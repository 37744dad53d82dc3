//! Feeds the node authorizer's graph (`auth::cedar::NodeGraph`) from the store's pods and
//! PersistentVolumeClaims (the pvc → pv edges), as upstream's graph populator does from its
//! informers.

use std::sync::Arc;

use serde_json::Value;

use std::sync::atomic::{AtomicBool, Ordering};

use super::follow::{follow, Follower, Tracked};
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

/// Follow the store's pods and claims forever; `synced` is set once the first list of both
/// is in the graph.
pub async fn run(graph: Arc<NodeGraph>, store: Arc<dyn Backend>, synced: Arc<AtomicBool>) {
    let pods_synced = Arc::new(AtomicBool::new(false));
    let claims_synced = Arc::new(AtomicBool::new(false));
    let pods = Tracked {
        inner: Pods(graph.clone()),
        synced: pods_synced.clone(),
    };
    let claims = Tracked {
        inner: Claims(graph),
        synced: claims_synced.clone(),
    };
    let both = async move {
        while !(pods_synced.load(Ordering::Acquire) && claims_synced.load(Ordering::Acquire)) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        synced.store(true, Ordering::Release);
        std::future::pending::<()>().await
    };
    tokio::join!(
        follow("node graph", PODS_PREFIX, store.clone(), Arc::new(pods)),
        follow("node graph claims", CLAIMS_PREFIX, store, Arc::new(claims)),
        both,
    );
}
