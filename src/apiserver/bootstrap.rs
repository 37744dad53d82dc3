//! Start-up work before the API is served: the namespaces every cluster has (`default`,
//! `kube-system`, `kube-public`, `kube-node-lease`) and the custom resources of stored CRDs.

use std::sync::Arc;

use serde_json::json;

use super::{gc, storage, State};

pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

pub async fn run(state: &Arc<State>) -> Result<(), crate::store::Error> {
    let Some(ri) = state.registry.lookup("", "v1", "namespaces") else {
        return Ok(());
    };
    for ns in SYSTEM_NAMESPACES {
        let key = storage::key(&ri, "", ns);
        if state.store.get(&key, None).await?.is_some() {
            continue;
        }
        let t = jiff::Timestamp::now();
        let obj = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": jiff::Timestamp::from_second(t.as_second()).unwrap_or(t).to_string(),
                "labels": {"kubernetes.io/metadata.name": ns},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        let bytes = serde_json::to_vec(&obj).unwrap_or_default();
        match state.store.create(&key, bytes.into()).await {
            Ok(_) | Err(crate::store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    gc::reload_crds(state).await;
    Ok(())
}
