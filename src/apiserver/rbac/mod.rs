//! RBAC in the API server: the store watch that keeps `auth::rbac::Rbac` (and through it the
//! authorizer's `rbac` policies) current, the default roles bootstrapped at start, and the
//! bind/escalate checks on RBAC writes.
//!
//! The watch is a `follow::Follower` (list, reset, apply events, relist after errors). Lives here rather than in `auth` because only the API server may
//! reach the store (tests/layering.rs).

pub mod bootstrap;
pub mod escalation;

use std::sync::Arc;

use serde_json::Value;

use crate::apiserver::followers::follow::{follow, Follower};
use crate::auth::rbac::Rbac;
use crate::store::Backend;

pub const PREFIX: &str = super::storage::RBAC_GROUP;

struct Objects(Arc<Rbac>);

impl Follower for Objects {
    fn reset(&self, items: Vec<(String, Value)>) {
        let items: Vec<Value> = items
            .into_iter()
            .filter_map(|(key, v)| with_kind(&key, v))
            .collect();
        self.0.reset(&items);
    }
    fn apply(&self, key: &str, obj: &Value) {
        if let Some(v) = with_kind(key, obj.clone()) {
            self.0.apply(&v);
        }
    }
    fn remove(&self, key: &str, obj: &Value) {
        if let Some(v) = with_kind(key, obj.clone()) {
            self.0.remove(&v);
        }
    }
}

/// Follow the store's RBAC objects forever, and recompile on every burst of changes.
pub async fn run(rbac: Arc<Rbac>, store: Arc<dyn Backend>) {
    tokio::spawn(rbac.clone().run());
    follow("RBAC", PREFIX, store, Arc::new(Objects(rbac))).await
}

/// A stored RBAC object, its `kind` taken from the key (what the object says is not trusted
/// to be there).
fn with_kind(key: &str, mut v: Value) -> Option<Value> {
    let plural = key.strip_prefix(PREFIX)?.split('/').next()?;
    let kind = match plural {
        "roles" => "Role",
        "clusterroles" => "ClusterRole",
        "rolebindings" => "RoleBinding",
        "clusterrolebindings" => "ClusterRoleBinding",
        _ => return None,
    };
    if !v.is_object() {
        return None;
    }
    v["kind"] = Value::String(kind.into());
    Some(v)
}
