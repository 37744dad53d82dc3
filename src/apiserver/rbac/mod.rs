//! RBAC in the API server: the store watch that keeps `auth::rbac::Rbac` (and through it the
//! authorizer's `rbac` policies) current, the default roles bootstrapped at start, and the
//! bind/escalate checks on RBAC writes.
//!
//! The watch follows node_graph's pattern: list the prefix, reset, then apply watch events;
//! relist after any error. Lives here rather than in `auth` because only the API server may
//! reach the store (tests/layering.rs).

pub mod bootstrap;
pub mod escalation;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::auth::rbac::Rbac;
use crate::store::{Backend, EventKind, RangeRequest};

pub const PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// Follow the store's RBAC objects forever, and recompile on every burst of changes.
pub async fn run(rbac: Arc<Rbac>, store: Arc<dyn Backend>) {
    tokio::spawn(rbac.clone().run());
    loop {
        if let Err(e) = sync(&rbac, &store).await {
            tracing::debug!(error = %e, "RBAC watch ended; relisting");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sync(rbac: &Rbac, store: &Arc<dyn Backend>) -> Result<(), crate::store::Error> {
    let list = store
        .range(RangeRequest {
            prefix: PREFIX.into(),
            ..Default::default()
        })
        .await?;
    let items: Vec<Value> = list
        .items
        .iter()
        .filter_map(|kv| decode(&kv.key, &kv.value))
        .collect();
    rbac.reset(&items);
    let mut events = store.watch(PREFIX, list.revision).await?;
    while let Some(ev) = events.next().await {
        let ev = ev?;
        let Some(v) = decode(&ev.key, &ev.value) else {
            continue;
        };
        match ev.kind {
            EventKind::Delete => rbac.remove(&v),
            _ => rbac.apply(&v),
        }
    }
    Ok(())
}

/// A stored RBAC object, its `kind` taken from the key (what the object says is not trusted
/// to be there).
fn decode(key: &str, value: &[u8]) -> Option<Value> {
    let plural = key.strip_prefix(PREFIX)?.split('/').next()?;
    let kind = match plural {
        "roles" => "Role",
        "clusterroles" => "ClusterRole",
        "rolebindings" => "RoleBinding",
        "clusterrolebindings" => "ClusterRoleBinding",
        _ => return None,
    };
    let mut v: Value = serde_json::from_slice(value).ok()?;
    if !v.is_object() {
        return None;
    }
    v["kind"] = Value::String(kind.into());
    Some(v)
}
