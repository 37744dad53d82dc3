//! Rampart's own operations endpoints under `/rampart/v1/` (certificate revocation, secrets
//! encryption status and key rotation), used by the `rampart` CLI with the admin kubeconfig.
//!
//! Invariant: only members of `system:masters` reach these; everyone else gets 403. They are
//! not Kubernetes resources, so they take and return plain JSON, errors as `metav1.Status`.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use super::body::{error_response, Body};
use super::status::ApiError;
use super::State;
use crate::auth::UserInfo;

pub(super) async fn serve(
    _state: &Arc<State>,
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
    match (method.as_str(), path) {
        _ => error_response(&ApiError::new(
            404,
            "NotFound",
            format!("{method} {path}: no such operation"),
        )),
    }
}
