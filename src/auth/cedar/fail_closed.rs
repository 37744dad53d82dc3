//! The one fail-closed rule for Cedar evaluations, shared by the authorizer (`engine`) and
//! the admission engine (`auth::admission`).
//!
//! Cedar skips a policy whose evaluation errors and only reports it in the response's
//! diagnostics: an erroring `forbid` would therefore let a request through. Every Cedar
//! evaluation in Rampart goes through [`check`] before its decision is read, and any error
//! denies, naming the policies that failed.

use cedar_policy::{AuthorizationError, Response};

use crate::auth::Decision;

/// `Err` with a denying [`Decision`] when any policy failed to evaluate. `what` names the
/// kind of policy in the reason ("policy", "admission policy"), which reads
/// "`what` evaluation failed (ids); denied".
pub fn check(response: &Response, what: &str) -> Result<(), Decision> {
    let failed: Vec<String> = response
        .diagnostics()
        .errors()
        .map(|e| match e {
            AuthorizationError::PolicyEvaluationError(p) => p.policy_id().to_string(),
        })
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    let errors: Vec<String> = response
        .diagnostics()
        .errors()
        .map(|e| e.to_string())
        .collect();
    tracing::error!(?errors, "{what} evaluation failed; denying the request");
    let reason = format!("{what} evaluation failed ({}); denied", failed.join(", "));
    Err(Decision::evaluation_failed(failed, reason))
}
