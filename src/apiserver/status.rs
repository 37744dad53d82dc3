//! API errors as `metav1.Status`, with upstream's codes, reasons and message wording
//! (`pods "web" not found`, `Operation cannot be fulfilled on ...`), so kubectl prints what
//! users know from a real cluster.

use serde_json::{json, Value};

use crate::api::ResourceInfo;
use crate::store;

/// An error answered to the client as a `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

pub type ApiResult<T> = Result<T, ApiError>;

fn details(ri: &ResourceInfo, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": ri.plural});
    if !ri.group.is_empty() {
        d["group"] = json!(ri.group);
    }
    d
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "Unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn not_found(ri: &ResourceInfo, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", ri.group_resource()),
        )
        .with_details(details(ri, name))
    }

    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn already_exists(ri: &ResourceInfo, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", ri.group_resource()),
        )
        .with_details(details(ri, name))
    }

    pub fn conflict(ri: &ResourceInfo, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                ri.group_resource()
            ),
        )
        .with_details(details(ri, name))
    }

    pub fn modified(ri: &ResourceInfo, name: &str) -> Self {
        Self::conflict(
            ri,
            name,
            "the object has been modified; please apply your changes to the latest version and \
             try again",
        )
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {content_type:?})"),
        )
    }

    /// 422 with field causes, worded as upstream: `Kind "name" is invalid: field: message`.
    pub fn invalid(ri: &ResourceInfo, name: &str, causes: Vec<(String, String)>) -> Self {
        let summary = causes
            .iter()
            .map(|(f, m)| format!("{f}: {m}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut d = details(ri, name);
        d["kind"] = json!(ri.kind);
        d["causes"] = causes
            .iter()
            .map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f}))
            .collect();
        let message = if ri.group.is_empty() {
            format!("{} \"{name}\" is invalid: {summary}", ri.kind)
        } else {
            format!("{}.{} \"{name}\" is invalid: {summary}", ri.kind, ri.group)
        };
        Self::new(422, "Invalid", message).with_details(d)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// The `Status` body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }

    /// The `Status` body as upstream's apiserver writes it: the fields of Go's `metav1.Status`
    /// in declaration order (`kind, apiVersion, metadata, status, message, reason, details,
    /// code`, empty ones omitted as `omitempty` does, `"metadata":{}` kept since Go never omits
    /// a struct), `details` as `StatusDetails` (`name, group, kind, uid, causes,
    /// retryAfterSeconds`), each cause as `reason, message, field`, and the newline Go's
    /// `json.Encoder` ends every response with. Clients compare these bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        status_bytes(
            "Failure",
            &self.message,
            self.reason,
            self.details.as_ref(),
            self.code,
        )
    }

    /// Map a store failure for object `name` of `ri`.
    pub fn from_store(err: store::Error, ri: &ResourceInfo, name: &str) -> Self {
        match err {
            store::Error::AlreadyExists { .. } => Self::already_exists(ri, name),
            store::Error::NotFound { .. } => Self::not_found(ri, name),
            store::Error::Conflict { .. } => Self::modified(ri, name),
            store::Error::Compacted {
                requested,
                compacted,
            } => Self::gone(format!(
                "too old resource version: {requested} ({compacted})"
            )),
            store::Error::FutureRevision { requested, current } => Self::new(
                504,
                "Timeout",
                format!("Too large resource version: {requested}, current: {current}"),
            ),
            store::Error::WatchTooSlow => {
                Self::gone("watch fell too far behind; re-list and watch again")
            }
            store::Error::NoSpace => Self::new(
                507,
                "InternalError",
                "the server's disk is full; the write was not stored",
            ),
            store::Error::Closed => Self::unavailable("the server is shutting down"),
            other => Self::internal(format!("storage error: {other}")),
        }
    }
}

/// Upstream's forbidden message (`pods "web" is forbidden: User "bob" cannot get resource
/// "pods" in API group "" in the namespace "default"`), followed by the authorizer's reason,
/// which names the deciding policies. It names only the caller's own request.
pub fn forbidden(attrs: &crate::auth::Attributes<'_>, reason: &str) -> ApiError {
    let user = &attrs.user.name;
    let mut msg = if attrs.resource_request {
        let gr = if attrs.api_group.is_empty() {
            attrs.resource.to_string()
        } else {
            format!("{}.{}", attrs.resource, attrs.api_group)
        };
        let what = if attrs.name.is_empty() {
            format!("{gr} is forbidden")
        } else {
            format!("{gr} \"{}\" is forbidden", attrs.name)
        };
        let resource = if attrs.subresource.is_empty() {
            attrs.resource.to_string()
        } else {
            format!("{}/{}", attrs.resource, attrs.subresource)
        };
        let scope = if attrs.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{}\"", attrs.namespace)
        };
        format!(
            "{what}: User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
            attrs.verb, attrs.api_group
        )
    } else {
        format!(
            "forbidden: User \"{user}\" cannot {} path \"{}\"",
            attrs.verb, attrs.path
        )
    };
    if !reason.is_empty() {
        msg.push_str(": ");
        msg.push_str(reason);
    }
    let mut err = ApiError::forbidden(msg);
    if attrs.resource_request {
        let mut details = serde_json::json!({"group": attrs.api_group, "kind": attrs.resource});
        if !attrs.name.is_empty() {
            details["name"] = serde_json::json!(attrs.name);
        }
        err = err.with_details(details);
    }
    err
}

