//! The stored CRDs as the registry sees them: loading them into the registry (at start and after
//! every CRD write) and removing every custom object of a deleted CRD — the job of upstream's
//! `customresourcecleanup` finalizer controller, which also lives in the API server
//! (apiextensions-apiserver), not the controller manager.
//!
//! The cleanup acts on the store directly: the CRD is no longer served, so its objects cannot be
//! reached through the API any more. The garbage collector (`src/controllers/`) then sees the
//! resource vanish from discovery and deletes what those objects owned.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::ResourceInfo;
use crate::apiserver::{registry, storage, State};
use crate::store::RangeRequest;

async fn list(state: &State, ri: &ResourceInfo) -> Vec<(Value, u64)> {
    match state
        .store
        .range(RangeRequest {
            prefix: storage::prefix(ri, None),
            ..Default::default()
        })
        .await
    {
        Ok(resp) => resp
            .items
            .iter()
            .filter_map(|kv| storage::decode(kv, ri).ok().map(|o| (o, kv.mod_revision)))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, resource = %ri.plural, "cannot list stored objects");
            Vec::new()
        }
    }
}

pub async fn list_crds(state: &State) -> Vec<Value> {
    let Some(ri) = state
        .registry
        .lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    else {
        return Vec::new();
    };
    list(state, &ri).await.into_iter().map(|(o, _)| o).collect()
}

pub async fn reload_crds(state: &State) {
    let crds = list_crds(state).await;
    state.registry.set_crds(&crds);
}

/// Delete every custom object of a deleted CRD.
pub fn spawn_crd_cleanup(state: Arc<State>, crd: Value) {
    tokio::spawn(async move {
        let Some(group) = crd["spec"]["group"].as_str() else {
            return;
        };
        let Some(plural) = crd["spec"]["names"]["plural"].as_str() else {
            return;
        };
        // The CRD is gone from the registry already; rebuild its storage prefix directly.
        let mut established = crd.clone();
        established["status"]["conditions"] = json!([{"type": "Established", "status": "True"}]);
        established["metadata"]
            .as_object_mut()
            .map(|m| m.remove("deletionTimestamp"));
        let Some(v) = registry::versions_of(&established).into_iter().next() else {
            return;
        };
        debug_assert_eq!(
            (v.info.group.as_str(), v.info.plural.as_str()),
            (group, plural)
        );
        for (obj, rev) in list(&state, &v.info).await {
            let key = storage::key(
                &v.info,
                obj["metadata"]["namespace"].as_str().unwrap_or_default(),
                obj["metadata"]["name"].as_str().unwrap_or_default(),
            );
            let _ = state.store.delete(&key, rev).await;
        }
    });
}
