//! Pruning of unknown fields from a custom object (upstream `apiserver/schema/pruning`, plus
//! the `metadata` part of `apiserver/schema/objectmeta.Coerce`).
//!
//! Rules, as upstream:
//! * a field not declared in `properties` of an object without `additionalProperties` is
//!   removed, unless the object has `x-kubernetes-preserve-unknown-fields: true`, in which case
//!   unknown fields are kept but declared ones are still pruned recursively;
//! * below a field without any schema (e.g. `additionalProperties: true`), objects are emptied;
//! * `apiVersion`, `kind` and `metadata` of the root and of every
//!   `x-kubernetes-embedded-resource` are never pruned by the schema; instead unknown fields of
//!   `metadata` itself are dropped, since the server decodes it into `ObjectMeta`.
//!
//! Every removed field is recorded as a path (`spec.foo`, `spec.items[0].bar`,
//! `metadata.foo`), sorted, so the caller can implement `fieldValidation=Strict` (fail with
//! [`unknown_field_messages`]) or `Warn` (send them as warnings) like upstream.

use super::embedded::{coerce_metadata, META_FIELDS};
use super::structural::SchemaView;
use super::MAX_DEPTH;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use serde_json::Value;

/// Removes from `obj` (a whole custom object) every field `schema` does not declare, and appends
/// the removed fields' paths to `unknown` (sorted and deduplicated after this call).
pub fn prune(schema: &JSONSchemaProps, obj: &mut Value, unknown: &mut Vec<String>) {
    unknown.extend(prune_at(schema, obj, true));
    unknown.sort();
    unknown.dedup();
}

/// Prunes a value that is a resource root (`is_resource_root`) or any other value, e.g. a
/// `default` in a CRD schema, returning the removed paths.
pub(super) fn prune_at(
    schema: &JSONSchemaProps,
    v: &mut Value,
    is_resource_root: bool,
) -> Vec<String> {
    let mut path = String::new();
    let mut found = Vec::new();
    prune_value(v, Some(schema), is_resource_root, &mut path, 0, &mut found);
    found
}

/// Upstream's messages for strict field validation: `unknown field "spec.foo"`.
pub fn unknown_field_messages(unknown: &[String]) -> Vec<String> {
    unknown
        .iter()
        .map(|p| format!("unknown field {p:?}"))
        .collect()
}

fn push_key(path: &mut String, k: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(k);
}

fn record(path: &str, k: &str, unknown: &mut Vec<String>) {
    let mut p = path.to_string();
    push_key(&mut p, k);
    unknown.push(p);
}

