//! Admission: after authorization, every create, update (patch) and delete of an API object
//! is checked on the object itself, in upstream's order: mutating built-ins (defaulting,
//! ServiceAccount, LimitRanger defaults), then validating built-ins (NamespaceLifecycle,
//! NodeRestriction, LimitRanger, ResourceQuota), then the Cedar admission policies — the Pod
//! Security Standards shipped in `policies/admission/`, operators' files and `CedarPolicy`
//! objects.
//!
//! Pod Security runs in upstream's three modes (`pod_security`): enforce denies, warn adds a
//! `Warning` header, audit adds an audit annotation; workloads' pod templates get warn and
//! audit only.
//!
//! This module holds the decisions (pure functions and the Cedar engine); the API server's
//! `apiserver::admission` loads what they need from the store and applies them.

pub mod engine;
pub mod facts;
pub mod limits;
pub mod node_restriction;
pub mod pod_security;
pub use crate::api::quantity;
pub mod quota;

pub use engine::{Admission, AdmissionRequest, Operation, Verdict};
pub use facts::PodFacts;

/// The Pod Security level enforced in a namespace with these labels and its
/// `<level>:<version>` name (see [`pod_security::NamespacePolicy`]).
pub fn pod_security_level(namespace: &str, labels: Option<&serde_json::Value>) -> (String, String) {
    let p = pod_security::NamespacePolicy::of(namespace, labels);
    let policy = p.enforce.policy();
    (p.enforce.level, policy)
}
