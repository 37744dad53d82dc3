//! The Namespace strategy: a new namespace starts `Active` with the `kubernetes` finalizer
//! (upstream's `namespaceStrategy.PrepareForCreate`) and the immutable
//! `kubernetes.io/metadata.name` label (upstream's defaulting).

use serde_json::{json, Value};

pub fn prepare_create(obj: &mut Value) {
    obj["status"] = json!({"phase": "Active"});
    obj["spec"]["finalizers"] = json!(["kubernetes"]);
    let name = obj["metadata"]["name"].clone();
    obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
}
