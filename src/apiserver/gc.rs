//! Interim in-server controllers for what deletion semantics need before the controller manager
//! exists: garbage collection of dependents (ownerReferences; Background, Foreground and Orphan
//! propagation via the `foregroundDeletion` / `orphan` finalizers), the namespace finalizer
//! (delete everything in a Terminating namespace, then the namespace), and removal of custom
//! objects when their CRD goes. Upstream runs these as controllers; they move to
//! `src/controllers/` (talking to the API) when it lands, and this module goes away.
//!
//! They act on the store directly with compare-and-swap writes, retrying on conflicts, and never
//! block the request that triggered them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{registry, storage, State};
use crate::api::ResourceInfo;
use crate::store::RangeRequest;

/// One entry per stored resource (custom resources have one per served version).
fn stored_resources(state: &State) -> Vec<ResourceInfo> {
    let mut out: Vec<ResourceInfo> = Vec::new();
    for r in state.registry.all() {
        if !out
            .iter()
            .any(|o| o.group == r.group && o.plural == r.plural)
        {
            out.push(r);
        }
    }
    out
}

async fn list(state: &State, ri: &ResourceInfo, ns: Option<&str>) -> Vec<(Value, u64)> {
    match state
        .store
        .range(RangeRequest {
            prefix: storage::prefix(ri, ns),
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
            tracing::warn!(error = %e, resource = %ri.plural, "gc: list failed");
            Vec::new()
        }
    }
}

