//! CRD schema validation: the input is a CustomResourceDefinition (defaulted and validated as
//! on create) or `schema \0 object`, the object validated, pruned and defaulted against it.
#![no_main]

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use libfuzzer_sys::fuzz_target;
use rampart::apiserver::crd::{
    apply_defaults, prune, set_crd_defaults, validate_crd, validate_object, JSONSchemaProps,
};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut crd) = serde_json::from_slice::<CustomResourceDefinition>(data) {
        set_crd_defaults(&mut crd);
        let _ = validate_crd(&crd);
        return;
    }
    let Some(split) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let Ok(schema) = serde_json::from_slice::<JSONSchemaProps>(&data[..split]) else {
        return;
    };
    let Ok(object) = serde_json::from_slice::<Value>(&data[split + 1..]) else {
        return;
    };
    let _ = validate_object(&schema, &object);
    let mut pruned = object.clone();
    let mut unknown = Vec::new();
    prune(&schema, &mut pruned, &mut unknown);
    apply_defaults(&schema, &mut pruned);
});
