//! Defaulting of custom objects from `default` values in the schema (upstream
//! `apiserver/schema/defaulting`: `PruneNonNullableNullsWithoutDefaults` followed by `Default`).
//!
//! Upstream defaults on *both* paths and so should the caller: on write (the decoded request,
//! using the request version's schema, before pruning and validation) and on read (the object
//! decoded from storage, using the storage version's schema), so objects stored before a
//! default was added still come back defaulted. This function is the same for both.
//!
//! Rules: a declared property that is missing, or `null` while not `nullable`, gets a deep copy
//! of its `default`; `null`s for non-nullable fields without a default are removed first;
//! array items and `additionalProperties` values that are non-nullable `null`s are replaced by
//! the item/value schema's default. Defaults are applied top-down, so a defaulted object is
//! itself defaulted further.

use super::structural::SchemaView;
use super::MAX_DEPTH;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use serde_json::Value;

/// Applies `schema`'s defaults to `obj` (a whole custom object) in place.
pub fn apply_defaults(schema: &JSONSchemaProps, obj: &mut Value) {
    prune_nulls(obj, Some(schema), 0);
    default(obj, schema, 0);
}

fn is_non_nullable_null(x: &Value, s: Option<&JSONSchemaProps>) -> bool {
    x.is_null() && s.is_some_and(|s| !s.is_nullable())
}

fn field_schema<'a>(s: Option<&'a JSONSchemaProps>, k: &str) -> Option<&'a JSONSchemaProps> {
    let s = s?;
    s.property(k).or_else(|| s.additional().flatten())
}

fn prune_nulls(x: &mut Value, s: Option<&JSONSchemaProps>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match x {
        Value::Object(map) => {
            map.retain(|k, v| {
                let fs = field_schema(s, k);
                !(is_non_nullable_null(v, fs) && fs.is_some_and(|f| f.default.is_none()))
            });
            for (k, v) in map.iter_mut() {
                prune_nulls(v, field_schema(s, k), depth + 1);
            }
        }
        Value::Array(items) => {
            let item_schema = s.and_then(|s| s.items_schema());
            for v in items {
                prune_nulls(v, item_schema, depth + 1);
            }
        }
        _ => {}
    }
}

fn default(x: &mut Value, s: &JSONSchemaProps, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match x {
        Value::Object(map) => {
            for (k, prop) in s.properties.iter().flatten() {
                let Some(d) = &prop.default else { continue };
                let missing_or_null = map
                    .get(k)
                    .is_none_or(|v| is_non_nullable_null(v, Some(prop)));
                if missing_or_null {
                    map.insert(k.clone(), d.0.clone());
                }
            }
            for (k, v) in map.iter_mut() {
                if let Some(prop) = s.property(k) {
                    default(v, prop, depth + 1);
                } else if let Some(Some(a)) = s.additional() {
                    if let (true, Some(d)) = (is_non_nullable_null(v, Some(a)), &a.default) {
                        *v = d.0.clone();
                    }
                    default(v, a, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            let Some(item_schema) = s.items_schema() else {
                return;
            };
            for v in items {
                if let (true, Some(d)) = (
                    is_non_nullable_null(v, Some(item_schema)),
                    &item_schema.default,
                ) {
                    *v = d.0.clone();
                }
                default(v, item_schema, depth + 1);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaulting() {
        let s: JSONSchemaProps = serde_json::from_value(json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "default": {},
            "properties": {
                "replicas": {"type": "integer", "default": 1},
                "image": {"type": "string"},
                "nullableWithDefault": {"type": "string", "nullable": true, "default": "d"},
                "strategy": {"type": "object", "default": {"type": "Recreate"}, "properties": {
                    "type": {"type": "string"}, "maxSurge": {"type": "integer", "default": 25}}},
                "ports": {"type": "array", "items": {"type": "object", "default": {"port": 80},
                    "properties": {"port": {"type": "integer"}, "protocol": {"type": "string", "default": "TCP"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string", "default": "x"}}
            }
        }}}))
        .expect("schema decodes");
        let cases: Vec<(&str, Value, Value)> = vec![
            (
                "missing spec is created and defaulted recursively",
                json!({"apiVersion": "a/v1", "kind": "K"}),
                json!({"apiVersion": "a/v1", "kind": "K", "spec": {"replicas": 1, "nullableWithDefault": "d",
                       "strategy": {"type": "Recreate", "maxSurge": 25}}}),
            ),
            (
                "present values win; explicit null on nullable field is kept",
                json!({"spec": {"replicas": 3, "nullableWithDefault": null, "strategy": {"type": "Rolling"}}}),
                json!({"spec": {"replicas": 3, "nullableWithDefault": null, "strategy": {"type": "Rolling", "maxSurge": 25}}}),
            ),
            (
                "non-nullable null: defaulted if it has a default, dropped if not",
                json!({"spec": {"replicas": null, "image": null}}),
                json!({"spec": {"replicas": 1, "nullableWithDefault": "d", "strategy": {"type": "Recreate", "maxSurge": 25}}}),
            ),
            (
                "array items and map values",
                json!({"spec": {"ports": [null, {"port": 8080}], "labels": {"a": null, "b": "y"}}}),
                json!({"spec": {"replicas": 1, "nullableWithDefault": "d", "strategy": {"type": "Recreate", "maxSurge": 25},
                       "ports": [{"port": 80, "protocol": "TCP"}, {"port": 8080, "protocol": "TCP"}],
                       "labels": {"a": "x", "b": "y"}}}),
            ),
        ];
        for (name, mut obj, want) in cases {
            apply_defaults(&s, &mut obj);
            assert_eq!(obj, want, "{name}");
        }
    }

    #[test]
    fn crontab_without_defaults_is_untouched() {
        let s = super::super::fixtures::crontab_schema();
        let mut obj = json!({"spec": {"image": "i"}});
        apply_defaults(&s, &mut obj);
        assert_eq!(obj, json!({"spec": {"image": "i"}}));
    }
}
