//! Schema dialect handling: the neutral form used inside this module, and its
//! rendering into what OpenAPI 2.0 (gnostic) and OpenAPI 3.0 (kube-openapi's
//! `spec3` + kubectl's template walker) parsers accept.
//!
//! Invariants of the neutral form (established by [`sanitize`]):
//! * refs are `#/definitions/<name>` and may carry sibling keys (upstream v2
//!   publishes `{"$ref": ..., "description": ...}`);
//! * no JSON-Schema 2019/2020 constructs: no `$defs`, `$schema`, `$id`,
//!   `const`, `examples`, array-valued `type`, numeric `exclusiveMinimum` /
//!   `exclusiveMaximum`, or boolean sub-schemas. kube-openapi decodes
//!   `exclusiveMinimum` as a bool and fails on a number; gnostic rejects
//!   `type` arrays containing `"null"`.
//!
//! v3 rendering copies upstream's builder3: a `$ref` with siblings becomes
//! `{"allOf": [{"$ref": ...}], <siblings>}` (OpenAPI 3.0 ignores `$ref`
//! siblings), and IntOrString / Quantity become `oneOf` of their two types.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

pub(super) const V2_REF_PREFIX: &str = "#/definitions/";
pub(super) const V3_REF_PREFIX: &str = "#/components/schemas/";

/// Keywords that only OpenAPI 3 (or JSON Schema) understands and that the
/// gnostic v2 model has no field for; dropped when rendering v2.
const V3_ONLY_KEYWORDS: &[&str] = &["nullable", "oneOf", "anyOf", "not"];

/// Keys whose values are maps from names to schemas.
const SCHEMA_MAP_KEYS: &[&str] = &["properties", "patternProperties"];
/// Keys whose values are a schema (or, for `items`, possibly a list).
const SCHEMA_KEYS: &[&str] = &["items", "additionalProperties", "not"];
/// Keys whose values are lists of schemas.
const SCHEMA_LIST_KEYS: &[&str] = &["allOf", "anyOf", "oneOf"];

/// Rewrite a schema in place into the neutral dialect (see module docs).
pub(super) fn sanitize(schema: &mut Value) {
    let Value::Object(obj) = schema else {
        // A boolean schema: `true` accepts anything, which an empty schema
        // says in every dialect; `false` has no OpenAPI 2/3.0 spelling, so it
        // degrades to "anything" rather than breaking the document.
        *schema = json!({});
        return;
    };
    for key in ["$schema", "$id", "$defs", "definitions", "$comment"] {
        obj.remove(key);
    }
    if let Some(value) = obj.remove("const") {
        obj.entry("enum").or_insert_with(|| json!([value]));
    }
    if let Some(Value::Array(mut examples)) = obj.remove("examples") {
        if !examples.is_empty() && !obj.contains_key("example") {
            obj.insert("example".into(), examples.swap_remove(0));
        }
    }
    if let Some(Value::Array(types)) = obj.get("type").cloned() {
        let non_null: Vec<&Value> = types
            .iter()
            .filter(|t| t.as_str() != Some("null"))
            .collect();
        if non_null.len() < types.len() {
            obj.insert("nullable".into(), Value::Bool(true));
        }
        match non_null.as_slice() {
            [single] => {
                obj.insert("type".into(), (*single).clone());
            }
            _ => {
                // Several non-null types have no single-type spelling; leaving
                // the type out is what upstream does for such fields.
                obj.remove("type");
            }
        }
    }
    for (exclusive, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        if let Some(n @ Value::Number(_)) = obj.get(exclusive).cloned() {
            obj.insert(bound.into(), n);
            obj.insert(exclusive.into(), Value::Bool(true));
        }
    }
    for_each_subschema(obj, sanitize);
}

/// Apply `f` to every direct sub-schema of `obj`.
fn for_each_subschema(obj: &mut Map<String, Value>, mut f: impl FnMut(&mut Value)) {
    for key in SCHEMA_MAP_KEYS {
        if let Some(Value::Object(map)) = obj.get_mut(*key) {
            map.values_mut().for_each(&mut f);
        }
    }
    for key in SCHEMA_KEYS {
        match obj.get_mut(*key) {
            // `additionalProperties: true/false` is legal in both dialects.
            Some(Value::Bool(_)) if *key == "additionalProperties" => {}
            Some(Value::Array(list)) if *key == "items" => list.iter_mut().for_each(&mut f),
            Some(v) => f(v),
            None => {}
        }
    }
    for key in SCHEMA_LIST_KEYS {
        if let Some(Value::Array(list)) = obj.get_mut(*key) {
            list.iter_mut().for_each(&mut f);
        }
    }
}

/// Render a neutral schema as OpenAPI 2.0 (gnostic) accepts it.
pub(super) fn to_v2(schema: &Value) -> Value {
    let mut out = schema.clone();
    strip_v3_only(&mut out);
    out
}

