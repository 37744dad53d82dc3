//! The request path's side of the audit log (`auth::audit`): what is known when a request
//! arrives (`Start`), what authentication and authorization decided (`Outcome`), and the line
//! written once the response is ready (`finish`).
//!
//! Stages: a request's line is written when its response is ready and before it is returned,
//! with stage `ResponseComplete`; a watch's line is written when the watch starts streaming,
//! with stage `ResponseStarted` (upstream's semantics for long-running requests), and nothing
//! is written when it ends. Unauthenticated requests are recorded as `system:anonymous` in
//! `system:unauthenticated`, with decision `deny`.

use std::net::SocketAddr;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{error_response, full, Body};
use super::request::RequestInfo;
use super::status::ApiError;
use crate::auth::audit::{
    micro_timestamp, Event, Level, ObjectRef, PolicyRequest, ResponseStatus, Sink, User,
};
use crate::auth::{Decision, UserInfo};

/// Admission's verdict, attached by the write handlers to the response's extensions so the
/// audit line names the admission policies too (`admission.rampart.io/policies`).
#[derive(Debug, Clone, Default)]
pub struct AdmissionAudit {
    pub allowed: bool,
    /// Ids of the admission policies that denied the request (or that ran, when allowed).
    pub policies: Vec<String>,
    /// Audit annotations admission adds (upstream's `pod-security.kubernetes.io/*`, ...).
    pub annotations: std::collections::BTreeMap<String, String>,
    /// Warnings for the client (Pod Security's warn mode), sent as `Warning` headers.
    pub warnings: Vec<String>,
}

/// Bodies larger than this are left out of the audit line (annotated
/// `audit.rampart.io/truncated`), as upstream truncates oversized events.
pub const BODY_CAP: usize = 256 << 10;
const TRUNCATED: &str = "audit.rampart.io/truncated";

/// What the handlers saw of the request, attached to the response for its audit line.
#[derive(Debug, Clone, Default)]
pub struct RequestSeen {
    /// The request body as JSON, when the request's level is Request or more: `Some(None)`
    /// when it was captured but left out (too large, or not JSON).
    pub object: Option<Option<serde_json::Value>>,
    /// The name of a created object (not in the URL): upstream fills objectRef.name from it.
    pub created_name: Option<String>,
}

impl RequestSeen {
    /// Keep `body` (decoded from `len` bytes) for the line.
    pub fn keep(&mut self, len: usize, body: &serde_json::Value) {
        self.object = Some((len <= BODY_CAP).then(|| body.clone()));
    }
}

/// What the audit policy's rules are matched against, for this request.
fn policy_request<'a>(
    user: &'a UserInfo,
    info: &'a RequestInfo,
    path: &'a str,
) -> PolicyRequest<'a> {
    PolicyRequest {
        user: &user.name,
        groups: &user.groups,
        verb: &info.verb,
        resource_request: info.resource_request,
        group: &info.group,
        resource: &info.resource,
        subresource: &info.subresource,
        namespace: &info.namespace,
        name: &info.name,
        path,
    }
}

/// The level the policy gives this request, for handlers deciding whether to keep bodies.
/// Metadata (no capture) when no rule can ask for more.
pub fn level_for(sink: Option<&Sink>, user: &UserInfo, info: &RequestInfo, path: &str) -> Level {
    let Some(sink) = sink.filter(|s| s.policy().max_level() >= Level::Request) else {
        return Level::Metadata;
    };
    sink.policy()
        .level(&policy_request(user, info, path), "ResponseComplete")
}

pub(super) struct Start {
    received: jiff::Timestamp,
    uri: String,
    user_agent: String,
    peer: SocketAddr,
}

impl Start {
    pub fn new(req: &Request<Incoming>, peer: SocketAddr) -> Start {
        Start {
            received: jiff::Timestamp::now(),
            uri: req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| req.uri().path().to_string()),
            user_agent: req
                .headers()
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            peer,
        }
    }
}

#[derive(Default)]
pub(super) struct Outcome {
    pub info: Option<RequestInfo>,
    pub user: Option<UserInfo>,
    /// Who the request acted as, when it impersonated someone (`user` is the real caller).
    pub impersonated: Option<UserInfo>,
    pub decision: Option<Decision>,
}

pub(super) fn unavailable() -> Response<Body> {
    error_response(&ApiError::new(
        503,
        "ServiceUnavailable",
        "the audit log cannot be written",
    ))
}

