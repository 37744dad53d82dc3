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
//!   [`MAX_DEPTH`] (stored objects: [`MAX_OBJECT_DEPTH`]) are refused
//!   before any recursive walk, so a hostile body cannot exhaust the stack;
//! * results are bounded too, not only inputs: a merge, strategic merge or
//!   apply result is never deeper than its inputs, and JSON patch checks
//!   every operation before it runs (see [`json_patch`]), so no value deeper
//!   than the limit is ever built (and none is ever dropped recursively);
//! * every list merge indexes items by their key (hash maps), so merging
//!   lists is linear in their length, never quadratic;
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
pub use self::json_patch::{json_patch, MAX_COPY_BYTES, MAX_OPERATIONS};
pub use self::managed_fields::record_update;
pub use self::merge_patch::merge_patch;
pub use self::strategic::strategic_merge_patch;

use serde_json::Value;

/// Deepest stored object (`storage::encode` refuses deeper; patches refuse to produce it).
/// Requests are held to 100 levels; managedFields can add a few more (a field set is as deep
/// as the fields it names, four levels down). serde_json refuses to parse past 128, so
/// anything stored beyond that could never be read again.
pub const MAX_OBJECT_DEPTH: usize = 120;

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

/// What [`measure`] may find before it gives up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub depth: usize,
    pub bytes: usize,
    pub nodes: usize,
}

impl Limits {
    /// Only a depth limit.
    pub fn depth(depth: usize) -> Self {
        Limits {
            depth,
            bytes: usize::MAX,
            nodes: usize::MAX,
        }
    }
}

/// The outcome of [`measure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Measure {
    /// Within every limit: nesting depth (a scalar is 0, a container one more than its
    /// deepest child), approximate JSON size in bytes, and the number of values visited.
    Fits {
        depth: usize,
        bytes: usize,
        nodes: usize,
    },
    TooDeep,
    TooBig,
    TooMany,
}

/// Measures a value without recursion, stopping as soon as a limit is passed, so its cost is
/// bounded by the limits, not by the value.
pub(crate) fn measure(value: &Value, limits: Limits) -> Measure {
    let (mut depth, mut bytes, mut nodes) = (0usize, 0usize, 0usize);
    let mut stack: Vec<(&Value, usize)> = vec![(value, 1)];
    while let Some((v, level)) = stack.pop() {
        nodes += 1;
        if nodes > limits.nodes {
            return Measure::TooMany;
        }
        match v {
            Value::Array(items) => {
                if level > limits.depth {
                    return Measure::TooDeep;
                }
                depth = depth.max(level);
                bytes = bytes.saturating_add(2 + items.len());
                stack.extend(items.iter().map(|c| (c, level + 1)));
            }
            Value::Object(map) => {
                if level > limits.depth {
                    return Measure::TooDeep;
                }
                depth = depth.max(level);
                bytes = bytes.saturating_add(2);
                for (k, c) in map {
                    bytes = bytes.saturating_add(k.len() + 4);
                    stack.push((c, level + 1));
                }
            }
            Value::String(s) => bytes = bytes.saturating_add(s.len() + 2),
            Value::Number(n) => bytes = bytes.saturating_add(number_len(n)),
            Value::Bool(_) | Value::Null => bytes = bytes.saturating_add(5),
        }
        if bytes > limits.bytes {
            return Measure::TooBig;
        }
    }
    Measure::Fits {
        depth,
        bytes,
        nodes,
    }
}

/// Length of a number's JSON text, without formatting it (floats are estimated).
fn number_len(n: &serde_json::Number) -> usize {
    match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => u.checked_ilog10().unwrap_or(0) as usize + 1,
        (None, Some(i)) => i.unsigned_abs().checked_ilog10().unwrap_or(0) as usize + 2,
        _ => 24,
    }
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
    fn measure_counts_depth_size_and_stops_early() {
        assert_eq!(
            measure(&json!({"ab": [1, "x"]}), Limits::depth(5)),
            Measure::Fits {
                depth: 2,
                bytes: 2 + 6 + 4 + 1 + 3,
                nodes: 4
            }
        );
        assert_eq!(measure(&nested(10), Limits::depth(9)), Measure::TooDeep);
        let big = json!(["x".repeat(100)]);
        let limits = Limits {
            depth: 10,
            bytes: 50,
            nodes: usize::MAX,
        };
        assert_eq!(measure(&big, limits), Measure::TooBig);
        let limits = Limits {
            depth: 10,
            bytes: usize::MAX,
            nodes: 2,
        };
        assert_eq!(measure(&json!([1, 2, 3]), limits), Measure::TooMany);
    }

    #[test]
    fn api_version_split() {
        assert_eq!(split_api_version("v1"), ("", "v1"));
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
    }
}
