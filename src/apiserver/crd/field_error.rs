//! Field-level validation errors, shaped like apimachinery's `field.Error`.
//!
//! A [`FieldError`] carries the field path, the kind of failure, the offending value (if the
//! kind shows one) and a detail message. [`FieldError`]'s `Display` reproduces Go's
//! `field.Error.Error()` (`spec.group: Invalid value: "x": should be ...`), [`status_message`]
//! reproduces `apierrors.NewInvalid(...).Error()` and [`causes`] the `details.causes` of the
//! resulting 422 `Status`.
//!
//! Differences from Go: composite bad values (objects, arrays) are rendered as JSON where Go
//! prints `%#v` of its internal struct, which is neither stable nor meaningful to a client.

use serde_json::{json, Value};
use std::fmt;

/// Why a field is invalid; maps 1:1 onto `metav1.CauseType` (`FieldValueInvalid`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    NotSupported,
    Forbidden,
    Duplicate,
    TypeInvalid,
    TooLong,
    TooMany,
}

impl FieldErrorKind {
    /// The `reason` of a `StatusCause`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::Duplicate => "FieldValueDuplicate",
            Self::TypeInvalid => "FieldValueTypeInvalid",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
        }
    }

    /// The human label Go's `ErrorType.String()` prints.
    pub fn label(self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Invalid | Self::TypeInvalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::Duplicate => "Duplicate value",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
        }
    }
}

/// One validation failure at one field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Path in apimachinery notation, e.g. `spec.versions[0].schema.openAPIV3Schema.properties[spec].type`.
    pub field: String,
    pub kind: FieldErrorKind,
    /// The offending value. `None` for kinds that never show one (Required, Forbidden, TooLong).
    pub value: Option<Value>,
    /// Detail; may be empty.
    pub message: String,
}

impl FieldError {
    pub fn required(path: &FieldPath, detail: impl Into<String>) -> Self {
        Self::new(path, FieldErrorKind::Required, None, detail)
    }
    pub fn invalid(path: &FieldPath, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self::new(path, FieldErrorKind::Invalid, Some(value.into()), detail)
    }
    pub fn type_invalid(
        path: &FieldPath,
        value: impl Into<Value>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(
            path,
            FieldErrorKind::TypeInvalid,
            Some(value.into()),
            detail,
        )
    }
    pub fn forbidden(path: &FieldPath, detail: impl Into<String>) -> Self {
        Self::new(path, FieldErrorKind::Forbidden, None, detail)
    }
    pub fn duplicate(path: &FieldPath, value: impl Into<Value>) -> Self {
        Self::new(path, FieldErrorKind::Duplicate, Some(value.into()), "")
    }
    /// `supported` is rendered as Go does: each value `%q`-quoted, comma separated.
    pub fn not_supported(path: &FieldPath, value: impl Into<Value>, supported: &[String]) -> Self {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self::new(
            path,
            FieldErrorKind::NotSupported,
            Some(value.into()),
            detail,
        )
    }
    pub fn too_long(path: &FieldPath, max: i64) -> Self {
        Self::new(
            path,
            FieldErrorKind::TooLong,
            None,
            format!("may not be longer than {max}"),
        )
    }
    pub fn too_many(path: &FieldPath, actual: usize, max: i64) -> Self {
        Self::new(
            path,
            FieldErrorKind::TooMany,
            Some(Value::from(actual)),
            format!("must have at most {max} items"),
        )
    }

    fn new(
        path: &FieldPath,
        kind: FieldErrorKind,
        value: Option<Value>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            field: path.as_str().to_string(),
            kind,
            value,
            message: detail.into(),
        }
    }

    /// The message without the field name (Go's `ErrorBody()`), used as `StatusCause.message`.
    pub fn body(&self) -> String {
        let mut s = self.kind.label().to_string();
        let shows_value = !matches!(
            self.kind,
            FieldErrorKind::Required | FieldErrorKind::Forbidden | FieldErrorKind::TooLong
        );
        if shows_value {
            let v = self.value.as_ref().unwrap_or(&Value::Null);
            s.push_str(": ");
            s.push_str(&go_value(v));
        }
        if !self.message.is_empty() {
            s.push_str(": ");
            s.push_str(&self.message);
        }
        s
    }
}

/// Go's `field.Error.Error()`: `<field>: <body>`.
impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

impl std::error::Error for FieldError {}

