//! Uniqueness invariants of `x-kubernetes-list-type: set` and `map` arrays
//! (upstream `apiserver/schema/listtype`).
//!
//! Elements (sets) or key tuples (maps) are compared by their canonical JSON text, which is
//! what upstream does for compound values and also gives Go's typed comparison for scalars
//! (`1` and `1.0` differ, `"1"` and `1` differ). Only the second occurrence of a value is
//! reported, as upstream does.

use super::field_error::{FieldError, FieldPath};
use super::structural::SchemaView;
use super::MAX_DEPTH;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use serde_json::{Map, Value};
use std::collections::HashMap;

pub(super) fn validate_list_sets_and_maps(
    schema: &JSONSchemaProps,
    obj: &Value,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    walk(&FieldPath::root(), schema, obj, 0, &mut errs);
    errs
}

fn walk(
    path: &FieldPath,
    s: &JSONSchemaProps,
    x: &Value,
    depth: usize,
    errs: &mut Vec<FieldError>,
) {
    if depth > MAX_DEPTH {
        return;
    }
    match x {
        Value::Object(map) => {
            if let Some(Some(a)) = s.additional() {
                for (k, v) in map {
                    walk(&path.key(k), a, v, depth + 1, errs);
                }
            }
            for (k, v) in map {
                if let Some(p) = s.property(k) {
                    walk(&path.child(k), p, v, depth + 1, errs);
                }
            }
        }
        Value::Array(items) => {
            match s.x_kubernetes_list_type.as_deref() {
                Some("set") => {
                    for i in second_occurrences(items.iter().map(canonical)) {
                        errs.push(FieldError::duplicate(&path.index(i), items[i].clone()));
                    }
                }
                Some("map") => list_map(path, s, items, errs),
                _ => {}
            }
            if let Some(item_schema) = s.items_schema() {
                for (i, v) in items.iter().enumerate() {
                    walk(&path.index(i), item_schema, v, depth + 1, errs);
                }
            }
        }
        _ => {}
    }
}

fn canonical(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Indices where a value is seen for the second time.
fn second_occurrences(keys: impl Iterator<Item = String>) -> Vec<usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, k) in keys.enumerate() {
        let n = seen.entry(k).or_insert(0);
        *n += 1;
        if *n == 2 {
            out.push(i);
        }
    }
    out
}

fn list_map(path: &FieldPath, s: &JSONSchemaProps, items: &[Value], errs: &mut Vec<FieldError>) {
    if let Some((i, x)) = items
        .iter()
        .enumerate()
        .find(|(_, x)| !x.is_null() && !x.is_object())
    {
        errs.push(FieldError::invalid(
            &path.index(i),
            x.clone(),
            "must be an object for an array of list-type map",
        ));
        return;
    }
    let key_fields: &[String] = s.x_kubernetes_list_map_keys.as_deref().unwrap_or(&[]);
    // The key of an element: the subset of its key fields that are present. A null element or
    // one without any key field has the empty key, so two of them collide, as upstream.
    let keys: Vec<Map<String, Value>> = items
        .iter()
        .map(|x| {
            let mut key = Map::new();
            if let Value::Object(o) = x {
                for f in key_fields {
                    if let Some(v) = o.get(f) {
                        key.insert(f.clone(), v.clone());
                    }
                }
            }
            key
        })
        .collect();
    for i in second_occurrences(keys.iter().map(|k| canonical(&Value::Object(k.clone())))) {
        errs.push(FieldError::duplicate(
            &path.index(i),
            Value::Object(keys[i].clone()),
        ));
    }
}
