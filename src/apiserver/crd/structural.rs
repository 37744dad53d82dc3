//! Structural-schema rules (upstream `apiserver/schema/validation.go` + `complete.go`) and the
//! read-only view of a [`JSONSchemaProps`] that every walker in this module uses.
//!
//! A schema is *structural* when its "shape" (type, properties, items, additionalProperties and
//! the `x-kubernetes-*` extensions) is fully declared outside of the logical junctors
//! (`allOf`/`anyOf`/`oneOf`/`not`), so pruning and defaulting can follow it without evaluating
//! any validation. The junctors may only add value validations on fields the shape already
//! declares. [`validate_structural`] reports every violation with upstream's paths and
//! messages, sorted by their text as upstream does (its maps iterate randomly).
//!
//! Invariant kept by the rest of the module: object-level walkers only ever descend through
//! `properties`, `items` and `additionalProperties` of the schema, never through the junctors,
//! which is exactly what structurality makes sufficient.

use super::field_error::{FieldError, FieldPath};
use super::MAX_DEPTH;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};

/// Structural accessors over the generated, all-`Option` [`JSONSchemaProps`].
pub(super) trait SchemaView {
    /// `type`, or `""` when unset.
    fn ty(&self) -> &str;
    /// The single-schema form of `items`; the array form is rejected by CRD validation.
    fn items_schema(&self) -> Option<&JSONSchemaProps>;
    fn property(&self, name: &str) -> Option<&JSONSchemaProps>;
    fn has_properties(&self) -> bool;
    /// `None`: unset. `Some(None)`: a boolean. `Some(Some(s))`: a schema.
    fn additional(&self) -> Option<Option<&JSONSchemaProps>>;
    fn preserves_unknown(&self) -> bool;
    fn is_int_or_string(&self) -> bool;
    fn is_embedded(&self) -> bool;
    fn is_nullable(&self) -> bool;
}