/// Message of a 422 Invalid status: `<Kind.group> "<name>" is invalid: <errors>`.
///
/// `qualified_kind` is `Kind.group` (e.g. `CustomResourceDefinition.apiextensions.k8s.io`, or just
/// the kind for the core group). Like Go's aggregate, identical messages are shown once and more
/// than one error is bracketed.
pub fn status_message(qualified_kind: &str, name: &str, errs: &[FieldError]) -> String {
    let mut seen = std::collections::HashSet::new();
    let msgs: Vec<String> = errs
        .iter()
        .map(|e| e.to_string())
        .filter(|m| seen.insert(m.clone()))
        .collect();
    let head = format!("{} {} is invalid", qualified_kind, go_quote(name));
    match msgs.len() {
        0 => head,
        1 => format!("{head}: {}", msgs[0]),
        _ => format!("{head}: [{}]", msgs.join(", ")),
    }
}

/// `details.causes` of the 422 status: one `{reason, message, field}` per error, in order.
pub fn causes(errs: &[FieldError]) -> Value {
    Value::Array(
        errs.iter()
            .map(|e| {
                let mut c = json!({ "reason": e.kind.reason(), "message": e.body() });
                if !e.field.is_empty() {
                    c["field"] = Value::String(e.field.clone());
                }
                c
            })
            .collect(),
    )
}

/// A field path in apimachinery notation: `child` adds `.name`, `index` adds `[i]`, `key` adds `[k]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(String::new())
    }
    pub fn new(name: &str) -> Self {
        FieldPath(name.to_string())
    }
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            FieldPath(name.to_string())
        } else {
            FieldPath(format!("{}.{}", self.0, name))
        }
    }
    pub fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{}]", self.0, i))
    }
    pub fn key(&self, k: &str) -> Self {
        FieldPath(format!("{}[{}]", self.0, k))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Go's `%q` for the strings that occur in practice; JSON string escaping coincides with it for
/// quotes, backslashes and the common control characters.
pub(super) fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// Go's `%v` for a float64: integral values print without a fraction, like `10` not `10.0`.
pub(super) fn go_float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e21 {
        format!("{}", f as i128)
    } else {
        format!("{f}")
    }
}

/// How `field.Error` prints a bad value: strings quoted, scalars bare, anything else as JSON.
pub(super) fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => go_float(f),
            _ => n.to_string(),
        },
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_match_apimachinery() {
        let p = FieldPath::new("spec").child("group");
        let cases: Vec<(FieldError, &str)> = vec![
            (
                FieldError::invalid(&p, "foo", "should be a domain with at least one dot"),
                r#"spec.group: Invalid value: "foo": should be a domain with at least one dot"#,
            ),
            (FieldError::required(&p, ""), "spec.group: Required value"),
            (
                FieldError::forbidden(&p, "nope"),
                "spec.group: Forbidden: nope",
            ),
            (
                FieldError::duplicate(&p.index(1), 3),
                "spec.group[1]: Duplicate value: 3",
            ),
            (
                FieldError::not_supported(&p, "x", &["a".into(), "b".into()]),
                r#"spec.group: Unsupported value: "x": supported values: "a", "b""#,
            ),
            (
                FieldError::too_long(&p, 5),
                "spec.group: Too long: may not be longer than 5",
            ),
            (
                FieldError::too_many(&p, 4, 3),
                "spec.group: Too many: 4: must have at most 3 items",
            ),
            (
                FieldError::invalid(&p, 2.5, ""),
                "spec.group: Invalid value: 2.5",
            ),
            (
                FieldError::invalid(&p, 10.0, ""),
                "spec.group: Invalid value: 10",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn status_message_aggregates_like_go() {
        let p = FieldPath::new("spec").child("group");
        let one = FieldError::required(&p, "");
        let two = FieldError::required(&FieldPath::new("spec").child("scope"), "");
        let k = "CustomResourceDefinition.apiextensions.k8s.io";
        assert_eq!(
            status_message(k, "a.b", &[]),
            r#"CustomResourceDefinition.apiextensions.k8s.io "a.b" is invalid"#
        );
        assert_eq!(
            status_message(k, "a.b", &[one.clone(), one.clone()]),
            r#"CustomResourceDefinition.apiextensions.k8s.io "a.b" is invalid: spec.group: Required value"#
        );
        assert_eq!(
            status_message(k, "a.b", &[one.clone(), two]),
            r#"CustomResourceDefinition.apiextensions.k8s.io "a.b" is invalid: [spec.group: Required value, spec.scope: Required value]"#
        );
        let c = causes(&[one, FieldError::invalid(&FieldPath::root(), "", "x")]);
        assert_eq!(
            c[0],
            json!({"reason": "FieldValueRequired", "message": "Required value", "field": "spec.group"})
        );
        assert!(c[1].get("field").is_none());
    }

    #[test]
    fn paths_use_apimachinery_notation() {
        let p = FieldPath::root()
            .child("spec")
            .child("versions")
            .index(0)
            .child("schema")
            .key("x");
        assert_eq!(p.as_str(), "spec.versions[0].schema[x]");
    }
}
