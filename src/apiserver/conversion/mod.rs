//! Built-in resources served under more than one group/version from one stored form, as
//! upstream's storage versions: the object is stored once, in its storage version, and each
//! served version is a view converted on every read and converted back on every write.
//!
//! - `events.k8s.io/v1` Events are stored as core `v1` Events under the core key space
//!   (upstream stores both at `/registry/events/`), so an Event written through either API is
//!   read, listed and watched through the other ([`event`]).
//! - `autoscaling/v1` HorizontalPodAutoscalers are stored as `autoscaling/v2` (the keys of
//!   one group never depend on the version), `targetCPUUtilizationPercentage` ↔ a `Resource`
//!   cpu `Utilization` metric and everything v1 cannot say kept in upstream's
//!   `autoscaling.alpha.kubernetes.io/*` annotations ([`hpa`]).
//!
//! Invariants: conversions are pure functions of the object (no I/O, never panic on any
//! input: an odd shape is carried over untouched); converting a stored object to a served
//! version and back gives the stored object again for every field both versions share.

pub mod event;
pub mod hpa;

use serde_json::Value;

/// The group whose key space stores the objects of `(group, plural)`, when it is not the
/// resource's own.
pub fn storage_group(group: &str, plural: &str) -> Option<&'static str> {
    match (group, plural) {
        ("events.k8s.io", "events") => Some(""),
        _ => None,
    }
}

/// Whether objects served at `(group, version, kind)` are stored in another version.
pub fn converted(group: &str, version: &str, kind: &str) -> bool {
    matches!(
        (group, version, kind),
        ("events.k8s.io", "v1", "Event") | ("autoscaling", "v1", "HorizontalPodAutoscaler")
    )
}

/// A stored object as served at `(group, version, kind)` (objects not stored in another
/// version come back unchanged).
pub fn to_served(obj: Value, group: &str, version: &str, kind: &str) -> Value {
    match (group, version, kind) {
        ("events.k8s.io", "v1", "Event") => event::core_to_events(obj),
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => hpa::v2_to_v1(obj),
        _ => obj,
    }
}

/// An object in its served version converted to its storage version, judged by its own
/// `apiVersion`/`kind` (every object reaching the store carries the version it was served as).
pub fn to_storage(obj: &Value) -> Option<Value> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str)?;
    let kind = obj.get("kind").and_then(Value::as_str)?;
    match (api_version, kind) {
        ("events.k8s.io/v1", "Event") => Some(event::events_to_core(obj.clone())),
        ("autoscaling/v1", "HorizontalPodAutoscaler") => Some(hpa::v1_to_v2(obj.clone())),
        _ => None,
    }
}

/// Move `from` to `to` in a JSON object (a missing or null `from` moves nothing).
fn rename(obj: &mut serde_json::Map<String, Value>, from: &str, to: &str) {
    if let Some(v) = obj.remove(from) {
        if !v.is_null() {
            obj.insert(to.to_string(), v);
        }
    }
}