fn strip_v3_only(schema: &mut Value) {
    let Value::Object(obj) = schema else { return };
    if obj.get("nullable") == Some(&Value::Bool(true)) {
        // Upstream's CRD v2 conversion drops the type of nullable fields so
        // that client-side validators accept `null`.
        obj.remove("type");
    }
    for key in V3_ONLY_KEYWORDS {
        obj.remove(*key);
    }
    for_each_subschema(obj, strip_v3_only);
}

/// Render a neutral schema as OpenAPI 3.0, with refs into `components`.
pub(super) fn to_v3(name: &str, schema: &Value) -> Value {
    let mut out = schema.clone();
    if let Value::Object(obj) = &mut out {
        match name {
            "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => {
                obj.remove("type");
                obj.insert(
                    "oneOf".into(),
                    json!([{"type": "integer"}, {"type": "string"}]),
                );
            }
            "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
                obj.remove("type");
                obj.insert(
                    "oneOf".into(),
                    json!([{"type": "string"}, {"type": "number"}]),
                );
            }
            _ => {}
        }
    }
    rewrite_v3(&mut out);
    out
}

/// Rewrite refs of an arbitrary fragment (a path item, say) for v3.
pub(super) fn refs_to_v3(fragment: &mut Value) {
    match fragment {
        Value::Object(obj) => {
            if let Some(Value::String(r)) = obj.get_mut("$ref") {
                if let Some(name) = r.strip_prefix(V2_REF_PREFIX) {
                    *r = format!("{V3_REF_PREFIX}{name}");
                }
            }
            obj.values_mut().for_each(refs_to_v3);
        }
        Value::Array(list) => list.iter_mut().for_each(refs_to_v3),
        _ => {}
    }
}

fn rewrite_v3(schema: &mut Value) {
    let Value::Object(obj) = schema else { return };
    if let Some(Value::String(reference)) = obj.remove("$ref") {
        let reference = match reference.strip_prefix(V2_REF_PREFIX) {
            Some(name) => format!("{V3_REF_PREFIX}{name}"),
            None => reference,
        };
        if obj.is_empty() {
            obj.insert("$ref".into(), Value::String(reference));
        } else {
            obj.insert("allOf".into(), json!([{ "$ref": reference }]));
        }
        return;
    }
    for_each_subschema(obj, rewrite_v3);
}

/// Every definition name referenced (with the given prefix) anywhere in
/// `value`.
pub(super) fn collect_refs(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(obj) => {
            if let Some(Value::String(r)) = obj.get("$ref") {
                if let Some(name) = r.strip_prefix(prefix) {
                    out.insert(name.to_owned());
                }
            }
            obj.values().for_each(|v| collect_refs(v, prefix, out));
        }
        Value::Array(list) => list.iter().for_each(|v| collect_refs(v, prefix, out)),
        _ => {}
    }
}

/// The names in `roots` plus every definition they reach through neutral
/// refs. Names missing from `definitions` are dropped rather than reported:
/// a dangling ref is the caller's bug and must not take the document down.
pub(super) fn closure<'a>(
    roots: BTreeSet<String>,
    lookup: impl Fn(&str) -> Option<&'a Value>,
) -> BTreeMap<String, &'a Value> {
    let mut reached = BTreeMap::new();
    let mut pending: Vec<String> = roots.into_iter().collect();
    while let Some(name) = pending.pop() {
        if reached.contains_key(&name) {
            continue;
        }
        let Some(schema) = lookup(&name) else {
            continue;
        };
        let mut refs = BTreeSet::new();
        collect_refs(schema, V2_REF_PREFIX, &mut refs);
        pending.extend(refs.into_iter().filter(|r| !reached.contains_key(r)));
        reached.insert(name, schema);
    }
    reached
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_removes_2020_constructs() {
        let mut s = json!({
            "$schema": "x", "$defs": {},
            "type": "object",
            "properties": {
                "a": {"const": "x"},
                "b": {"type": ["string", "null"]},
                "c": {"type": "integer", "exclusiveMinimum": 3},
                "d": true,
                "e": {"examples": [1, 2]},
            },
        });
        sanitize(&mut s);
        assert_eq!(
            s,
            json!({
                "type": "object",
                "properties": {
                    "a": {"enum": ["x"]},
                    "b": {"type": "string", "nullable": true},
                    "c": {"type": "integer", "minimum": 3, "exclusiveMinimum": true},
                    "d": {},
                    "e": {"example": 1},
                },
            })
        );
    }

    #[test]
    fn v3_wraps_ref_with_siblings() {
        let s = json!({"properties": {
            "m": {"$ref": "#/definitions/X", "description": "d"},
            "n": {"$ref": "#/definitions/Y"},
        }});
        assert_eq!(
            to_v3("Z", &s),
            json!({"properties": {
                "m": {"allOf": [{"$ref": "#/components/schemas/X"}], "description": "d"},
                "n": {"$ref": "#/components/schemas/Y"},
            }})
        );
    }

    #[test]
    fn v2_drops_v3_keywords() {
        let s = json!({"properties": {"a": {"type": "string", "nullable": true, "oneOf": [{}]}}});
        assert_eq!(to_v2(&s), json!({"properties": {"a": {}}}));
    }
}