impl SchemaView for JSONSchemaProps {
    fn ty(&self) -> &str {
        self.type_.as_deref().unwrap_or("")
    }
    fn items_schema(&self) -> Option<&JSONSchemaProps> {
        match &self.items {
            Some(JSONSchemaPropsOrArray::Schema(s)) => Some(s),
            _ => None,
        }
    }
    fn property(&self, name: &str) -> Option<&JSONSchemaProps> {
        self.properties.as_ref().and_then(|p| p.get(name))
    }
    fn has_properties(&self) -> bool {
        self.properties.as_ref().is_some_and(|p| !p.is_empty())
    }
    fn additional(&self) -> Option<Option<&JSONSchemaProps>> {
        match &self.additional_properties {
            None => None,
            Some(JSONSchemaPropsOrBool::Bool(_)) => Some(None),
            Some(JSONSchemaPropsOrBool::Schema(s)) => Some(Some(s)),
        }
    }
    fn preserves_unknown(&self) -> bool {
        self.x_kubernetes_preserve_unknown_fields == Some(true)
    }
    fn is_int_or_string(&self) -> bool {
        self.x_kubernetes_int_or_string == Some(true)
    }
    fn is_embedded(&self) -> bool {
        self.x_kubernetes_embedded_resource == Some(true)
    }
    fn is_nullable(&self) -> bool {
        self.nullable == Some(true)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Item,
    Field,
}

/// Checks that `schema` (a version's `openAPIV3Schema`, at `path`) is structural.
pub(super) fn validate_structural(path: &FieldPath, schema: &JSONSchemaProps) -> Vec<FieldError> {
    let mut errs = Vec::new();
    invariants(schema, Level::Root, path, 0, &mut errs);
    completeness(schema, schema, path, path, 0, &mut errs);
    errs.sort_by_key(|e| e.to_string());
    errs
}

fn too_deep(path: &FieldPath, depth: usize, errs: &mut Vec<FieldError>) -> bool {
    if depth > MAX_DEPTH {
        errs.push(FieldError::forbidden(
            path,
            format!("must not be nested more than {MAX_DEPTH} levels deep"),
        ));
        return true;
    }
    false
}

fn invariants(
    s: &JSONSchemaProps,
    lvl: Level,
    path: &FieldPath,
    depth: usize,
    errs: &mut Vec<FieldError>,
) {
    if too_deep(path, depth, errs) {
        return;
    }
    let ty = s.ty();
    if ty == "array" && s.items.is_none() {
        errs.push(FieldError::required(
            &path.child("items"),
            "must be specified",
        ));
    }
    if let Some(items) = s.items_schema() {
        invariants(items, Level::Item, &path.child("items"), depth + 1, errs);
    }
    for (k, v) in s.properties.iter().flatten() {
        invariants(
            v,
            Level::Field,
            &path.child("properties").key(k),
            depth + 1,
            errs,
        );
    }
    if let Some(additional) = s.additional() {
        if lvl == Level::Root {
            errs.push(FieldError::forbidden(
                &path.child("additionalProperties"),
                "must not be used at the root",
            ));
        }
        if let Some(a) = additional {
            invariants(
                a,
                Level::Field,
                &path.child("additionalProperties"),
                depth + 1,
                errs,
            );
        }
    }

    if s.is_int_or_string() && s.preserves_unknown() {
        errs.push(FieldError::invalid(
            &path.child("x-kubernetes-preserve-unknown-fields"),
            true,
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }
    if s.is_int_or_string() && s.is_embedded() {
        errs.push(FieldError::invalid(
            &path.child("x-kubernetes-embedded-resource"),
            true,
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }

    // The two int-or-string idioms are the only junctor content allowed to carry a `type`.
    let skip_any_of = is_int_or_string_any_of(s.any_of.as_deref());
    let skip_first_all_of_any_of = s
        .all_of
        .as_ref()
        .and_then(|a| a.first())
        .is_some_and(|f| is_int_or_string_any_of(f.any_of.as_deref()));
    value_validation(s, skip_any_of, skip_first_all_of_any_of, path, depth, errs);

    let check_metadata = lvl == Level::Root || s.is_embedded();
    if s.is_embedded() && ty != "object" {
        let msg = "must be object if x-kubernetes-embedded-resource is true";
        if ty.is_empty() {
            errs.push(FieldError::required(&path.child("type"), msg));
        } else {
            errs.push(FieldError::invalid(&path.child("type"), ty, msg));
        }
    } else if ty.is_empty() && !s.is_int_or_string() && !s.preserves_unknown() {
        let msg = match lvl {
            Level::Root => "must not be empty at the root",
            Level::Item => "must not be empty for specified array items",
            Level::Field => "must not be empty for specified object fields",
        };
        errs.push(FieldError::required(&path.child("type"), msg));
    }
    if s.is_embedded() && s.additional_properties.is_some() {
        errs.push(FieldError::forbidden(
            &path.child("additionalProperties"),
            "must not be used if x-kubernetes-embedded-resource is set",
        ));
    }
    if lvl == Level::Root && !ty.is_empty() && ty != "object" {
        errs.push(FieldError::invalid(
            &path.child("type"),
            ty,
            "must be object at the root",
        ));
    }
    if check_metadata {
        for name in ["kind", "apiVersion"] {
            if let Some(p) = s.property(name) {
                if p.ty() != "string" {
                    errs.push(FieldError::invalid(
                        &path.child("properties").key(name).child("type"),
                        p.ty(),
                        "must be string",
                    ));
                }
            }
        }
    }
    if let Some(meta) = s.property("metadata") {
        metadata_invariants(
            meta,
            check_metadata,
            lvl,
            &path.child("properties").key("metadata"),
            errs,
        );
    }
    if s.is_embedded() && !s.preserves_unknown() && !s.has_properties() {
        errs.push(FieldError::required(
            &path.child("properties"),
            "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
        ));
    }
}

fn is_int_or_string_any_of(any_of: Option<&[JSONSchemaProps]>) -> bool {
    let only_type = |t: &str| JSONSchemaProps {
        type_: Some(t.to_string()),
        ..Default::default()
    };
    matches!(any_of, Some([a, b]) if *a == only_type("integer") && *b == only_type("string"))
}

/// At the root, `metadata` may only constrain `name` and `generateName`: anything else would
/// let a CRD author restrict fields the API server itself manages.
fn metadata_invariants(
    s: &JSONSchemaProps,
    check_metadata: bool,
    lvl: Level,
    path: &FieldPath,
    errs: &mut Vec<FieldError>,
) {
    if check_metadata && s.ty() != "object" {
        errs.push(FieldError::invalid(
            &path.child("type"),
            s.ty(),
            "must be object",
        ));
    }
    if lvl != Level::Root {
        return;
    }
    let mut rest = s.clone();
    let keys: Vec<&str> = s
        .properties
        .iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect();
    let only_names = match keys.as_slice() {
        [] => true,
        [one] => *one == "name" || *one == "generateName",
        [a, b] => (*a == "generateName" && *b == "name") || (*a == "name" && *b == "generateName"),
        _ => false,
    };
    if only_names {
        rest.properties = None;
    }
    rest.type_ = None;
    // Defaults in metadata are reported by the OpenAPI pass; the rest are not kept by upstream's
    // structural conversion and so cannot make it non-structural.
    rest.default = None;
    rest.external_docs = None;
    rest.example = None;
    for empty_is_unset in [&mut rest.required, &mut rest.x_kubernetes_list_map_keys] {
        if empty_is_unset.as_ref().is_some_and(|v| v.is_empty()) {
            *empty_is_unset = None;
        }
    }
    for junctor in [&mut rest.all_of, &mut rest.any_of, &mut rest.one_of] {
        if junctor.as_ref().is_some_and(|v| v.is_empty()) {
            *junctor = None;
        }
    }
    if rest.enum_.as_ref().is_some_and(|v| v.is_empty()) {
        rest.enum_ = None;
    }
    if rest != JSONSchemaProps::default() {
        errs.push(FieldError::forbidden(
            path,
            "must not specify anything other than name and generateName, but metadata is implicitly specified",
        ));
    }
}

/// The junctors and `pattern` of a node (upstream `validateValueValidation`).
fn value_validation(
    v: &JSONSchemaProps,
    skip_any_of: bool,
    skip_first_all_of_any_of: bool,
    path: &FieldPath,
    depth: usize,
    errs: &mut Vec<FieldError>,
) {
    if !skip_any_of {
        for (i, x) in v.any_of.iter().flatten().enumerate() {
            nested(x, false, &path.child("anyOf").index(i), depth + 1, errs);
        }
    }
    for (i, x) in v.all_of.iter().flatten().enumerate() {
        nested(
            x,
            skip_first_all_of_any_of && i == 0,
            &path.child("allOf").index(i),
            depth + 1,
            errs,
        );
    }
    for (i, x) in v.one_of.iter().flatten().enumerate() {
        nested(x, false, &path.child("oneOf").index(i), depth + 1, errs);
    }
    if let Some(not) = &v.not {
        nested(not, false, &path.child("not"), depth + 1, errs);
    }
    if let Some(p) = v.pattern.as_deref().filter(|p| !p.is_empty()) {
        if let Err(e) = regex::Regex::new(p) {
            errs.push(FieldError::invalid(
                &path.child("pattern"),
                p,
                format!("must be a valid regular expression, but isn't: {e}"),
            ));
        }
    }
}

/// A schema inside a junctor: it may only carry value validations.
fn nested(
    v: &JSONSchemaProps,
    skip_any_of: bool,
    path: &FieldPath,
    depth: usize,
    errs: &mut Vec<FieldError>,
) {
    if too_deep(path, depth, errs) {
        return;
    }
    value_validation(v, skip_any_of, false, path, depth, errs);
    if let Some(items) = v.items_schema() {
        nested(items, false, &path.child("items"), depth + 1, errs);
    }
    for (k, p) in v.properties.iter().flatten() {
        nested(p, false, &path.child("properties").key(k), depth + 1, errs);
    }
    let empty = "must be empty to be structural";
    let undefined = "must be undefined to be structural";
    if !v.ty().is_empty() {
        errs.push(FieldError::forbidden(&path.child("type"), empty));
    }
    if v.additional_properties.is_some() {
        errs.push(FieldError::forbidden(
            &path.child("additionalProperties"),
            undefined,
        ));
    }
    if v.default.is_some() {
        errs.push(FieldError::forbidden(&path.child("default"), undefined));
    }
    if v.title.as_deref().is_some_and(|t| !t.is_empty()) {
        errs.push(FieldError::forbidden(&path.child("title"), empty));
    }
    if v.description.as_deref().is_some_and(|d| !d.is_empty()) {
        errs.push(FieldError::forbidden(&path.child("description"), empty));
    }
    if v.is_nullable() {
        errs.push(FieldError::forbidden(
            &path.child("nullable"),
            "must be false to be structural",
        ));
    }
    if v.external_docs.is_some() {
        errs.push(FieldError::forbidden(
            &path.child("externalDocs"),
            undefined,
        ));
    }
    let must_be_false = "must be false to be structural";
    if v.preserves_unknown() {
        errs.push(FieldError::forbidden(
            &path.child("x-kubernetes-preserve-unknown-fields"),
            must_be_false,
        ));
    }
    if v.is_embedded() {
        errs.push(FieldError::forbidden(
            &path.child("x-kubernetes-embedded-resource"),
            must_be_false,
        ));
    }
    if v.is_int_or_string() {
        errs.push(FieldError::forbidden(
            &path.child("x-kubernetes-int-or-string"),
            must_be_false,
        ));
    }
    if v.x_kubernetes_list_map_keys
        .as_ref()
        .is_some_and(|k| !k.is_empty())
    {
        errs.push(FieldError::forbidden(
            &path.child("x-kubernetes-list-map-keys"),
            empty,
        ));
    }
    if v.x_kubernetes_list_type.is_some() {
        errs.push(FieldError::forbidden(
            &path.child("x-kubernetes-list-type"),
            undefined,
        ));
    }
    if v.x_kubernetes_map_type.is_some() {
        errs.push(FieldError::forbidden(
            &path.child("x-kubernetes-map-type"),
            undefined,
        ));
    }
    if v.x_kubernetes_validations
        .as_ref()
        .is_some_and(|x| !x.is_empty())
    {
        errs.push(FieldError::forbidden(
            &path.child("x-kubernetes-validations"),
            empty,
        ));
    }
    if v.property("metadata").is_some() {
        errs.push(FieldError::forbidden(
            &path.child("properties").key("metadata"),
            "must not be specified in a nested context",
        ));
    }
}

/// Every field or items a junctor talks about must also exist in the structural part (`s`).
fn completeness(
    v: &JSONSchemaProps,
    s: &JSONSchemaProps,
    s_path: &FieldPath,
    v_path: &FieldPath,
    depth: usize,
    errs: &mut Vec<FieldError>,
) {
    if depth > MAX_DEPTH {
        return;
    }
    if let Some(not) = &v.not {
        nested_completeness(not, Some(s), s_path, &v_path.child("not"), depth + 1, errs);
    }
    let junctors = [
        ("allOf", &v.all_of),
        ("anyOf", &v.any_of),
        ("oneOf", &v.one_of),
    ];
    for (name, list) in junctors {
        for (i, x) in list.iter().flatten().enumerate() {
            nested_completeness(
                x,
                Some(s),
                s_path,
                &v_path.child(name).index(i),
                depth + 1,
                errs,
            );
        }
    }
}

fn nested_completeness(
    v: &JSONSchemaProps,
    s: Option<&JSONSchemaProps>,
    s_path: &FieldPath,
    v_path: &FieldPath,
    depth: usize,
    errs: &mut Vec<FieldError>,
) {
    let Some(s) = s else {
        errs.push(FieldError::required(
            s_path,
            format!("because it is defined in {v_path}"),
        ));
        return;
    };
    if depth > MAX_DEPTH {
        return;
    }
    completeness(v, s, s_path, v_path, depth, errs);
    if let Some(items) = v.items_schema() {
        nested_completeness(
            items,
            s.items_schema(),
            &s_path.child("items"),
            &v_path.child("items"),
            depth + 1,
            errs,
        );
    }
    for (k, vf) in v.properties.iter().flatten() {
        let sp = s_path.child("properties").key(k);
        let vp = v_path.child("properties").key(k);
        match s.property(k) {
            None => errs.push(FieldError::required(
                &sp,
                format!("because it is defined in {vp}"),
            )),
            Some(sf) => nested_completeness(vf, Some(sf), &sp, &vp, depth + 1, errs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: serde_json::Value) -> JSONSchemaProps {
        serde_json::from_value(v).expect("test schema must decode")
    }

    fn messages(v: serde_json::Value) -> Vec<String> {
        validate_structural(&FieldPath::new("s"), &schema(v))
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn structural_rules() {
        let cases: Vec<(&str, serde_json::Value, Vec<&str>)> = vec![
            (
                "crontab is structural",
                json!({"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "cronSpec": {"type": "string"}, "image": {"type": "string"}, "replicas": {"type": "integer"}}}}}),
                vec![],
            ),
            (
                "missing types",
                json!({"properties": {"spec": {"properties": {"a": {"type": "string"}}}, "list": {"type": "array", "items": {}}}}),
                vec![
                    "s.properties[list].items.type: Required value: must not be empty for specified array items",
                    "s.properties[spec].type: Required value: must not be empty for specified object fields",
                    "s.type: Required value: must not be empty at the root",
                ],
            ),
            (
                "preserve-unknown-fields and int-or-string may omit type",
                json!({"type": "object", "properties": {"a": {"x-kubernetes-preserve-unknown-fields": true}, "b": {"x-kubernetes-int-or-string": true}}}),
                vec![],
            ),
            (
                "array without items, root not object, root additionalProperties",
                json!({"type": "array", "additionalProperties": {"type": "string"}}),
                vec![
                    "s.additionalProperties: Forbidden: must not be used at the root",
                    "s.items: Required value: must be specified",
                    "s.type: Invalid value: \"array\": must be object at the root",
                ],
            ),
            (
                "junctor with type and a field missing from the structure",
                json!({"type": "object", "properties": {"a": {"type": "string"}},
                       "anyOf": [{"type": "object", "properties": {"b": {"minLength": 1}}}]}),
                vec![
                    "s.anyOf[0].type: Forbidden: must be empty to be structural",
                    "s.properties[b]: Required value: because it is defined in s.anyOf[0].properties[b]",
                ],
            ),
            (
                "int-or-string anyOf idiom is allowed",
                json!({"type": "object", "properties": {"port": {"x-kubernetes-int-or-string": true,
                       "anyOf": [{"type": "integer"}, {"type": "string"}]}}}),
                vec![],
            ),
            (
                "metadata restricted to name",
                json!({"type": "object", "properties": {"metadata": {"type": "object", "properties": {
                    "name": {"type": "string", "maxLength": 10}, "labels": {"type": "object"}}}}}),
                vec!["s.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified"],
            ),
            (
                "metadata with only name is fine",
                json!({"type": "object", "properties": {"metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}}}}}),
                vec![],
            ),
            (
                "embedded resource needs object type and properties",
                json!({"type": "object", "properties": {"e": {"x-kubernetes-embedded-resource": true}}}),
                vec![
                    "s.properties[e].properties: Required value: must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
                    "s.properties[e].type: Required value: must be object if x-kubernetes-embedded-resource is true",
                ],
            ),
        ];
        for (name, s, want) in cases {
            assert_eq!(messages(s), want, "{name}");
        }
    }

    #[test]
    fn bad_patterns_are_reported_on_every_node() {
        let got = messages(
            json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}}),
        );
        assert_eq!(got.len(), 1);
        let want =
            "s.properties[a].pattern: Invalid value: \"(\": must be a valid regular expression";
        assert!(got[0].starts_with(want), "{got:?}");
    }

    #[test]
    fn hostile_depth_is_reported_not_overflowed() {
        let mut s = JSONSchemaProps {
            type_: Some("string".into()),
            ..Default::default()
        };
        for _ in 0..(MAX_DEPTH + 20) {
            s = JSONSchemaProps {
                type_: Some("array".into()),
                items: Some(JSONSchemaPropsOrArray::Schema(Box::new(s))),
                ..Default::default()
            };
        }
        let root = JSONSchemaProps {
            type_: Some("object".into()),
            properties: Some([("deep".to_string(), s)].into_iter().collect()),
            ..Default::default()
        };
        let errs = validate_structural(&FieldPath::new("s"), &root);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("must not be nested"));
    }
}
