//! Admission: after authorization, every create, update (patch) and delete of an API object
//! is checked on the object itself, in upstream's order: mutating built-ins (defaulting,
//! ServiceAccount, LimitRanger defaults), then validating built-ins (NamespaceLifecycle,
//! NodeRestriction, LimitRanger, ResourceQuota), then the Cedar admission policies — the Pod
//! Security Standards shipped in `policies/admission/`, operators' files and `CedarPolicy`
//! objects.
//!
//! This module holds the decisions (pure functions and the Cedar engine); the API server's
//! `apiserver::admission` loads what they need from the store and applies them.

pub mod engine;
pub mod facts;
pub mod limits;
pub mod node_restriction;
pub mod quantity;
pub mod quota;

pub use engine::{Admission, AdmissionRequest, Operation, Verdict};
pub use facts::PodFacts;

/// The Pod Security level enforced in a namespace with these labels (upstream's
/// `pod-security.kubernetes.io/enforce`): baseline by default (Rampart's choice; upstream's
/// default is privileged), kube-system exempt, an unknown value fails closed to restricted.
/// Returns (level, `<level>:<version>` for messages).
pub fn pod_security_level(namespace: &str, labels: Option<&serde_json::Value>) -> (String, String) {
    if namespace == "kube-system" {
        return ("privileged".into(), "privileged:latest".into());
    }
    let label = |k: &str| labels.and_then(|l| l[k].as_str()).map(str::to_string);
    let level = match label("pod-security.kubernetes.io/enforce").as_deref() {
        None => "baseline".to_string(),
        Some(l @ ("privileged" | "baseline" | "restricted")) => l.to_string(),
        Some(_) => "restricted".to_string(),
    };
    let version = label("pod-security.kubernetes.io/enforce-version")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "latest".into());
    let policy = format!("{level}:{version}");
    (level, policy)
}