/// Writes the request's line; if that fails the response becomes the 503.
pub(super) async fn finish(
    sink: &Sink,
    start: Start,
    outcome: Outcome,
    response: Response<Body>,
) -> Response<Body> {
    let code = response.status().as_u16();
    let info = outcome.info.unwrap_or_default();
    let user = outcome.user.clone().unwrap_or_else(|| UserInfo {
        name: "system:anonymous".into(),
        groups: vec!["system:unauthenticated".into()],
        ..Default::default()
    });
    let path = start.uri.split('?').next().unwrap_or("").to_string();
    let stage = if info.verb == "watch" && code < 300 {
        "ResponseStarted"
    } else {
        "ResponseComplete"
    };
    let level = sink
        .policy()
        .level(&policy_request(&user, &info, &path), stage);
    if level == Level::None {
        return response;
    }
    // Error bodies are small, complete Status objects: read their message and reason.
    let (response, status) = if code >= 400 {
        let (parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let text = |k: &str| v.get(k).and_then(|m| m.as_str()).unwrap_or("").to_string();
        let status = ResponseStatus {
            code,
            status: "Failure".into(),
            message: text("message"),
            reason: text("reason"),
        };
        (Response::from_parts(parts, full(bytes)), status)
    } else {
        let status = ResponseStatus {
            code,
            ..Default::default()
        };
        (response, status)
    };
    let mut truncated: Vec<&str> = Vec::new();
    let seen = response.extensions().get::<RequestSeen>().cloned();
    let request_object = match seen.as_ref().and_then(|s| s.object.clone()) {
        Some(Some(v)) if level >= Level::Request => Some(v),
        Some(None) if level >= Level::Request => {
            truncated.push("requestObject");
            None
        }
        _ => None,
    };
    let (response, response_object) =
        if level == Level::RequestResponse && stage == "ResponseComplete" && code < 400 {
            let (object, response) = response_body(response).await;
            if object.is_none() {
                truncated.push("responseObject");
            }
            (response, object)
        } else {
            (response, None)
        };
    let (decision, policies, reason) = match (&outcome.decision, &outcome.user) {
        (Some(d), _) if d.allowed => ("allow", d.policies.clone(), None),
        (Some(d), _) => ("deny", d.policies.clone(), Some(d.reason.clone())),
        // Only /cacerts is served without authenticating.
        (None, None) if code < 400 => ("allow", vec![], None),
        (None, _) => ("deny", vec![], None),
    };
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert(
        "authorization.k8s.io/decision".to_string(),
        if decision == "allow" {
            "allow"
        } else {
            "forbid"
        }
        .to_string(),
    );
    if let Some(reason) = reason {
        annotations.insert("authorization.k8s.io/reason".to_string(), reason);
    }
    let mut policies = policies;
    if !truncated.is_empty() {
        annotations.insert(TRUNCATED.to_string(), truncated.join(","));
    }
    if let Some(adm) = response.extensions().get::<AdmissionAudit>() {
        annotations.insert(
            "admission.rampart.io/decision".to_string(),
            if adm.allowed { "allow" } else { "deny" }.to_string(),
        );
        if !adm.policies.is_empty() {
            annotations.insert(
                "admission.rampart.io/policies".to_string(),
                adm.policies.join(","),
            );
        }
        policies.extend(adm.policies.iter().cloned());
        for (k, v) in &adm.annotations {
            annotations.insert(k.clone(), v.clone());
        }
    }
    let event = Event {
        kind: "Event".into(),
        api_version: "audit.k8s.io/v1".into(),
        level: level.as_str().into(),
        audit_id: uuid::Uuid::new_v4().to_string(),
        stage: stage.into(),
        request_uri: start.uri,
        verb: info.verb.clone(),
        user: User::from(user),
        impersonated_user: outcome.impersonated.map(User::from),
        source_ips: vec![start.peer.ip().to_string()],
        user_agent: start.user_agent,
        object_ref: info.resource_request.then(|| ObjectRef {
            resource: info.resource.clone(),
            namespace: info.namespace.clone(),
            name: match seen.as_ref().and_then(|s| s.created_name.clone()) {
                Some(n) if info.name.is_empty() => n,
                _ => info.name.clone(),
            },
            api_group: info.group.clone(),
            api_version: info.version.clone(),
            subresource: info.subresource.clone(),
        }),
        response_status: Some(status),
        request_object,
        response_object,
        request_received_timestamp: micro_timestamp(start.received),
        stage_timestamp: micro_timestamp(jiff::Timestamp::now()),
        annotations,
        decision: decision.into(),
        policies,
        prev_hash: String::new(),
        hash: None,
    };
    match sink.record(event) {
        Ok(()) => response,
        Err(_) => unavailable(),
    }
}

/// The response's JSON body for the line, and the response rebuilt. Only bodies of a known
/// size within [`BODY_CAP`] are read (a streaming body stays untouched); a body that is not
/// JSON (protobuf, table output is JSON) is left out.
async fn response_body(response: Response<Body>) -> (Option<serde_json::Value>, Response<Body>) {
    use hyper::body::Body as _;
    let fits = response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n as usize <= BODY_CAP);
    if !fits {
        return (None, response);
    }
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let object = serde_json::from_slice(&bytes).ok();
    (object, Response::from_parts(parts, full(bytes)))
}
