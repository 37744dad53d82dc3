//! Merge semantics of the Kubernetes API: every way a client can change an
//! object other than replacing it outright.
//!
//! | request content type                      | entry point                 | upstream counterpart |
//! |-------------------------------------------|-----------------------------|----------------------|
//! | `application/json-patch+json`             | [`json_patch`]              | `evanphx/json-patch` `DecodePatch` + `Apply` |
//! | `application/merge-patch+json`            | [`merge_patch`]             | `evanphx/json-patch` `MergePatch` |
//! | `application/strategic-merge-patch+json`  | [`strategic_merge_patch`]   | `apimachinery/pkg/util/strategicpatch` |
//! | `application/apply-patch+yaml`            | [`apply`]                   | `apimachinery/pkg/util/managedfields` + structured-merge-diff |
//! | any create / update / non-apply patch     | [`record_update`]           | `managedfields` `FieldManager.UpdateNoErrors` |
//!
//! All functions are pure: they take JSON values (the caller decodes the
//! request body, YAML included) and return the new object; storage,
//! preconditions, defaulting and validation stay with the caller.
//!
//! Invariants shared by every entry point:
//! * no input can make them panic, and documents nested deeper than
//!   [`MAX_DEPTH`] are refused before any recursive walk, so a hostile body
//!   cannot exhaust the stack;
//! * built-in kinds are merged with the type graph generated from
//!   k8s-openapi ([`schema`]); kinds outside it (custom resources) are
//!   treated the way upstream treats a schemaless object: maps merge key by
//!   key and lists are atomic, and strategic merge patch is refused.
//!
//! Errors are [`PatchError`] and [`ApplyError`]; each variant documents the
//! HTTP status the caller should put in its `metav1.Status`.

mod apply;
mod compare;
mod error;
pub mod fieldpath;
mod json_patch;
pub mod managed_fields;
mod merge_patch;
pub mod schema;
mod strategic;

pub use self::apply::apply;
pub use self::error::{ApplyError, Conflict, PatchError};
pub use self::json_patch::json_patch;
pub use self::managed_fields::record_update;
pub use self::merge_patch::merge_patch;
pub use self::strategic::strategic_merge_patch;

use serde_json::Value;

/// Deepest nesting of arrays and objects accepted in a document or a patch.
/// Real Kubernetes objects stay far below this (a pod template is about 12
/// levels deep).
pub const MAX_DEPTH: usize = 100;

/// Whether `value` nests arrays/objects deeper than `max`.  Iterative, so
/// that it is safe to call on documents we have not vetted yet.
pub(crate) fn too_deep(value: &Value, max: usize) -> bool {
    let mut stack: Vec<(&Value, usize)> = vec![(value, 1)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        if depth > max {
            return true;
        }
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    false
}

/// Splits `apiVersion` into (group, version); the core group is "".
pub(crate) fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(depth: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..depth {
            v = json!({ "a": v });
        }
        v
    }

    #[test]
    fn depth_limit_counts_containers() {
        assert!(!too_deep(&json!(1), 1));
        assert!(!too_deep(&nested(3), 3));
        assert!(too_deep(&nested(4), 3));
        assert!(too_deep(&json!([[[[]]]]), 3));
        assert!(!too_deep(&json!([[[]]]), 3));
    }

    #[test]
    fn api_version_split() {
        assert_eq!(split_api_version("v1"), ("", "v1"));
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
    }
}
