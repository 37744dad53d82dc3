//! Rampart's own operations endpoints under `/rampart/v1/` (certificate revocation, secrets
//! encryption status and key rotation), used by the `rampart` CLI with the admin kubeconfig.
//!
//! Invariant: only members of `system:masters` reach these; everyone else gets 403. They are
//! not Kubernetes resources, so they take and return plain JSON, errors as `metav1.Status`.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use super::body::{error_response, json_response, Body};
use super::pki_ops;
use super::status::ApiError;
use super::State;
use crate::auth::UserInfo;

pub(super) async fn serve(
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
    let body = match super::body::read(req.into_body(), content_length).await {
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
        _ => error_response(&ApiError::new(
            404,
            "NotFound",
            format!("{method} {path}: no such operation"),
        )),
    }
}
