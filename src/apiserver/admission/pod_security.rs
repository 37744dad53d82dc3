//! Pod Security on the write path, as upstream's PodSecurity plugin: which policy a
//! namespace's labels select, the warn and audit modes for pods and workload templates, and
//! the namespace side (labels validated; tightening `enforce` warns about the existing pods
//! it would reject). The enforce decision itself is the Cedar evaluation in `validate`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{get, list};
use crate::apiserver::context::Ctx;
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::storage::Builtin;
use crate::auth::admission::pod_security::{has_pod_template, validate_labels, NamespacePolicy};
use crate::auth::admission::{Admission, AdmissionRequest};

pub const ENFORCE_POLICY: &str = "pod-security.kubernetes.io/enforce-policy";
pub const AUDIT_VIOLATIONS: &str = "pod-security.kubernetes.io/audit-violations";
/// Upstream stops listing offending pods after this many, to keep the response small.
const MAX_POD_WARNINGS: usize = 10;

/// The policy for pods in `ns`.
pub async fn namespace_policy(ctx: &Ctx, ns: &str) -> ApiResult<NamespacePolicy> {
    let labels = get(&ctx.state, &Builtin::Namespaces.key("", ns))
        .await?
        .map(|n| n["metadata"]["labels"].clone());
    Ok(NamespacePolicy::of(ns, labels.as_ref()))
}

/// Whether `ctx` writes objects whose pod template warn and audit check.
pub fn is_workload(ctx: &Ctx) -> bool {
    has_pod_template(&ctx.ri.group, &ctx.ri.kind)
}

/// What warn and audit mode add to a request: `Warning`s for the client and audit
/// annotations. `pod` is the pod itself or the workload's template pod; `enforced` says
/// whether the request is about to be rejected (upstream adds no warnings then).
pub fn warn_and_audit(
    adm: &Admission,
    req: &AdmissionRequest<'_>,
    policy: &NamespacePolicy,
    pod: &Value,
    rejected: bool,
) -> (Vec<String>, BTreeMap<String, String>) {
    let mut warnings = Vec::new();
    let mut annotations = BTreeMap::new();
    if let Some(audit) = &policy.audit {
        if let Some(msg) = adm.pod_security_violations(req, pod, &audit.level, &audit.policy()) {
            annotations.insert(AUDIT_VIOLATIONS.to_string(), msg);
        }
    }
    if let Some(warn) = policy.warn.as_ref().filter(|_| !rejected) {
        if let Some(msg) = adm.pod_security_violations(req, pod, &warn.level, &warn.policy()) {
            warnings.push(msg);
        }
    }
    (warnings, annotations)
}

/// Namespace creates and updates: Pod Security labels must be valid (422, as upstream);
/// an update that changes `enforce` warns about existing pods the new level would reject.
pub async fn check_namespace(
    ctx: &Ctx,
    adm: &Admission,
    req: &AdmissionRequest<'_>,
    obj: &Value,
    old: Option<&Value>,
) -> ApiResult<Vec<String>> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let labels = &obj["metadata"]["labels"];
    let errs = validate_labels(Some(labels));
    if !errs.is_empty() {
        return Err(ApiError::invalid(&ctx.ri, name, errs));
    }
    let Some(old) = old else {
        return Ok(Vec::new());
    };
    let new_policy = NamespacePolicy::of(name, Some(labels));
    let old_policy = NamespacePolicy::of(name, Some(&old["metadata"]["labels"]));
    if new_policy.enforce == old_policy.enforce || new_policy.enforce.is_privileged() {
        return Ok(Vec::new());
    }
    let level = &new_policy.enforce;
    let mut offenders = Vec::new();
    for pod in list(&ctx.state, Builtin::Pods.in_namespace(name)).await? {
        if offenders.len() >= MAX_POD_WARNINGS {
            break;
        }
        if let Some(msg) = adm.pod_security_violations(req, &pod, &level.level, &level.policy()) {
            let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
            // Drop the "would violate PodSecurity ..." lead-in: the first warning says it.
            let checks = msg.split_once("\": ").map_or(msg.as_str(), |(_, c)| c);
            offenders.push(format!("{pod_name}: {checks}"));
        }
    }
    if offenders.is_empty() {
        return Ok(Vec::new());
    }
    let mut warnings = vec![format!(
        "existing pods in namespace {name:?} violate the new PodSecurity enforce level {:?}",
        level.policy()
    )];
    warnings.extend(offenders);
    Ok(warnings)
}
