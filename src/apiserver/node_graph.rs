//! Feeds the node authorizer's graph (`auth::cedar::NodeGraph`) from the store: list pods,
//! then watch them, relisting after any error (a compaction, a lagging watcher), as upstream's
//! graph populator does from its informer.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::auth::cedar::NodeGraph;
use crate::store::{Backend, EventKind, RangeRequest};

const PODS_PREFIX: &str = "/registry/core/pods/";

/// Follow the store's pods forever.
pub async fn run(graph: Arc<NodeGraph>, store: Arc<dyn Backend>) {
    loop {
        if let Err(e) = sync(&graph, &store).await {
            tracing::debug!(error = %e, "node graph watch ended; relisting");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sync(graph: &NodeGraph, store: &Arc<dyn Backend>) -> Result<(), crate::store::Error> {
    let list = store
        .range(RangeRequest {
            prefix: PODS_PREFIX.into(),
            ..Default::default()
        })
        .await?;
    graph.clear();
    for kv in &list.items {
        if let Ok(v) = serde_json::from_slice::<Value>(&kv.value) {
            graph.apply(&v);
        }
    }
    let mut events = store.watch(PODS_PREFIX, list.revision).await?;
    while let Some(ev) = events.next().await {
        let ev = ev?;
        let Ok(v) = serde_json::from_slice::<Value>(&ev.value) else {
            continue;
        };
        match ev.kind {
            EventKind::Delete => graph.remove(&v),
            _ => graph.apply(&v),
        }
    }
    Ok(())
}