fn prune_value(
    x: &mut Value,
    s: Option<&JSONSchemaProps>,
    is_root: bool,
    path: &mut String,
    depth: usize,
    unknown: &mut Vec<String>,
) {
    // Deeper objects are rejected by validate_object; nothing beyond here is stored.
    if depth > MAX_DEPTH {
        return;
    }
    if let Some(s) = s.filter(|s| s.preserves_unknown()) {
        skip_prune(x, s, is_root, path, depth, unknown);
        return;
    }
    let len = path.len();
    match x {
        Value::Object(map) => {
            let Some(s) = s else {
                for k in map.keys() {
                    record(path, k, unknown);
                }
                map.clear();
                return;
            };
            let embedded = is_root || s.is_embedded();
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if embedded && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                let child = s.property(&k).map(Some).or_else(|| s.additional());
                match (child, map.get_mut(&k)) {
                    (Some(child), Some(v)) => {
                        push_key(path, &k);
                        prune_value(v, child, false, path, depth + 1, unknown);
                        path.truncate(len);
                    }
                    _ => {
                        record(path, &k, unknown);
                        map.remove(&k);
                    }
                }
            }
            if embedded {
                coerce_metadata(map, path, unknown);
            }
        }
        Value::Array(items) => {
            let item_schema = s.and_then(|s| s.items_schema());
            for (i, v) in items.iter_mut().enumerate() {
                path.push_str(&format!("[{i}]"));
                prune_value(v, item_schema, false, path, depth + 1, unknown);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Under `x-kubernetes-preserve-unknown-fields`: keep unknown fields, prune declared ones.
fn skip_prune(
    x: &mut Value,
    s: &JSONSchemaProps,
    is_root: bool,
    path: &mut String,
    depth: usize,
    unknown: &mut Vec<String>,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let len = path.len();
    match x {
        Value::Object(map) => {
            let embedded = is_root || s.is_embedded();
            for (k, v) in map.iter_mut() {
                if embedded && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                if let Some(child) = s.property(k).map(Some).or_else(|| s.additional()) {
                    push_key(path, k);
                    prune_value(v, child, false, path, depth + 1, unknown);
                    path.truncate(len);
                }
            }
            if embedded {
                coerce_metadata(map, path, unknown);
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = s.items_schema() {
                for (i, v) in items.iter_mut().enumerate() {
                    path.push_str(&format!("[{i}]"));
                    skip_prune(v, item_schema, false, path, depth + 1, unknown);
                    path.truncate(len);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> JSONSchemaProps {
        serde_json::from_value(v).expect("test schema must decode")
    }

    #[test]
    fn pruning() {
        let crontab =
            serde_json::to_value(super::super::fixtures::crontab_schema()).expect("serializes");
        let cases: Vec<(&str, Value, Value, Value, Vec<&str>)> = vec![
            (
                "crontab: unknown spec field and unknown top-level field",
                crontab.clone(),
                json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "x", "labels": {"a": "b"}},
                       "spec": {"image": "i", "someRandomField": 42}, "status": {"x": 1}}),
                json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "x", "labels": {"a": "b"}},
                       "spec": {"image": "i"}}),
                vec!["spec.someRandomField", "status"],
            ),
            (
                "unknown metadata fields are dropped, known kept",
                json!({"type": "object"}),
                json!({"metadata": {"name": "x", "bogus": 1}}),
                json!({"metadata": {"name": "x"}}),
                vec!["metadata.bogus"],
            ),
            (
                "array items are pruned with indices in the path",
                json!({"type": "object", "properties": {"l": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string"}}}}}}),
                json!({"l": [{"a": "x", "b": 1}, {"c": 2}]}),
                json!({"l": [{"a": "x"}, {}]}),
                vec!["l[0].b", "l[1].c"],
            ),
            (
                "preserve-unknown-fields keeps unknown but prunes declared",
                json!({"type": "object", "properties": {"p": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                       "properties": {"known": {"type": "object", "properties": {"a": {"type": "string"}}}}}}}),
                json!({"p": {"free": {"deep": 1}, "known": {"a": "x", "b": "y"}}}),
                json!({"p": {"free": {"deep": 1}, "known": {"a": "x"}}}),
                vec!["p.known.b"],
            ),
            (
                "additionalProperties schema is followed",
                json!({"type": "object", "properties": {"m": {"type": "object", "additionalProperties": {"type": "object", "properties": {"a": {"type": "string"}}}}}}),
                json!({"m": {"k": {"a": "x", "z": 1}}}),
                json!({"m": {"k": {"a": "x"}}}),
                vec!["m.k.z"],
            ),
            (
                "embedded resource keeps its type and object meta",
                json!({"type": "object", "properties": {"t": {"type": "object", "x-kubernetes-embedded-resource": true,
                       "properties": {"spec": {"type": "object"}}}}}),
                json!({"t": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "junk": 1}, "spec": {"a": 1}, "other": 1}}),
                json!({"t": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}}),
                vec!["t.metadata.junk", "t.other", "t.spec.a"],
            ),
        ];
        for (name, s, mut obj, want, want_unknown) in cases {
            let mut unknown = Vec::new();
            prune(&schema(s), &mut obj, &mut unknown);
            assert_eq!(obj, want, "{name}");
            assert_eq!(unknown, want_unknown, "{name}");
        }
    }

    #[test]
    fn strict_messages() {
        assert_eq!(
            unknown_field_messages(&["spec.foo".into()]),
            vec![r#"unknown field "spec.foo""#.to_string()]
        );
    }

    #[test]
    fn hostile_depth_does_not_overflow() {
        let mut obj = json!({});
        for _ in 0..(MAX_DEPTH * 3) {
            obj = json!({"a": obj});
        }
        let s = schema(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
        let mut unknown = Vec::new();
        let before = obj.clone();
        prune(&s, &mut obj, &mut unknown);
        assert_eq!(obj, before);
        assert!(unknown.is_empty());
    }
}
