//! Two mutating pod admission plugins of upstream's default chain:
//!
//! - **Priority**: `spec.priorityClassName` is resolved to `spec.priority` and
//!   `spec.preemptionPolicy` from the PriorityClass (the `globalDefault` class, or 0, when no
//!   name is given); an unknown class is 403 `no PriorityClass with name X was found`, and a
//!   `spec.priority` that disagrees with the class is 403, with upstream's texts.
//! - **DefaultTolerationSeconds**: pods that do not tolerate `node.kubernetes.io/not-ready` /
//!   `unreachable` NoExecute get upstream's 300 s tolerations, so taint-based eviction waits
//!   five minutes for them.
//!
//! PriorityClasses are read from a store-fed cache ([`Classes`]), as upstream's plugin reads its
//! lister; before the first list the store is read. The two system classes are created at
//! start by `apiserver::startup`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use serde_json::{json, Value};

use super::{forbidden, get, list, name_of, Ctx};
use crate::apiserver::followers::follow::Follower;
use crate::apiserver::status::ApiResult;

pub const PRIORITY_CLASSES: &str = crate::apiserver::storage::Builtin::PriorityClasses.prefix();
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// The two classes every cluster has (upstream's `SystemPriorityClasses`).
pub const SYSTEM_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

#[derive(Debug, Clone, PartialEq)]
struct Class {
    value: i64,
    policy: Option<String>,
    global_default: bool,
}

fn class_of(obj: &Value) -> Option<(String, Class)> {
    Some((
        obj["metadata"]["name"].as_str()?.to_string(),
        Class {
            value: obj["value"].as_i64()?,
            policy: obj["preemptionPolicy"].as_str().map(str::to_string),
            global_default: obj["globalDefault"].as_bool().unwrap_or(false),
        },
    ))
}

/// PriorityClasses by name, followed from the store.
#[derive(Default)]
pub struct Classes {
    by_name: RwLock<HashMap<String, Class>>,
    synced: AtomicBool,
}

impl Follower for Classes {
    fn reset(&self, items: Vec<(String, Value)>) {
        let fresh = items.iter().filter_map(|(_, o)| class_of(o)).collect();
        if let Ok(mut m) = self.by_name.write() {
            *m = fresh;
        }
        self.synced.store(true, Ordering::Release);
    }

    fn apply(&self, _key: &str, obj: &Value) {
        if let (Some((n, c)), Ok(mut m)) = (class_of(obj), self.by_name.write()) {
            m.insert(n, c);
        }
    }

    fn remove(&self, key: &str, _obj: &Value) {
        if let (Some(n), Ok(mut m)) = (key.strip_prefix(PRIORITY_CLASSES), self.by_name.write()) {
            m.remove(n);
        }
    }
}

impl Classes {
    fn snapshot(&self) -> Option<HashMap<String, Class>> {
        if !self.synced.load(Ordering::Acquire) {
            return None;
        }
        self.by_name.read().ok().map(|m| m.clone())
    }
}

async fn classes(ctx: &Ctx) -> ApiResult<HashMap<String, Class>> {
    if let Some(m) = ctx.state.admission_caches.priority_classes.snapshot() {
        return Ok(m);
    }
    Ok(list(&ctx.state, PRIORITY_CLASSES.to_string())
        .await?
        .iter()
        .filter_map(class_of)
        .collect())
}

/// Upstream's Priority plugin on pod create.
pub async fn mutate(ctx: &Ctx, obj: &mut Value) -> ApiResult<()> {
    let pod_name = name_of(obj);
    let requested = obj["spec"]["priorityClassName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let all = classes(ctx).await?;
    let chosen = if requested.is_empty() {
        // The global default with the lowest value, as upstream.
        all.iter()
            .filter(|(_, c)| c.global_default)
            .min_by_key(|(_, c)| c.value)
            .map(|(n, c)| (n.clone(), c.clone()))
    } else {
        let found = match all.get(&requested) {
            Some(c) => Some(c.clone()),
            // Created a moment ago and not in the cache yet: ask the store.
            None => get(&ctx.state, &format!("{PRIORITY_CLASSES}{requested}"))
                .await?
                .as_ref()
                .and_then(class_of)
                .map(|(_, c)| c),
        };
        match found {
            Some(c) => Some((requested.clone(), c)),
            None => {
                return Err(forbidden(
                    ctx,
                    &pod_name,
                    &format!("no PriorityClass with name {requested} was found"),
                ))
            }
        }
    };
    let (value, policy) = match &chosen {
        Some((_, c)) => (
            c.value,
            c.policy
                .clone()
                .unwrap_or_else(|| "PreemptLowerPriority".into()),
        ),
        None => (0, "PreemptLowerPriority".into()),
    };
    if let Some(p) = obj["spec"]["priority"].as_i64() {
        if p != value {
            return Err(forbidden(
                ctx,
                &pod_name,
                &format!("the integer value of priority ({p}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"),
            ));
        }
    }
    if let Some(p) = obj["spec"]["preemptionPolicy"].as_str() {
        if p != policy {
            return Err(forbidden(
                ctx,
                &pod_name,
                &format!("the string value of PreemptionPolicy ({p}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"),
            ));
        }
    }
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    spec.insert("priority".into(), json!(value));
    spec.insert("preemptionPolicy".into(), json!(policy));
    if let Some((name, _)) = chosen {
        spec.insert("priorityClassName".into(), json!(name));
    }
    Ok(())
}

/// Does some toleration already cover `key` with effect NoExecute?
fn tolerated(tolerations: &[Value], key: &str) -> bool {
    tolerations.iter().any(|t| {
        let effect = t["effect"].as_str().unwrap_or_default();
        let tkey = t["key"].as_str().unwrap_or_default();
        let op = t["operator"].as_str().unwrap_or("Equal");
        (effect.is_empty() || effect == "NoExecute")
            && (tkey == key || (tkey.is_empty() && op == "Exists"))
    })
}

/// Upstream's DefaultTolerationSeconds plugin on pod create.
pub fn default_tolerations(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let mut tolerations = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let before = tolerations.len();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        if !tolerated(&tolerations, key) {
            tolerations.push(json!({
                "key": key, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
            }));
        }
    }
    if tolerations.len() != before {
        spec.insert("tolerations".into(), Value::Array(tolerations));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tolerations_added_once() {
        let mut pod = json!({"spec": {"containers": []}});
        default_tolerations(&mut pod);
        let t = pod["spec"]["tolerations"].as_array().unwrap().clone();
        assert_eq!(t.len(), 2);
        assert!(t.iter().all(|t| t["tolerationSeconds"] == 300));
        default_tolerations(&mut pod);
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 2);
        // A pod that tolerates everything gets nothing added.
        let mut all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_tolerations(&mut all);
        assert_eq!(all["spec"]["tolerations"].as_array().unwrap().len(), 1);
        // Its own unreachable toleration is kept as is; not-ready is added.
        let mut own = json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}]}});
        default_tolerations(&mut own);
        let t = own["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["tolerationSeconds"], 2);
    }
}
