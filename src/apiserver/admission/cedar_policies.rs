//! `CedarPolicy` objects (group `policy.rampart.io`): validated on write (422 naming the
//! line, in `admission::validate`) and followed by a store watch that keeps the admission
//! engine's `CedarPolicy/<name>` sources in step (list, then watch; relist on error).
//! Objects that no longer compile (the schema changed) are skipped and logged.

use std::sync::Arc;

use serde_json::Value;

use super::name_of;
use crate::apiserver::followers::follow::{follow, Follower, Tracked};
use crate::auth::admission::Admission;
use crate::store::Backend;

const CEDAR_POLICY_PREFIX: &str = crate::apiserver::storage::Builtin::CedarPolicies.prefix();

/// Load every `CedarPolicy` object into `adm`, and follow changes (list, then watch; relist
/// on error). Objects that no longer compile (the schema changed) are skipped and logged.
struct CedarPolicies(Arc<Admission>);

impl Follower for CedarPolicies {
    fn reset(&self, items: Vec<(String, Value)>) {
        let names: Vec<String> = items.iter().map(|(_, v)| load_one(&self.0, v)).collect();
        for id in self.0.source_names() {
            if let Some(n) = id.strip_prefix("CedarPolicy/") {
                if !names.iter().any(|x| x == n) {
                    self.0.remove_source(&id);
                }
            }
        }
    }
    fn apply(&self, _key: &str, obj: &Value) {
        load_one(&self.0, obj);
    }
    fn remove(&self, _key: &str, obj: &Value) {
        self.0
            .remove_source(&format!("CedarPolicy/{}", name_of(obj)));
    }
}

/// Keep the admission engine's `CedarPolicy/<name>` sources in step with the store.
/// `synced` is set once the first list is loaded.
pub async fn follow_cedar_policies(
    adm: Arc<Admission>,
    store: Arc<dyn Backend>,
    synced: Arc<std::sync::atomic::AtomicBool>,
) {
    let follower = Tracked {
        inner: CedarPolicies(adm),
        synced,
    };
    follow(
        "CedarPolicy",
        CEDAR_POLICY_PREFIX,
        store,
        Arc::new(follower),
    )
    .await
}

fn load_one(adm: &Admission, obj: &Value) -> String {
    let name = name_of(obj);
    let text = obj["spec"]["policy"].as_str().unwrap_or_default();
    match adm.compile_object(&name, text) {
        Ok(p) => adm.set_source(&format!("CedarPolicy/{name}"), p),
        Err(e) => {
            tracing::error!(policy = %name, error = %e, "CedarPolicy does not validate; not loaded");
            adm.remove_source(&format!("CedarPolicy/{name}"));
        }
    }
    name
}
