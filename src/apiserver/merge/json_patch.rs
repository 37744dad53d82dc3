//! JSON patch (RFC 6902, `application/json-patch+json`).
//!
//! The operations themselves are the `json-patch` crate's; this file adds
//! what the API server needs around them: decoding errors become
//! [`PatchError::Malformed`] (400, upstream's `DecodePatch` failure),
//! application errors become [`PatchError::Unapplicable`] (422, as upstream
//! answers a failed `Apply`), the nesting limit is enforced, and a patch that
//! turns the object into a non-object is refused.
//!
//! Invariant: the input document is never modified; on error nothing of the
//! partial result escapes.

use serde_json::Value;

use super::{too_deep, PatchError, MAX_DEPTH};

/// Applies a JSON patch body to `doc`.
pub fn json_patch(doc: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let raw: Value = serde_json::from_slice(patch)
        .map_err(|e| PatchError::Malformed(format!("the body is not JSON: {e}")))?;
    if too_deep(&raw, MAX_DEPTH) || too_deep(doc, MAX_DEPTH) {
        return Err(PatchError::TooDeep(MAX_DEPTH));
    }
    if !raw.is_array() {
        return Err(PatchError::Malformed(
            "a JSON patch must be a list of operations".into(),
        ));
    }
    let ops: json_patch::Patch =
        serde_json::from_value(raw).map_err(|e| PatchError::Malformed(format!("{e}")))?;
    let mut out = doc.clone();
    // `patch_unsafe` leaves a half-applied document on error, which is fine
    // on our private copy, and unlike `patch` has no internal panic path.
    json_patch::patch_unsafe(&mut out, &ops).map_err(|e| {
        let op = ops.0.get(e.operation).map(op_name).unwrap_or("?");
        PatchError::Unapplicable(format!(
            "operation {} ({op} {:?}): {}",
            e.operation,
            e.path.as_str(),
            e.kind
        ))
    })?;
    if !out.is_object() {
        return Err(PatchError::NotAnObject(kind_name(&out)));
    }
    Ok(out)
}

fn op_name(op: &json_patch::PatchOperation) -> &'static str {
    use json_patch::PatchOperation::*;
    match op {
        Add(_) => "add",
        Remove(_) => "remove",
        Replace(_) => "replace",
        Move(_) => "move",
        Copy(_) => "copy",
        Test(_) => "test",
    }
}

pub(crate) fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"replicas": 1, "list": [1, 2]}})
    }

    #[test]
    fn operations_apply() {
        let patch = br#"[
            {"op": "test", "path": "/spec/replicas", "value": 1},
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/metadata/labels/y", "value": "2"},
            {"op": "remove", "path": "/metadata/labels/x"},
            {"op": "add", "path": "/spec/list/-", "value": 3},
            {"op": "copy", "from": "/metadata/name", "path": "/spec/name"},
            {"op": "move", "from": "/spec/name", "path": "/spec/moved"}
        ]"#;
        let out = json_patch(&doc(), patch).unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"name": "a", "labels": {"y": "2"}},
                   "spec": {"replicas": 3, "list": [1, 2, 3], "moved": "a"}})
        );
    }

    #[test]
    fn errors_are_classified() {
        type Check = fn(&PatchError) -> bool;
        let cases: &[(&[u8], Check)] = &[
            (b"not json", |e| matches!(e, PatchError::Malformed(_))),
            (br#"{"op": "add"}"#, |e| {
                matches!(e, PatchError::Malformed(_))
            }),
            (br#"[{"op": "frobnicate", "path": "/a"}]"#, |e| {
                matches!(e, PatchError::Malformed(_))
            }),
            (
                br#"[{"op": "test", "path": "/spec/replicas", "value": 2}]"#,
                |e| matches!(e, PatchError::Unapplicable(m) if m.contains("test") && m.contains("/spec/replicas")),
            ),
            (br#"[{"op": "remove", "path": "/spec/missing"}]"#, |e| {
                matches!(e, PatchError::Unapplicable(_))
            }),
            (
                br#"[{"op": "add", "path": "/no/parent", "value": 1}]"#,
                |e| matches!(e, PatchError::Unapplicable(_)),
            ),
            (br#"[{"op": "replace", "path": "", "value": [1]}]"#, |e| {
                matches!(e, PatchError::NotAnObject(_))
            }),
        ];
        for (patch, check) in cases {
            let err = json_patch(&doc(), patch).unwrap_err();
            assert!(check(&err), "{}: {err:?}", String::from_utf8_lossy(patch));
        }
    }

    #[test]
    fn failed_patch_leaves_input_untouched() {
        let d = doc();
        let patch = br#"[{"op": "replace", "path": "/spec/replicas", "value": 9},
                         {"op": "test", "path": "/spec/replicas", "value": 1}]"#;
        assert!(json_patch(&d, patch).is_err());
        assert_eq!(d, doc());
    }

    #[test]
    fn deep_patch_is_refused() {
        let mut v = json!(1);
        for _ in 0..(MAX_DEPTH + 5) {
            v = json!([v]);
        }
        let patch = json!([{"op": "add", "path": "/spec/deep", "value": v}]);
        let bytes = serde_json::to_vec(&patch).unwrap();
        assert_eq!(
            json_patch(&doc(), &bytes),
            Err(PatchError::TooDeep(MAX_DEPTH))
        );
    }
}
