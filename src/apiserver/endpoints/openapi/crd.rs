//! Definitions for custom resources, built from a CRD version's
//! `openAPIV3Schema` the way upstream's `apiextensions-apiserver`
//! (`pkg/controller/openapi/builder`) publishes them.
//!
//! Copied behaviour:
//! * definition name `<reversed group>.<version>.<Kind>`, e.g. group
//!   `stable.example.com`, version `v1`, kind `CronTab` becomes
//!   `com.example.stable.v1.CronTab`, plus `...CronTabList`;
//! * `apiVersion`, `kind` and `metadata` (a ref to `ObjectMeta`) are always
//!   present, overriding whatever the user wrote for them;
//! * the definition carries `x-kubernetes-group-version-kind`;
//! * a CRD without a schema publishes an object that preserves unknown
//!   fields.
//!
//! The schema is user input: nothing here panics on it. Shapes that cannot be
//! a schema (a string, a number) are reported as [`OpenApiError`] by
//! [`definition`] and the caller degrades to the schemaless form. `$ref`s are
//! removed because CRD validation forbids them and a dangling one would break
//! ref-following clients.

use serde_json::{json, Map, Value};

use super::builtin::{
    self, API_VERSION_DESCRIPTION, KIND_DESCRIPTION, OBJECT_META, OBJECT_META_DESCRIPTION,
};
use super::dialect::{self, V2_REF_PREFIX};
use super::{OpenApiError, ResourceSpec};

/// `com.example.stable.v1.CronTab` for (`stable.example.com`, `v1`, `CronTab`).
pub(super) fn definition_name(group: &str, version: &str, kind: &str) -> String {
    let mut reversed: Vec<&str> = group.split('.').filter(|p| !p.is_empty()).collect();
    reversed.reverse();
    if reversed.is_empty() {
        format!("{version}.{kind}")
    } else {
        format!("{}.{version}.{kind}", reversed.join("."))
    }
}

/// The neutral-dialect definition for a custom resource.
pub(super) fn definition(spec: &ResourceSpec) -> Result<Value, OpenApiError> {
    let mut schema = match &spec.schema {
        None => json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true }),
        Some(Value::Object(obj)) => Value::Object(obj.clone()),
        Some(other) => {
            return Err(OpenApiError::InvalidCrdSchema {
                kind: spec.kind.clone(),
                group: spec.group.clone(),
                version: spec.version.clone(),
                reason: format!(
                    "openAPIV3Schema must be an object, got {}",
                    json_type(other)
                ),
            })
        }
    };
    strip_refs(&mut schema);
    dialect::sanitize(&mut schema);
    let Value::Object(obj) = &mut schema else {
        // `sanitize` keeps objects objects; this arm only satisfies the type
        // system without an unwrap.
        return Ok(schemaless(spec));
    };
    obj.entry("type").or_insert_with(|| json!("object"));
    let properties = obj
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if !properties.is_object() {
        *properties = Value::Object(Map::new());
    }
    if let Value::Object(props) = properties {
        props.insert(
            "apiVersion".into(),
            json!({ "description": API_VERSION_DESCRIPTION, "type": "string" }),
        );
        props.insert(
            "kind".into(),
            json!({ "description": KIND_DESCRIPTION, "type": "string" }),
        );
        props.insert(
            "metadata".into(),
            json!({ "$ref": format!("{V2_REF_PREFIX}{OBJECT_META}"), "description": OBJECT_META_DESCRIPTION }),
        );
    }
    obj.insert(
        "x-kubernetes-group-version-kind".into(),
        builtin::gvk_extension(&spec.group, &spec.version, &spec.kind),
    );
    Ok(schema)
}

/// The definition used when a CRD schema is unusable.
pub(super) fn schemaless(spec: &ResourceSpec) -> Value {
    let fallback = ResourceSpec {
        schema: None,
        ..spec.clone()
    };
    // With no schema `definition` cannot fail; the fallback value keeps the
    // document valid even if that ever changes.
    definition(&fallback).unwrap_or_else(|_| json!({ "type": "object" }))
}

/// The `<Kind>List` definition for a custom resource.
pub(super) fn list_definition(spec: &ResourceSpec) -> Value {
    let item = definition_name(&spec.group, &spec.version, &spec.kind);
    builtin::list_definition(
        &item,
        &spec.group,
        &spec.version,
        &format!("{}List", spec.kind),
    )
}

fn strip_refs(value: &mut Value) {
    match value {
        Value::Object(obj) => {
            obj.remove("$ref");
            obj.values_mut().for_each(strip_refs);
        }
        Value::Array(list) => list.iter_mut().for_each(strip_refs),
        _ => {}
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(schema: Option<Value>) -> ResourceSpec {
        ResourceSpec {
            group: "stable.example.com".into(),
            version: "v1".into(),
            kind: "CronTab".into(),
            plural: "crontabs".into(),
            namespaced: true,
            verbs: vec![],
            subresources: vec![],
            schema,
        }
    }

    #[test]
    fn name_reverses_group() {
        assert_eq!(
            definition_name("stable.example.com", "v1", "CronTab"),
            "com.example.stable.v1.CronTab"
        );
    }

    #[test]
    fn fills_in_standard_fields() {
        let d = definition(&spec(Some(json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {"x": {"$ref": "#/nope"}}}},
        }))))
        .expect("valid schema");
        assert_eq!(
            d["properties"]["metadata"]["$ref"],
            json!(format!("#/definitions/{OBJECT_META}"))
        );
        assert_eq!(d["properties"]["apiVersion"]["type"], "string");
        assert_eq!(d["properties"]["spec"]["properties"]["x"], json!({}));
        assert_eq!(d["x-kubernetes-group-version-kind"][0]["kind"], "CronTab");
    }

    #[test]
    fn rejects_non_object_schema_without_panicking() {
        assert!(definition(&spec(Some(json!("nope")))).is_err());
        let d = schemaless(&spec(Some(json!(42))));
        assert_eq!(d["x-kubernetes-preserve-unknown-fields"], true);
        // `properties: 5` is garbage too, but recoverable.
        let d = definition(&spec(Some(json!({"properties": 5})))).expect("recovered");
        assert!(d["properties"]["kind"].is_object());
    }
}
