//! CustomResourceDefinition semantics for the API server.
//!
//! This module owns everything that gives a CRD meaning beyond "a stored object":
//!
//! * [`set_crd_defaults`], then [`validate_crd`] / [`validate_crd_update`] /
//!   [`validate_crd_status`]: API defaulting and static validation of a CRD on create, update
//!   and status update, including the *structural schema* rules ([`structural`]) and the OpenAPI
//!   restrictions apiextensions-apiserver puts on `openAPIV3Schema`.
//! * [`conditions`] / [`reconcile_status`]: the `NamesAccepted` and `Established` conditions,
//!   `status.acceptedNames` and `status.storedVersions`, i.e. what upstream's naming and
//!   establishing controllers compute, collapsed into one synchronous step.
//! * [`validate_object`], [`prune`], [`apply_defaults`]: what happens to a custom object on its
//!   way into (and, for defaulting, out of) storage.
//!
//! The upstream reference is `k8s.io/apiextensions-apiserver` (packages
//! `apis/apiextensions/validation`, `apiserver/schema{,/pruning,/defaulting,/listtype,/objectmeta}`,
//! `controller/status`, `controller/establish`) and kube-openapi's schema validator for the
//! object-level error messages.
//!
//! ## Schema representation
//! Every function takes the schema as k8s-openapi's typed [`JSONSchemaProps`] rather than a
//! `serde_json::Value`. That is what a decoded CRD already carries, so callers never re-parse
//! it; ill-typed keywords (`"minimum": "x"`) are rejected once, when the CRD is decoded, instead
//! of being re-discovered on every object; and the structural checks and the object walkers see
//! exactly the same data.
//!
//! ## Order of operations for a custom object
//! Upstream's request path is: decode → [`apply_defaults`] (request version) → [`prune`] →
//! [`validate_object`]. On read from storage, only [`apply_defaults`] (storage version) runs.
//! [`validate_object`] rejects anything nested deeper than [`MAX_DEPTH`]; [`prune`] and
//! [`apply_defaults`] merely stop descending there, which is safe because the object is
//! rejected by validation anyway.
//!
//! ## Not implemented
//! CEL (`x-kubernetes-validations`) rules are syntax-checked on the CRD (non-empty rule,
//! message rules) but never compiled or evaluated; `selectableFields` are not validated;
//! validation ratcheting on update is not done.

mod conditions;
mod defaults;
mod embedded;
mod field_error;
mod formats;
mod list_type;
mod names;
mod prune;
mod structural;
mod validate_crd;
mod validate_object;
mod validate_schema;

pub use self::conditions::{
    conditions, reconcile_status, stored_versions, TakenNames, ESTABLISHED, NAMES_ACCEPTED,
};
pub use self::defaults::apply_defaults;
pub use self::field_error::{causes, status_message, FieldError, FieldErrorKind, FieldPath};
pub use self::prune::{prune, unknown_field_messages};
pub use self::validate_crd::{
    set_crd_defaults, validate_crd, validate_crd_status, validate_crd_update,
};
pub use self::validate_object::validate_object;

pub use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;

/// Deepest nesting of objects/arrays (and of schemas) any walker in this module descends into.
///
/// serde_json's decoder already caps documents at 128 levels, but objects can be built in code
/// or arrive through other decoders; the limit keeps every recursion here bounded regardless.
pub const MAX_DEPTH: usize = 100;

#[cfg(test)]
mod fixtures;
