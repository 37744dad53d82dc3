//! TypeMeta/ObjectMeta of embedded resources (`x-kubernetes-embedded-resource: true`) and of
//! the object root — upstream `apiserver/schema/objectmeta` (`Validate` and `Coerce`).
//!
//! The schema never describes `apiVersion`, `kind` and `metadata` of a resource: the server owns
//! them. Pruning therefore skips them, and instead [`coerce_metadata`] drops fields `metadata`
//! cannot have (upstream decodes it into `ObjectMeta`, losing unknown fields), while
//! [`validate_embedded`] checks `apiVersion`/`kind` of every embedded resource.
//!
//! Not copied: full `ValidateObjectMeta` of embedded metadata (name format, label syntax, ...)
//! and type coercion of malformed known metadata fields.

use super::field_error::{FieldError, FieldPath};
use super::names::dns1035_label;
use super::structural::SchemaView;
use super::MAX_DEPTH;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use serde_json::Value;

/// Fields a resource carries outside of its schema.
pub(super) const META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// JSON names of `metav1.ObjectMeta`'s fields.
const OBJECT_META_FIELDS: [&str; 15] = [
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Drops unknown top-level fields of `resource["metadata"]`, recording them as
/// `<prefix>.metadata.<field>` (or `metadata.<field>` at the root).
pub(super) fn coerce_metadata(
    resource: &mut serde_json::Map<String, Value>,
    prefix: &str,
    unknown: &mut Vec<String>,
) {
    let Some(Value::Object(meta)) = resource.get_mut("metadata") else {
        return;
    };
    let meta_path = if prefix.is_empty() {
        "metadata".to_string()
    } else {
        format!("{prefix}.metadata")
    };
    meta.retain(|k, _| {
        let known = OBJECT_META_FIELDS.contains(&k.as_str());
        if !known {
            unknown.push(format!("{meta_path}.{k}"));
        }
        known
    });
}

/// Checks `apiVersion` and `kind` of every embedded resource below the root.
pub(super) fn validate_embedded(schema: &JSONSchemaProps, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    walk(&FieldPath::root(), obj, schema, 0, &mut errs);
    errs
}

fn walk(
    path: &FieldPath,
    x: &Value,
    s: &JSONSchemaProps,
    depth: usize,
    errs: &mut Vec<FieldError>,
) {
    if depth > MAX_DEPTH {
        return;
    }
    match x {
        Value::Object(map) => {
            if s.is_embedded() {
                embedded_resource(path, map, errs);
            }
            for (k, v) in map {
                if let Some(p) = s.property(k) {
                    walk(&path.child(k), v, p, depth + 1, errs);
                } else if let Some(Some(a)) = s.additional() {
                    walk(&path.key(k), v, a, depth + 1, errs);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = s.items_schema() {
                for (i, v) in items.iter().enumerate() {
                    walk(&path.index(i), v, item_schema, depth + 1, errs);
                }
            }
        }
        _ => {}
    }
}

fn embedded_resource(
    path: &FieldPath,
    x: &serde_json::Map<String, Value>,
    errs: &mut Vec<FieldError>,
) {
    // Required but not metadata: an embedded resource may be a template without a name.
    for k in ["apiVersion", "kind"] {
        if !x.contains_key(k) {
            errs.push(FieldError::required(&path.child(k), ""));
        }
    }
    if let Some(v) = x.get("apiVersion") {
        let p = path.child("apiVersion");
        match v.as_str() {
            None => errs.push(FieldError::invalid(&p, v.clone(), "must be a string")),
            Some("") => errs.push(FieldError::required(&p, "")),
            Some(gv) if gv.matches('/').count() > 1 => errs.push(FieldError::invalid(
                &p,
                gv,
                format!("unexpected GroupVersion string: {gv}"),
            )),
            Some(_) => {}
        }
    }
    if let Some(v) = x.get("kind") {
        let p = path.child("kind");
        match v.as_str() {
            None => errs.push(FieldError::invalid(&p, v.clone(), "must be a string")),
            Some("") => errs.push(FieldError::required(&p, "")),
            Some(kind) => {
                let e = dns1035_label(&kind.to_lowercase());
                if !e.is_empty() {
                    errs.push(FieldError::invalid(
                        &p,
                        kind,
                        format!(
                            "may have mixed case, but should otherwise match: {}",
                            e.join(",")
                        ),
                    ));
                }
            }
        }
    }
    if let Some(meta) = x.get("metadata") {
        if !meta.is_object() {
            errs.push(FieldError::invalid(
                &path.child("metadata"),
                meta.clone(),
                "must be an object",
            ));
        }
    }
}
