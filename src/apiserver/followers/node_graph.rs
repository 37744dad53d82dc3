//! Feeds the node authorizer's graph (`auth::cedar::NodeGraph`) from the store's pods, as
//! upstream's graph populator does from its informer.

use std::sync::Arc;

use serde_json::Value;

use std::sync::atomic::AtomicBool;

use super::follow::{follow, Follower, Tracked};
use crate::auth::cedar::NodeGraph;
use crate::store::Backend;

const PODS_PREFIX: &str = crate::apiserver::storage::Builtin::Pods.prefix();

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

/// Follow the store's pods forever; `synced` is set once the first list is in the graph.
pub async fn run(graph: Arc<NodeGraph>, store: Arc<dyn Backend>, synced: Arc<AtomicBool>) {
    let follower = Tracked {
        inner: Pods(graph),
        synced,
    };
    follow("node graph", PODS_PREFIX, store, Arc::new(follower)).await
}
