//! Test data shared by this module's unit tests: the CronTab CRD from the upstream
//! "Extend the Kubernetes API with CustomResourceDefinitions" documentation.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use serde_json::json;

/// The documentation example verbatim (as JSON): no `listKind`, which API defaulting fills in.
pub(super) fn crontab_json() -> serde_json::Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "crontabs.stable.example.com", "generation": 1},
        "spec": {
            "group": "stable.example.com",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "properties": {
                            "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
                            "image": {"type": "string"},
                            "replicas": {"type": "integer", "minimum": 1, "maximum": 10}
                        }
                    }}
                }}
            }],
            "scope": "Namespaced",
            "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab", "shortNames": ["ct"]}
        }
    })
}

/// The CronTab CRD after API defaulting, i.e. as validation sees it.
pub(super) fn crontab() -> CustomResourceDefinition {
    let mut crd: CustomResourceDefinition =
        serde_json::from_value(crontab_json()).expect("fixture decodes");
    super::set_crd_defaults(&mut crd);
    crd
}

pub(super) fn crontab_schema() -> JSONSchemaProps {
    crontab().spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.clone())
        .expect("fixture has a schema")
}
