//! Rampart's own operations endpoints under `/rampart/v1/` (certificate revocation, secrets
//! encryption status and key rotation), used by the `rampart` CLI with the admin kubeconfig.
//!
//! Invariant: only members of `system:masters` reach these; everyone else gets 403. They are
//! not Kubernetes resources, so they take and return plain JSON, errors as `metav1.Status`.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use super::pki_ops;
use crate::apiserver::edge::body::{error_response, json_response, Body};
use crate::apiserver::status::ApiError;
use crate::apiserver::State;
use crate::auth::UserInfo;

const ENCRYPT_STATUS: &str = "/rampart/v1/secrets-encrypt/status";
const ENCRYPT_ROTATE: &str = "/rampart/v1/secrets-encrypt/rotate-keys";
const SNAPSHOTS: &str = "/rampart/v1/snapshots";

pub(in crate::apiserver) async fn serve(
    state: &Arc<State>,
    user: &UserInfo,
    path: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    if !user.groups.iter().any(|g| g == "system:masters") {
        return error_response(&ApiError::forbidden(format!(
            "user \"{}\" cannot use {path}: Rampart operations need the system:masters group",
            user.name
        )));
    }
    let method = req.method().clone();
    let content_length = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = match crate::apiserver::edge::body::read(req.into_body(), content_length).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let done = |r: Result<serde_json::Value, ApiError>| match r {
        Ok(v) => json_response(200, &v),
        Err(e) => error_response(&e),
    };
    match (method.as_str(), path) {
        ("GET", "/rampart/v1/certificates") => done(pki_ops::inventory(state).await),
        ("POST", "/rampart/v1/certificates/rotate") => done(pki_ops::rotate(state, &body).await),
        ("POST", "/rampart/v1/certificates/rotate-ca") => {
            done(pki_ops::rotate_ca(state, &body).await)
        }
        ("GET", "/rampart/v1/certificates/revocations") => {
            json_response(200, &pki_ops::revocations(state))
        }
        ("POST", "/rampart/v1/certificates/revocations") => {
            done(pki_ops::revoke(state, &body).await)
        }
        ("GET", ENCRYPT_STATUS) | ("POST", ENCRYPT_ROTATE) => secrets_encrypt(state, path).await,
        ("GET", SNAPSHOTS) | ("POST", SNAPSHOTS) => snapshots(state, &method, &body).await,
        (_, SNAPSHOTS) => error_response(&ApiError::method_not_allowed(format!(
            "{method} is not supported on {path}"
        ))),
        (_, ENCRYPT_STATUS) | (_, ENCRYPT_ROTATE) => error_response(&ApiError::method_not_allowed(
            format!("{method} is not supported on {path}"),
        )),
        _ => error_response(&ApiError::new(
            404,
            "NotFound",
            format!("{method} {path}: no such operation"),
        )),
    }
}

/// Secrets encryption: `GET .../status` reports keys and rotation; `POST .../rotate-keys` starts
/// a rotation in the background (202 with the status; 409 if one is already running).
async fn secrets_encrypt(state: &Arc<State>, path: &str) -> Response<Body> {
    use crate::store::encrypted::rotation::Error;
    let Some(rotation) = &state.encryption else {
        return error_response(&ApiError::new(
            404,
            "NotFound",
            "secrets encryption is not enabled on this server",
        ));
    };
    let (result, code) = if path == ENCRYPT_ROTATE {
        (rotation.start().await, 202)
    } else {
        (rotation.status().await, 200)
    };
    match result {
        Ok(status) => match serde_json::to_value(&status) {
            Ok(v) => json_response(code, &v),
            Err(e) => error_response(&ApiError::internal(e.to_string())),
        },
        Err(Error::AlreadyRunning) => error_response(&ApiError::new(
            409,
            "Conflict",
            "a secrets encryption key rotation is already running; see rampart secrets-encrypt status",
        )),
        Err(e) => error_response(&ApiError::internal(format!(
            "secrets encryption: {e}"
        ))),
    }
}

/// Snapshots: `GET` lists the server's snapshots; `POST {"name": N, "stream": bool}` takes one
/// now, kept in `DATA_DIR/snapshots/` or, with `stream`, returned base64-encoded as
/// `{"name", "snapshot"}` and kept nowhere on the server.
async fn snapshots(state: &Arc<State>, method: &http::Method, body: &[u8]) -> Response<Body> {
    use crate::store::snapshot::Error;
    let Some(snapshotter) = &state.snapshots else {
        return error_response(&ApiError::new(
            404,
            "NotFound",
            "snapshots are not available on this server: its datastore is an external etcd; back it up with `etcdctl snapshot save` and keep DATA_DIR/pki and DATA_DIR/encryption",
        ));
    };
    if method == http::Method::GET {
        return match snapshotter.list() {
            Ok(list) => json_response(200, &serde_json::json!({ "items": list })),
            Err(e) => error_response(&ApiError::internal(format!("snapshots: {e}"))),
        };
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SaveRequest {
        name: String,
        #[serde(default)]
        stream: bool,
    }
    let req: SaveRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error_response(&ApiError::bad_request(format!(
                "snapshot request: {e} (expected {{\"name\": NAME, \"stream\": BOOL}})"
            )))
        }
    };
    let bad = |e: Error| match e {
        Error::Name(_) => ApiError::bad_request(e.to_string()),
        Error::Restore(_) | Error::KeyringBusy => ApiError::new(409, "Conflict", e.to_string()),
        other => ApiError::internal(format!("snapshot: {other}")),
    };
    if req.stream {
        match snapshotter.save_to_bytes(&req.name).await {
            Ok(bytes) => {
                use base64::Engine;
                let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
                json_response(
                    200,
                    &serde_json::json!({ "name": req.name, "snapshot": encoded }),
                )
            }
            Err(e) => error_response(&bad(e)),
        }
    } else {
        match snapshotter.save(&req.name).await {
            Ok(listing) => match serde_json::to_value(&listing) {
                Ok(v) => json_response(201, &v),
                Err(e) => error_response(&ApiError::internal(e.to_string())),
            },
            Err(e) => error_response(&bad(e)),
        }
    }
}
