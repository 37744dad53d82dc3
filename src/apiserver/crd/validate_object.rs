//! Validation of a custom object against its version's structural schema: upstream's
//! kube-openapi `SchemaValidator` (as wrapped by `apiserver/validation.ValidateCustomResource`),
//! followed by the embedded-resource checks and the list-type uniqueness checks, in the order
//! the custom resource strategy runs them.
//!
//! Messages and paths follow kube-openapi: a value is named by its dotted path relative to the
//! object (`spec.replicas`, `spec.ports[0].name`, additionalProperties keys appended with `.`),
//! messages read `spec.replicas in body must be of type integer: "string"`, and failures of
//! `anyOf`/`oneOf`/`allOf`/`not` are additionally reported at the object root, as upstream
//! does. Call [`super::apply_defaults`] and [`super::prune`] first: upstream validates the
//! defaulted, pruned object, so e.g. a non-nullable `null` without a default never reaches here.
//!
//! Differences from kube-openapi, all deliberate: once a value has the wrong type no further
//! keyword is checked on it (kube-openapi sometimes piles follow-up errors on), `null` is
//! accepted for a `nullable` field even when an `enum` does not list it, `maxProperties`
//! reports the actual count, and `x-kubernetes-validations` (CEL) rules are skipped entirely.

use super::embedded::validate_embedded;
use super::field_error::{go_float, FieldError, FieldPath};
use super::formats;
use super::list_type::validate_list_sets_and_maps;
use super::structural::SchemaView;
use super::MAX_DEPTH;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use regex::Regex;
use serde_json::{Map, Number, Value};
use std::collections::HashMap;

/// Validates `obj` (a whole custom object) against `schema` (its version's `openAPIV3Schema`).
/// An empty result means valid.
pub fn validate_object(schema: &JSONSchemaProps, obj: &Value) -> Vec<FieldError> {
    let mut errs = validate_value(schema, obj, &FieldPath::root());
    errs.extend(validate_embedded(schema, obj));
    errs.extend(validate_list_sets_and_maps(schema, obj));
    errs
}

/// kube-openapi-style validation of `value` against `schema`, with field paths prefixed by
/// `base` (used for CRD `default` values, which are validated the same way).
pub(super) fn validate_value(
    schema: &JSONSchemaProps,
    value: &Value,
    base: &FieldPath,
) -> Vec<FieldError> {
    let mut w = Walker {
        base,
        patterns: HashMap::new(),
    };
    w.validate(schema, value, "", 0)
}

struct Walker<'a> {
    base: &'a FieldPath,
    /// Compiled `pattern`s; a big array would otherwise recompile one per element.
    patterns: HashMap<String, Result<Regex, String>>,
}

/// JSON Schema type name of a value, as kube-openapi infers it from the decoded Go value
/// (integral literals decode to int64 → "integer", anything else numeric → "number").
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// swag.IsFloat64AJSONInteger: an integral float that survives the round trip.
fn is_json_integer(n: &Number) -> bool {
    n.is_i64()
        || n.is_u64()
        || n.as_f64().is_some_and(|f| {
            f.is_finite() && f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0
        })
}

fn type_matches(t: &str, v: &Value) -> bool {
    match (t, v) {
        ("integer", Value::Number(n)) => is_json_integer(n),
        ("number", Value::Number(_)) => true,
        ("string", Value::String(_)) | ("boolean", Value::Bool(_)) => true,
        ("array", Value::Array(_)) | ("object", Value::Object(_)) => true,
        _ => false,
    }
}

