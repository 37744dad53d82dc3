//! How the server uses the `crd` module: CRD objects arrive and are stored as JSON, the module
//! works on k8s-openapi's typed CRD and schema; this file converts between the two and turns
//! field errors into the `(field, message)` causes of a 422.

use jiff::Timestamp;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use serde_json::Value;

use crate::api::resources::builtin;
use crate::apiserver::crd::{self, FieldError, TakenNames};

type Causes = Vec<(String, String)>;

fn causes(errs: Vec<FieldError>) -> Causes {
    errs.into_iter()
        .map(|e| (e.field.clone(), e.body()))
        .collect()
}

fn typed(obj: &Value) -> Result<CustomResourceDefinition, String> {
    serde_json::from_value(obj.clone()).map_err(|e| e.to_string())
}

/// The typed form of a version's schema (None if absent or malformed: the CRD validation
/// refuses malformed schemas, so this only happens for objects stored before that).
pub fn typed_schema(schema: &Value) -> Option<JSONSchemaProps> {
    serde_json::from_value(schema.clone()).ok()
}

/// Upstream's CRD defaulting (e.g. `spec.conversion.strategy: None`, `listKind`).
pub fn crd_defaults(obj: &mut Value) {
    if let Ok(mut crd) = typed(obj) {
        crd::set_crd_defaults(&mut crd);
        if let Ok(v) = serde_json::to_value(&crd) {
            obj["spec"] = v["spec"].clone();
        }
    }
}

/// Compute `status` (NamesAccepted, Established, acceptedNames, storedVersions) against the
/// other CRDs and the built-in resources of the same group.
pub fn crd_status(obj: &mut Value, others: &[Value]) {
    let Ok(mut crd) = typed(obj) else { return };
    let others: Vec<CustomResourceDefinition> =
        others.iter().filter_map(|o| typed(o).ok()).collect();
    let mut taken = TakenNames::for_group(&crd.spec.group, others.iter());
    for r in builtin().iter().filter(|r| r.group == crd.spec.group) {
        taken.add_builtin(&r.plural, &r.singular, &r.kind);
    }
    crd::reconcile_status(&mut crd, &taken, Timestamp::now());
    if let Some(status) = crd
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
    {
        obj["status"] = status;
    }
}

/// Validation of a CRD on create (`old` None) or update.
pub fn validate_crd(obj: &Value, old: Option<&Value>) -> Causes {
    let crd = match typed(obj) {
        Ok(c) => c,
        Err(e) => return vec![("spec".into(), format!("Invalid value: {e}"))],
    };
    match old.map(typed) {
        Some(Ok(old)) => causes(crd::validate_crd_update(&old, &crd)),
        _ => causes(crd::validate_crd(&crd)),
    }
}

pub fn validate_object(schema: &JSONSchemaProps, obj: &Value) -> Causes {
    causes(crd::validate_object(schema, obj))
}
