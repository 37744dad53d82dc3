//! The request path's side of the audit log (`auth::audit`): what is known when a request
//! arrives (`Start`), what authentication and authorization decided (`Outcome`), and the line
//! written once the response is ready (`finish`).
//!
//! Stages: a request's line is written when its response is ready and before it is returned,
//! with stage `ResponseComplete`; a watch's line is written when the watch starts streaming,
//! with stage `ResponseStarted` (upstream's semantics for long-running requests), and nothing
//! is written when it ends. Unauthenticated requests are recorded as `system:anonymous` in
//! `system:unauthenticated`, with decision `deny`.
//!
//! Bounded lines: what a client chooses (the URI, user agent, names in `objectRef`, and the
//! messages that echo them) is cut to a fixed size ([`MAX_URI`], [`MAX_FIELD`],
//! [`MAX_MESSAGE`]) and the cut fields are named in `audit.rampart.io/truncated`, so one
//! request writes at most a few KiB besides the bodies a policy asks for (themselves capped at
//! [`BODY_CAP`]). Requests nobody authenticated for go through the sink's flood aggregation
//! (`auth::audit::Sink::record_stranger`).

use std::net::SocketAddr;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{error_response, full, Body};
use super::request::RequestInfo;
use crate::apiserver::status::ApiError;
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
/// The longest `requestURI` kept.
pub const MAX_URI: usize = 4096;
/// The longest user agent, user name or `objectRef` field kept.
pub const MAX_FIELD: usize = 1024;
/// The longest status message or authorization reason kept.
pub const MAX_MESSAGE: usize = 4096;

/// Cut `value` to at most `max` bytes (on a character boundary), noting `field` when it was.
fn cap(value: &mut String, max: usize, field: &'static str, truncated: &mut Vec<&'static str>) {
    if value.len() <= max {
        return;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value.truncate(end);
    truncated.push(field);
}

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

pub(in crate::apiserver) struct Start {
    received: jiff::Timestamp,
    uri: String,
    user_agent: String,
    peer: SocketAddr,
    /// Fields cut to their cap so far.
    truncated: Vec<&'static str>,
}

impl Start {
    pub fn new(req: &Request<Incoming>, peer: SocketAddr) -> Start {
        let mut truncated = Vec::new();
        let uri = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or_else(|| req.uri().path());
        let user_agent = req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // Only the capped prefix is copied: a 60 KB URI costs 4 KiB here.
        let mut uri = uri[..floor_boundary(uri, MAX_URI + 1)].to_string();
        cap(&mut uri, MAX_URI, "requestURI", &mut truncated);
        let mut user_agent = user_agent[..floor_boundary(user_agent, MAX_FIELD + 1)].to_string();
        cap(&mut user_agent, MAX_FIELD, "userAgent", &mut truncated);
        Start {
            received: jiff::Timestamp::now(),
            uri,
            user_agent,
            peer,
            truncated,
        }
    }
}

/// The largest character boundary of `s` at or below `max`.
fn floor_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

#[derive(Default)]
pub(in crate::apiserver) struct Outcome {
    pub info: Option<RequestInfo>,
    pub user: Option<UserInfo>,
    /// Who the request acted as, when it impersonated someone (`user` is the real caller).
    pub impersonated: Option<UserInfo>,
    pub decision: Option<Decision>,
}

pub(in crate::apiserver) fn unavailable() -> Response<Body> {
    error_response(&ApiError::new(
        503,
        "ServiceUnavailable",
        "the audit log cannot be written",
    ))
}

/// Writes the request's line; if that fails the response becomes the 503.
pub(in crate::apiserver) async fn finish(
    sink: &Sink,
    mut start: Start,
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
    let mut truncated: Vec<&str> = std::mem::take(&mut start.truncated);
    let mut status = status;
    cap(
        &mut status.message,
        MAX_MESSAGE,
        "responseStatus.message",
        &mut truncated,
    );
    cap(
        &mut status.reason,
        MAX_FIELD,
        "responseStatus.reason",
        &mut truncated,
    );
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
        (Some(d), _) if d.is_allowed() => ("allow", d.policies().to_vec(), None),
        (Some(d), _) => ("deny", d.policies().to_vec(), Some(d.reason().to_string())),
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
    if let Some(mut reason) = reason {
        cap(
            &mut reason,
            MAX_MESSAGE,
            "authorization.k8s.io/reason",
            &mut truncated,
        );
        annotations.insert("authorization.k8s.io/reason".to_string(), reason);
    }
    let mut policies = policies;
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
    let stranger = outcome.user.is_none();
    let mut event = Event {
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
    if let Some(o) = event.object_ref.as_mut() {
        for (value, field) in [
            (&mut o.resource, "objectRef.resource"),
            (&mut o.namespace, "objectRef.namespace"),
            (&mut o.name, "objectRef.name"),
            (&mut o.api_group, "objectRef.apiGroup"),
            (&mut o.api_version, "objectRef.apiVersion"),
            (&mut o.subresource, "objectRef.subresource"),
        ] {
            cap(value, MAX_FIELD, field, &mut truncated);
        }
    }
    cap(
        &mut event.user.username,
        MAX_FIELD,
        "user.username",
        &mut truncated,
    );
    if let Some(u) = event.impersonated_user.as_mut() {
        cap(
            &mut u.username,
            MAX_FIELD,
            "impersonatedUser.username",
            &mut truncated,
        );
    }
    if !truncated.is_empty() {
        event
            .annotations
            .insert(TRUNCATED.to_string(), truncated.join(","));
    }
    let recorded = if stranger {
        sink.record_stranger(start.peer.ip(), event)
    } else {
        sink.record(event)
    };
    match recorded {
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