impl From<crate::apiserver::merge::PatchError> for ApiError {
    fn from(e: crate::apiserver::merge::PatchError) -> Self {
        use crate::apiserver::merge::PatchError as P;
        match &e {
            P::Unapplicable(_) => ApiError::new(422, "Invalid", e.to_string()),
            P::UnsupportedKind { .. } => ApiError::new(415, "UnsupportedMediaType", e.to_string()),
            P::TooLarge(_) => ApiError::too_large(e.to_string()),
            P::Malformed(_) | P::TooDeep(_) | P::NotAnObject(_) => {
                ApiError::bad_request(e.to_string())
            }
        }
    }
}

impl ApiError {
    /// A server-side apply failure; conflicts carry upstream's `FieldManagerConflict` causes.
    pub fn from_apply(
        e: crate::apiserver::merge::ApplyError,
        ri: &ResourceInfo,
        name: &str,
    ) -> Self {
        use crate::apiserver::merge::ApplyError as A;
        match &e {
            A::Conflicts(conflicts) => {
                let mut d = details(ri, name);
                d["causes"] = conflicts
                    .iter()
                    .map(|c| {
                        json!({
                            "reason": "FieldManagerConflict",
                            "message": format!("conflict with {}", c.manager_description()),
                            "field": c.field_path,
                        })
                    })
                    .collect();
                ApiError::new(409, "Conflict", e.to_string()).with_details(d)
            }
            A::InvalidConfig(_) | A::TooDeep(_) => ApiError::bad_request(e.to_string()),
        }
    }
}

fn is_empty_str(s: &&str) -> bool {
    s.is_empty()
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(serde::Serialize)]
struct WireCause<'a> {
    #[serde(skip_serializing_if = "is_empty_str")]
    reason: &'a str,
    #[serde(skip_serializing_if = "is_empty_str")]
    message: &'a str,
    #[serde(skip_serializing_if = "is_empty_str")]
    field: &'a str,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct WireDetails<'a> {
    #[serde(skip_serializing_if = "is_empty_str")]
    name: &'a str,
    #[serde(skip_serializing_if = "is_empty_str")]
    group: &'a str,
    #[serde(skip_serializing_if = "is_empty_str")]
    kind: &'a str,
    #[serde(skip_serializing_if = "is_empty_str")]
    uid: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    causes: Vec<WireCause<'a>>,
    #[serde(skip_serializing_if = "is_zero")]
    retry_after_seconds: i64,
}

#[derive(serde::Serialize)]
struct Empty {}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct WireStatus<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: Empty,
    #[serde(skip_serializing_if = "is_empty_str")]
    status: &'a str,
    #[serde(skip_serializing_if = "is_empty_str")]
    message: &'a str,
    #[serde(skip_serializing_if = "is_empty_str")]
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<WireDetails<'a>>,
    #[serde(skip_serializing_if = "is_zero")]
    code: i64,
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// A `metav1.Status` in upstream's byte layout (see [`ApiError::to_bytes`]); `details` is
/// read from our JSON form (`name`, `group`, `kind`, `uid`, `causes`, `retryAfterSeconds`).
pub fn status_bytes(
    status: &str,
    message: &str,
    reason: &str,
    details: Option<&Value>,
    code: u16,
) -> Vec<u8> {
    let details = details.map(|d| WireDetails {
        name: s(&d["name"]),
        group: s(&d["group"]),
        kind: s(&d["kind"]),
        uid: s(&d["uid"]),
        causes: d["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| WireCause {
                reason: s(&c["reason"]),
                message: s(&c["message"]),
                field: s(&c["field"]),
            })
            .collect(),
        retry_after_seconds: d["retryAfterSeconds"].as_i64().unwrap_or(0),
    });
    let wire = WireStatus {
        kind: "Status",
        api_version: "v1",
        metadata: Empty {},
        status,
        message,
        reason,
        details,
        code: i64::from(code),
    };
    let mut out = serde_json::to_vec(&wire).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bytes_are_upstreams() {
        let ri = crate::api::resources::builtin()
            .iter()
            .find(|r| r.kind == "ConfigMap")
            .unwrap();
        let e = ApiError::not_found(ri, "x");
        assert_eq!(
            String::from_utf8(e.to_bytes()).unwrap(),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"configmaps \\\"x\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"x\",\"kind\":\"configmaps\"},\"code\":404}\n"
        );
        let inv = ApiError::invalid(ri, "x", vec![("data".into(), "Invalid value: 1".into())]);
        let text = String::from_utf8(inv.to_bytes()).unwrap();
        assert!(text.contains(r#""details":{"name":"x","kind":"ConfigMap","causes":[{"reason":"FieldValueInvalid","message":"Invalid value: 1","field":"data"}]},"code":422}"#), "{text}");
    }
}