impl Walker<'_> {
    /// Field path of the value kube-openapi names `rel`.
    fn path(&self, rel: &str) -> FieldPath {
        let rel = rel.trim_start_matches('.');
        if rel.is_empty() {
            self.base.clone()
        } else {
            self.base.child(rel)
        }
    }

    fn validate(
        &mut self,
        s: &JSONSchemaProps,
        v: &Value,
        rel: &str,
        depth: usize,
    ) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if depth > MAX_DEPTH {
            errs.push(FieldError::forbidden(
                &self.path(rel),
                format!("must not be nested more than {MAX_DEPTH} levels deep"),
            ));
            return errs;
        }

        let types: Vec<&str> = if s.is_int_or_string() {
            vec!["integer", "string"]
        } else if s.ty().is_empty() {
            vec![]
        } else {
            vec![s.ty()]
        };
        if v.is_null() {
            if !types.is_empty() && !s.is_nullable() {
                errs.push(self.type_error(rel, &types.join(","), "null"));
            }
            return errs;
        }
        if !types.is_empty() && !types.iter().any(|t| type_matches(t, v)) {
            errs.push(self.type_error(rel, &types.join(","), type_name(v)));
            return errs;
        }

        self.junctors(s, v, rel, depth, &mut errs);
        match v {
            Value::String(text) => self.string(s, text, rel, &mut errs),
            Value::Number(n) => self.number(s, n, rel, &mut errs),
            Value::Array(items) => self.array(s, items, rel, depth, &mut errs),
            _ => {}
        }
        self.enumeration(s, v, rel, &mut errs);
        if let Value::Object(map) = v {
            self.object(s, map, rel, depth, &mut errs);
        }
        errs
    }

    fn type_error(&self, rel: &str, expected: &str, actual: &str) -> FieldError {
        FieldError::type_invalid(
            &self.path(rel),
            actual,
            format!("{rel} in body must be of type {expected}: \"{actual}\""),
        )
    }

    fn junctors(
        &mut self,
        s: &JSONSchemaProps,
        v: &Value,
        rel: &str,
        depth: usize,
        errs: &mut Vec<FieldError>,
    ) {
        // Composite failures are reported at the base path, like upstream's non-field errors.
        let composite = |msg: String| FieldError::invalid(self.base, "", msg);
        if let Some(any_of) = s.any_of.as_ref().filter(|a| !a.is_empty()) {
            let mut best: Option<Vec<FieldError>> = None;
            let mut ok = false;
            for branch in any_of {
                let r = self.validate(branch, v, rel, depth + 1);
                if r.is_empty() {
                    ok = true;
                    break;
                }
                if best.as_ref().is_none_or(|b| r.len() < b.len()) {
                    best = Some(r);
                }
            }
            if !ok {
                errs.push(composite(format!(
                    "{rel} must validate at least one schema (anyOf)"
                )));
                errs.extend(best.unwrap_or_default());
            }
        }
        if let Some(one_of) = s.one_of.as_ref().filter(|a| !a.is_empty()) {
            let mut best: Option<Vec<FieldError>> = None;
            let mut valid = 0;
            for branch in one_of {
                let r = self.validate(branch, v, rel, depth + 1);
                if r.is_empty() {
                    valid += 1;
                } else if valid == 0 && best.as_ref().is_none_or(|b| r.len() < b.len()) {
                    best = Some(r);
                }
            }
            if valid != 1 {
                let detail = if valid == 0 {
                    "Found none valid".to_string()
                } else {
                    format!("Found {valid} valid alternatives")
                };
                errs.push(composite(format!(
                    "{rel} must validate one and only one schema (oneOf). {detail}"
                )));
                if valid == 0 {
                    errs.extend(best.unwrap_or_default());
                }
            }
        }
        if let Some(all_of) = s.all_of.as_ref().filter(|a| !a.is_empty()) {
            let mut failed = false;
            for branch in all_of {
                let r = self.validate(branch, v, rel, depth + 1);
                failed |= !r.is_empty();
                errs.extend(r);
            }
            if failed {
                errs.push(composite(format!(
                    "{rel} must validate all the schemas (allOf)"
                )));
            }
        }
        if let Some(not) = &s.not {
            if self.validate(not, v, rel, depth + 1).is_empty() {
                errs.push(composite(format!(
                    "{rel} must not validate the schema (not)"
                )));
            }
        }
    }

    fn string(&mut self, s: &JSONSchemaProps, text: &str, rel: &str, errs: &mut Vec<FieldError>) {
        let len = text.chars().count() as i64;
        if let Some(max) = s.max_length.filter(|m| len > *m) {
            errs.push(FieldError::too_long(&self.path(rel), max));
        }
        if let Some(min) = s.min_length.filter(|m| len < *m) {
            errs.push(FieldError::invalid(
                &self.path(rel),
                text,
                format!("{rel} in body should be at least {min} chars long"),
            ));
        }
        if let Some(pattern) = s.pattern.as_deref().filter(|p| !p.is_empty()) {
            let compiled = self
                .patterns
                .entry(pattern.to_string())
                .or_insert_with(|| Regex::new(pattern).map_err(|e| e.to_string()));
            let msg = match compiled {
                Ok(re) if re.is_match(text) => None,
                Ok(_) => Some(format!("{rel} in body should match '{pattern}'")),
                Err(e) => Some(format!(
                    "{rel} in body should match '{pattern}, but pattern is invalid: {e}'"
                )),
            };
            if let Some(msg) = msg {
                errs.push(FieldError::invalid(&self.path(rel), text, msg));
            }
        }
        let string_typed = matches!(s.ty(), "" | "string");
        if let Some(format) = s
            .format
            .as_deref()
            .filter(|f| !f.is_empty() && string_typed)
        {
            if !formats::conforms(format, text) {
                errs.push(FieldError::type_invalid(
                    &self.path(rel),
                    text,
                    format!(
                        "{rel} in body must be of type {format}: {}",
                        super::field_error::go_quote(text)
                    ),
                ));
            }
        }
    }

    fn number(&self, s: &JSONSchemaProps, n: &Number, rel: &str, errs: &mut Vec<FieldError>) {
        let Some(x) = n.as_f64() else { return };
        let value = Value::Number(n.clone());
        let integral = n.is_i64() || n.is_u64();
        // Integers are compared with the bound truncated to an integer, as kube-openapi does.
        let bound = |b: f64| if integral { b.trunc() } else { b };
        if let Some(factor) = s.multiple_of {
            if factor < 0.0 {
                errs.push(FieldError::invalid(
                    &self.path(rel),
                    value.clone(),
                    format!(
                        "factor MultipleOf declared for {rel} must be positive: {}",
                        go_float(factor)
                    ),
                ));
            } else if factor > 0.0 {
                let q = if factor < 1.0 {
                    x * (1.0 / factor)
                } else {
                    x / factor
                };
                if (q - q.round()).abs() > 1e-9 {
                    errs.push(FieldError::invalid(
                        &self.path(rel),
                        value.clone(),
                        format!("{rel} in body should be a multiple of {}", go_float(factor)),
                    ));
                }
            }
        }
        if let Some(max) = s.maximum {
            let exclusive = s.exclusive_maximum == Some(true);
            let m = bound(max);
            if (exclusive && x >= m) || (!exclusive && x > m) {
                let op = if exclusive {
                    "less than"
                } else {
                    "less than or equal to"
                };
                errs.push(FieldError::invalid(
                    &self.path(rel),
                    value.clone(),
                    format!("{rel} in body should be {op} {}", go_float(m)),
                ));
            }
        }
        if let Some(min) = s.minimum {
            let exclusive = s.exclusive_minimum == Some(true);
            let m = bound(min);
            if (exclusive && x <= m) || (!exclusive && x < m) {
                let op = if exclusive {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                errs.push(FieldError::invalid(
                    &self.path(rel),
                    value,
                    format!("{rel} in body should be {op} {}", go_float(m)),
                ));
            }
        }
    }

    fn array(
        &mut self,
        s: &JSONSchemaProps,
        items: &[Value],
        rel: &str,
        depth: usize,
        errs: &mut Vec<FieldError>,
    ) {
        if let Some(item_schema) = s.items_schema() {
            for (i, item) in items.iter().enumerate() {
                let r = self.validate(item_schema, item, &format!("{rel}[{i}]"), depth + 1);
                errs.extend(r);
            }
        }
        let size = items.len();
        if let Some(min) = s.min_items.filter(|m| (size as i64) < *m) {
            errs.push(FieldError::invalid(
                &self.path(rel),
                size,
                format!("{rel} in body should have at least {min} items"),
            ));
        }
        if let Some(max) = s.max_items.filter(|m| (size as i64) > *m) {
            errs.push(FieldError::too_many(&self.path(rel), size, max));
        }
        if s.unique_items == Some(true) {
            let mut seen = std::collections::HashSet::new();
            if !items
                .iter()
                .all(|x| seen.insert(serde_json::to_string(x).unwrap_or_default()))
            {
                errs.push(FieldError::invalid(
                    &self.path(rel),
                    "",
                    format!("{rel} in body shouldn't contain duplicates"),
                ));
            }
        }
    }

    fn enumeration(&self, s: &JSONSchemaProps, v: &Value, rel: &str, errs: &mut Vec<FieldError>) {
        let Some(allowed) = s.enum_.as_ref().filter(|e| !e.is_empty()) else {
            return;
        };
        let equal = |a: &Value, b: &Value| match (a, b) {
            (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
            _ => a == b,
        };
        if allowed.iter().any(|e| equal(&e.0, v)) {
            return;
        }
        let supported: Vec<String> = allowed
            .iter()
            .map(|e| match &e.0 {
                Value::String(s) => s.clone(),
                other => serde_json::to_string(other).unwrap_or_default(),
            })
            .collect();
        errs.push(FieldError::not_supported(
            &self.path(rel),
            v.clone(),
            &supported,
        ));
    }

    fn object(
        &mut self,
        s: &JSONSchemaProps,
        map: &Map<String, Value>,
        rel: &str,
        depth: usize,
        errs: &mut Vec<FieldError>,
    ) {
        let count = map.len();
        // kube-openapi stops looking at an object whose size is out of bounds.
        if let Some(min) = s.min_properties.filter(|m| (count as i64) < *m) {
            errs.push(FieldError::invalid(
                &self.path(rel),
                min,
                format!("{rel} in body should have at least {min} properties"),
            ));
            return;
        }
        if let Some(max) = s.max_properties.filter(|m| (count as i64) > *m) {
            errs.push(FieldError::too_many(&self.path(rel), count, max));
            return;
        }
        match s.additional() {
            Some(None) if !additional_allowed(s) => {
                for k in map.keys().filter(|k| s.property(k).is_none()) {
                    errs.push(FieldError::invalid(
                        &self.path(rel),
                        k.as_str(),
                        format!("{rel}.{k} in body is a forbidden property"),
                    ));
                }
            }
            Some(Some(a)) => {
                for (k, v) in map.iter().filter(|(k, _)| s.property(k).is_none()) {
                    let r = self.validate(a, v, &format!("{rel}.{k}"), depth + 1);
                    errs.extend(r);
                }
            }
            _ => {}
        }
        for (k, p) in s.properties.iter().flatten() {
            if let Some(v) = map.get(k) {
                let child = if rel.is_empty() {
                    k.clone()
                } else {
                    format!("{rel}.{k}")
                };
                let r = self.validate(p, v, &child, depth + 1);
                errs.extend(r);
            }
        }
        for k in s.required.iter().flatten() {
            if !map.contains_key(k) {
                errs.push(FieldError::required(&self.path(&format!("{rel}.{k}")), ""));
            }
        }
    }
}

fn additional_allowed(s: &JSONSchemaProps) -> bool {
    !matches!(
        s.additional_properties,
        Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Bool(false))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> JSONSchemaProps {
        serde_json::from_value(v).expect("test schema must decode")
    }

    fn check(s: &Value, obj: Value) -> Vec<String> {
        validate_object(&schema(s.clone()), &obj)
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    fn spec_schema(spec: Value) -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": spec}}})
    }

    #[test]
    fn crontab_objects() {
        let s = super::super::fixtures::crontab_schema();
        let ok = json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "x"},
                        "spec": {"cronSpec": "* * * * */5", "image": "my-awesome-cron-image", "replicas": 1}});
        assert!(validate_object(&s, &ok).is_empty());
        let bad = json!({"spec": {"cronSpec": "* * * *", "image": 1, "replicas": 15}});
        let got: Vec<String> = validate_object(&s, &bad)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            got,
            vec![
                r#"spec.cronSpec: Invalid value: "* * * *": spec.cronSpec in body should match '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'"#,
                r#"spec.image: Invalid value: "integer": spec.image in body must be of type string: "integer""#,
                "spec.replicas: Invalid value: 15: spec.replicas in body should be less than or equal to 10",
            ]
        );
    }

    #[test]
    fn keywords() {
        let cases: Vec<(&str, Value, Value, Vec<&str>)> = vec![
            ("type ok", json!({"a": {"type": "integer"}}), json!({"a": 3}), vec![]),
            ("integral float is an integer", json!({"a": {"type": "integer"}}), json!({"a": 3.0}), vec![]),
            (
                "type",
                json!({"a": {"type": "integer"}}),
                json!({"a": 3.5}),
                vec![r#"spec.a: Invalid value: "number": spec.a in body must be of type integer: "number""#],
            ),
            (
                "required",
                json!({"a": {"type": "object", "required": ["b"], "properties": {"b": {"type": "string"}}}}),
                json!({"a": {}}),
                vec!["spec.a.b: Required value"],
            ),
            (
                "enum",
                json!({"a": {"type": "string", "enum": ["x", "y"]}}),
                json!({"a": "z"}),
                vec![r#"spec.a: Unsupported value: "z": supported values: "x", "y""#],
            ),
            ("enum ok", json!({"a": {"type": "integer", "enum": [1, 2]}}), json!({"a": 2}), vec![]),
            (
                "exclusive minimum",
                json!({"a": {"type": "number", "minimum": 1.5, "exclusiveMinimum": true}}),
                json!({"a": 1.5}),
                vec!["spec.a: Invalid value: 1.5: spec.a in body should be greater than 1.5"],
            ),
            (
                "exclusive maximum",
                json!({"a": {"type": "integer", "maximum": 5, "exclusiveMaximum": true}}),
                json!({"a": 5}),
                vec!["spec.a: Invalid value: 5: spec.a in body should be less than 5"],
            ),
            (
                "minimum",
                json!({"a": {"type": "integer", "minimum": 0}}),
                json!({"a": -1}),
                vec!["spec.a: Invalid value: -1: spec.a in body should be greater than or equal to 0"],
            ),
            (
                "multipleOf",
                json!({"a": {"type": "integer", "multipleOf": 5}}),
                json!({"a": 12}),
                vec!["spec.a: Invalid value: 12: spec.a in body should be a multiple of 5"],
            ),
            (
                "maxLength counts characters",
                json!({"a": {"type": "string", "maxLength": 2}}),
                json!({"a": "äöü"}),
                vec!["spec.a: Too long: may not be longer than 2"],
            ),
            ("maxLength ok with multibyte", json!({"a": {"type": "string", "maxLength": 3}}), json!({"a": "äöü"}), vec![]),
            (
                "minLength",
                json!({"a": {"type": "string", "minLength": 2}}),
                json!({"a": "x"}),
                vec![r#"spec.a: Invalid value: "x": spec.a in body should be at least 2 chars long"#],
            ),
            (
                "minItems",
                json!({"a": {"type": "array", "items": {"type": "string"}, "minItems": 2}}),
                json!({"a": ["x"]}),
                vec!["spec.a: Invalid value: 1: spec.a in body should have at least 2 items"],
            ),
            (
                "maxItems",
                json!({"a": {"type": "array", "items": {"type": "string"}, "maxItems": 1}}),
                json!({"a": ["x", "y"]}),
                vec!["spec.a: Too many: 2: must have at most 1 items"],
            ),
            (
                "uniqueItems",
                json!({"a": {"type": "array", "items": {"type": "integer"}, "uniqueItems": true}}),
                json!({"a": [1, 1]}),
                vec![r#"spec.a: Invalid value: "": spec.a in body shouldn't contain duplicates"#],
            ),
            (
                "item paths",
                json!({"a": {"type": "array", "items": {"type": "string"}}}),
                json!({"a": ["x", 2]}),
                vec![r#"spec.a[1]: Invalid value: "integer": spec.a[1] in body must be of type string: "integer""#],
            ),
            (
                "minProperties",
                json!({"a": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}}}),
                json!({"a": {}}),
                vec!["spec.a: Invalid value: 1: spec.a in body should have at least 1 properties"],
            ),
            (
                "maxProperties",
                json!({"a": {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "string"}}}),
                json!({"a": {"x": "1", "y": "2"}}),
                vec!["spec.a: Too many: 2: must have at most 1 items"],
            ),
            (
                "additionalProperties schema",
                json!({"a": {"type": "object", "additionalProperties": {"type": "string"}}}),
                json!({"a": {"k": 1}}),
                vec![r#"spec.a.k: Invalid value: "integer": spec.a.k in body must be of type string: "integer""#],
            ),
            (
                "format",
                json!({"a": {"type": "string", "format": "date-time"}}),
                json!({"a": "tomorrow"}),
                vec![r#"spec.a: Invalid value: "tomorrow": spec.a in body must be of type date-time: "tomorrow""#],
            ),
            ("int32 format is not range checked (upstream)", json!({"a": {"type": "integer", "format": "int32"}}), json!({"a": 1u64 << 40}), vec![]),
            (
                "null without nullable",
                json!({"a": {"type": "string"}}),
                json!({"a": null}),
                vec![r#"spec.a: Invalid value: "null": spec.a in body must be of type string: "null""#],
            ),
            ("null with nullable", json!({"a": {"type": "string", "nullable": true}}), json!({"a": null}), vec![]),
            ("int-or-string int", json!({"a": {"x-kubernetes-int-or-string": true}}), json!({"a": 80}), vec![]),
            ("int-or-string string", json!({"a": {"x-kubernetes-int-or-string": true}}), json!({"a": "http"}), vec![]),
            (
                "int-or-string other",
                json!({"a": {"x-kubernetes-int-or-string": true}}),
                json!({"a": true}),
                vec![r#"spec.a: Invalid value: "boolean": spec.a in body must be of type integer,string: "boolean""#],
            ),
            (
                "list-type set",
                json!({"a": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}}),
                json!({"a": ["x", "y", "x", "x"]}),
                vec![r#"spec.a[2]: Duplicate value: "x""#],
            ),
            (
                "list-type map",
                json!({"a": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                             "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "v": {"type": "integer"}}}}}),
                json!({"a": [{"name": "x", "v": 1}, {"name": "y"}, {"name": "x", "v": 2}]}),
                vec![r#"spec.a[2]: Duplicate value: {"name":"x"}"#],
            ),
            (
                "embedded resource needs apiVersion and kind",
                json!({"t": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true}}),
                json!({"t": {"kind": "Pod_X"}}),
                vec![
                    "spec.t.apiVersion: Required value",
                    "spec.t.kind: Invalid value: \"Pod_X\": may have mixed case, but should otherwise match: a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
                ],
            ),
            (
                "anyOf",
                json!({"a": {"type": "integer", "anyOf": [{"minimum": 10}, {"maximum": 0}]}}),
                json!({"a": 5}),
                vec![
                    r#": Invalid value: "": spec.a must validate at least one schema (anyOf)"#,
                    "spec.a: Invalid value: 5: spec.a in body should be greater than or equal to 10",
                ],
            ),
            ("anyOf ok", json!({"a": {"type": "integer", "anyOf": [{"minimum": 10}, {"maximum": 0}]}}), json!({"a": -5}), vec![]),
            (
                "oneOf with two matches",
                json!({"a": {"type": "integer", "oneOf": [{"minimum": 0}, {"maximum": 10}]}}),
                json!({"a": 5}),
                vec![r#": Invalid value: "": spec.a must validate one and only one schema (oneOf). Found 2 valid alternatives"#],
            ),
            (
                "allOf",
                json!({"a": {"type": "string", "allOf": [{"minLength": 1}, {"maxLength": 2}]}}),
                json!({"a": "abc"}),
                vec!["spec.a: Too long: may not be longer than 2", r#": Invalid value: "": spec.a must validate all the schemas (allOf)"#],
            ),
            (
                "not",
                json!({"a": {"type": "string", "not": {"enum": ["forbidden"]}}}),
                json!({"a": "forbidden"}),
                vec![r#": Invalid value: "": spec.a must not validate the schema (not)"#],
            ),
        ];
        for (name, spec, obj, want) in cases {
            let got = check(&spec_schema(spec), json!({"spec": obj}));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn hostile_nesting_is_rejected_without_overflow() {
        let mut obj = json!("leaf");
        for _ in 0..(MAX_DEPTH * 3) {
            obj = json!([obj]);
        }
        let mut deep = JSONSchemaProps {
            type_: Some("string".into()),
            ..Default::default()
        };
        for _ in 0..(MAX_DEPTH * 3) {
            deep = JSONSchemaProps {
                type_: Some("array".into()),
                items: Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(Box::new(deep))),
                ..Default::default()
            };
        }
        let errs = validate_value(&deep, &obj, &FieldPath::root());
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("must not be nested"), "{errs:?}");
    }
}