fn key_of(ri: &ResourceInfo, obj: &Value) -> String {
    storage::key(
        ri,
        obj["metadata"]["namespace"].as_str().unwrap_or_default(),
        obj["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

pub async fn list_crds(state: &State) -> Vec<Value> {
    let Some(ri) = state
        .registry
        .lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    else {
        return Vec::new();
    };
    list(state, &ri, None)
        .await
        .into_iter()
        .map(|(o, _)| o)
        .collect()
}

pub async fn reload_crds(state: &State) {
    let crds = list_crds(state).await;
    state.registry.set_crds(&crds);
}

fn owned_by(obj: &Value, uid: &str) -> bool {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
}

/// Dependents of `owner` as (resource, object, revision).
async fn dependents(
    state: &State,
    owner_ri: &ResourceInfo,
    owner: &Value,
) -> Vec<(ResourceInfo, Value, u64)> {
    let Some(uid) = owner["metadata"]["uid"].as_str() else {
        return Vec::new();
    };
    let ns = owner["metadata"]["namespace"]
        .as_str()
        .filter(|_| owner_ri.namespaced);
    let mut out = Vec::new();
    for ri in stored_resources(state) {
        if ns.is_some() && !ri.namespaced {
            continue;
        }
        for (obj, rev) in list(state, &ri, ns).await {
            if owned_by(&obj, uid) {
                out.push((ri.clone(), obj, rev));
            }
        }
    }
    out
}

/// Delete one object the way a controller would: objects with finalizers get marked.
async fn delete_object(state: &Arc<State>, ri: &ResourceInfo, mut obj: Value, rev: u64) {
    let key = key_of(ri, &obj);
    let has_finalizers = obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    let result = if has_finalizers {
        if obj["metadata"]["deletionTimestamp"].is_string() {
            return;
        }
        obj["metadata"]["deletionTimestamp"] = json!(super::now_rfc3339());
        match storage::encode(&obj) {
            Ok(bytes) => state.store.update(&key, bytes, rev).await.map(|_| ()),
            Err(_) => return,
        }
    } else {
        state.store.delete(&key, rev).await.map(|_| ())
    };
    match result {
        Ok(()) => {
            // Its own dependents follow (cascading background deletion).
            if !has_finalizers {
                spawn_dependents(state.clone(), ri.clone(), obj);
            }
        }
        Err(e) => tracing::debug!(error = %e, key, "gc: delete skipped"),
    }
}

/// Background cascading deletion: delete everything `owner` owned.
pub fn spawn_dependents(state: Arc<State>, owner_ri: ResourceInfo, owner: Value) {
    tokio::spawn(async move {
        for (ri, obj, rev) in dependents(&state, &owner_ri, &owner).await {
            Box::pin(delete_object(&state, &ri, obj, rev)).await;
        }
    });
}

/// Remove `finalizer` from the object at `key`, deleting it if none remain.
async fn drop_finalizer(state: &State, ri: &ResourceInfo, key: &str, finalizer: &str) {
    for _ in 0..10 {
        let Ok(Some(kv)) = state.store.get(key, None).await else {
            return;
        };
        let Ok(mut obj) = storage::decode(&kv, ri) else {
            return;
        };
        let remaining: Vec<Value> = obj["metadata"]["finalizers"]
            .as_array()
            .map(|a| a.iter().filter(|f| *f != finalizer).cloned().collect())
            .unwrap_or_default();
        let result = if remaining.is_empty() && obj["metadata"]["deletionTimestamp"].is_string() {
            state.store.delete(key, kv.mod_revision).await.map(|_| ())
        } else {
            obj["metadata"]["finalizers"] = json!(remaining);
            match storage::encode(&obj) {
                Ok(b) => state
                    .store
                    .update(key, b, kv.mod_revision)
                    .await
                    .map(|_| ()),
                Err(_) => return,
            }
        };
        match result {
            Ok(()) => return,
            Err(crate::store::Error::Conflict { .. }) => continue,
            Err(e) => {
                tracing::warn!(error = %e, key, "gc: cannot remove finalizer");
                return;
            }
        }
    }
}

/// Handle the `orphan` and `foregroundDeletion` finalizers of an object being deleted.
pub fn spawn_finalize(state: Arc<State>, ri: ResourceInfo, obj: Value) {
    let finalizers: Vec<String> = obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let key = key_of(&ri, &obj);
    if finalizers.iter().any(|f| f == "orphan") {
        let state = state.clone();
        let (ri, obj, key) = (ri.clone(), obj.clone(), key.clone());
        tokio::spawn(async move {
            let uid = obj["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            for (dri, mut dep, rev) in dependents(&state, &ri, &obj).await {
                if let Some(refs) = dep["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"] != uid.as_str());
                }
                if let Ok(bytes) = storage::encode(&dep) {
                    let _ = state.store.update(&key_of(&dri, &dep), bytes, rev).await;
                }
            }
            drop_finalizer(&state, &ri, &key, "orphan").await;
        });
    }
    if finalizers.iter().any(|f| f == "foregroundDeletion") {
        tokio::spawn(async move {
            for _ in 0..300 {
                let deps = dependents(&state, &ri, &obj).await;
                if deps.is_empty() {
                    drop_finalizer(&state, &ri, &key, "foregroundDeletion").await;
                    return;
                }
                for (dri, dep, rev) in deps {
                    Box::pin(delete_object(&state, &dri, dep, rev)).await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
}

/// Empty a Terminating namespace, then remove it (upstream's namespace controller).
pub fn spawn_namespace_cleanup(state: Arc<State>, ns_obj: Value) {
    tokio::spawn(async move {
        let Some(ns) = ns_obj["metadata"]["name"].as_str().map(str::to_string) else {
            return;
        };
        for _ in 0..300 {
            let mut remaining = 0;
            for ri in stored_resources(&state)
                .into_iter()
                .filter(|r| r.namespaced)
            {
                for (obj, rev) in list(&state, &ri, Some(&ns)).await {
                    remaining += 1;
                    // Finalizers of the contents are honoured; everything else goes now.
                    let has_finalizers = obj["metadata"]["finalizers"]
                        .as_array()
                        .is_some_and(|f| !f.is_empty());
                    if !has_finalizers {
                        if state.store.delete(&key_of(&ri, &obj), rev).await.is_ok()
                            && ri.group.is_empty()
                            && ri.kind == "Service"
                        {
                            super::services::release(&state, &obj).await;
                        }
                    } else {
                        Box::pin(delete_object(&state, &ri, obj, rev)).await;
                    }
                }
            }
            if remaining == 0 {
                if let Some(ri) = state.registry.lookup("", "v1", "namespaces") {
                    drop_finalizer(&state, &ri, &storage::key(&ri, "", &ns), "kubernetes").await;
                    // The namespace's own spec.finalizers hold "kubernetes"; clear and delete.
                    if let Ok(Some(kv)) = state.store.get(&storage::key(&ri, "", &ns), None).await {
                        let _ = state.store.delete(&kv.key, kv.mod_revision).await;
                    }
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!(namespace = %ns, "namespace cleanup gave up with objects left");
    });
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
        for (obj, rev) in list(&state, &v.info, None).await {
            let _ = state.store.delete(&key_of(&v.info, &obj), rev).await;
        }
    });
}
