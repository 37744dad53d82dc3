//! Rendering of the Swagger 2.0 document served at `/openapi/v2`.
//!
//! Shape copied from upstream's `api/openapi-spec/swagger.json`: inline
//! parameters (upstream factors common ones into `#/parameters/...`; inline is
//! equally valid and kubectl's verifier reads both), a `body` parameter for
//! request objects, `consumes`/`produces` per operation, `schemes: [https]`,
//! and the `BearerToken` security definition. Definitions are exactly the ones
//! reachable from the paths, so the document carries nothing unused.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::dialect;
use super::paths::{BodyKind, Operation, Param, ParamIn, PathItem};
use super::{PATCH_MEDIA_TYPES, RESPONSE_MEDIA_TYPES, SERVER_VERSION};

pub(super) fn document(paths: &[PathItem], definitions: &BTreeMap<String, Value>) -> Value {
    let mut rendered_paths = Map::new();
    for item in paths {
        rendered_paths.insert(item.path.clone(), path_item(item));
    }
    let defs: Map<String, Value> = definitions
        .iter()
        .map(|(name, schema)| (name.clone(), dialect::to_v2(schema)))
        .collect();
    json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": SERVER_VERSION },
        "paths": rendered_paths,
        "definitions": defs,
        "securityDefinitions": {
            "BearerToken": {
                "description": "Bearer Token authentication",
                "in": "header",
                "name": "authorization",
                "type": "apiKey",
            },
        },
        "security": [{ "BearerToken": [] }],
    })
}

fn parameter(p: &Param) -> Value {
    let mut v = json!({
        "description": p.description,
        "in": match p.location { ParamIn::Path => "path", ParamIn::Query => "query" },
        "name": p.name,
        "type": p.ty,
        "uniqueItems": true,
    });
    if p.required {
        v["required"] = Value::Bool(true);
    }
    v
}

fn path_item(item: &PathItem) -> Value {
    let mut obj = Map::new();
    for op in &item.operations {
        obj.insert(op.method.key().into(), operation(op));
    }
    if !item.params.is_empty() {
        obj.insert(
            "parameters".into(),
            Value::Array(item.params.iter().map(parameter).collect()),
        );
    }
    Value::Object(obj)
}

fn operation(op: &Operation) -> Value {
    let mut params: Vec<Value> = Vec::new();
    let mut consumes = vec!["*/*".to_owned()];
    if let Some((kind, definition)) = &op.body {
        params.push(json!({
            "in": "body",
            "name": "body",
            "required": true,
            "schema": { "$ref": format!("{}{definition}", dialect::V2_REF_PREFIX) },
        }));
        if *kind == BodyKind::Patch {
            consumes = PATCH_MEDIA_TYPES.iter().map(|s| (*s).to_owned()).collect();
        }
    }
    params.extend(op.params.iter().map(parameter));

    let mut produces: Vec<String> = RESPONSE_MEDIA_TYPES
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    if op.watch || op.action == "list" {
        produces.push("application/json;stream=watch".into());
    }
    if matches!(op.response, super::paths::Payload::Text) {
        produces = vec!["*/*".into()];
    }

    let mut responses = Map::new();
    for code in op.success_codes {
        responses.insert(
            code.to_string(),
            json!({ "description": status_text(*code), "schema": op.response.schema() }),
        );
    }
    responses.insert("401".into(), json!({ "description": "Unauthorized" }));

    let mut obj = json!({
        "description": op.description,
        "consumes": consumes,
        "produces": produces,
        "schemes": ["https"],
        "tags": [op.tag.clone()],
        "operationId": op.id,
        "responses": responses,
    });
    if !params.is_empty() {
        obj["parameters"] = Value::Array(params);
    }
    if !op.action.is_empty() {
        obj["x-kubernetes-action"] = json!(op.action);
    }
    if !op.gvk.kind.is_empty() {
        obj["x-kubernetes-group-version-kind"] =
            json!({ "group": op.gvk.group, "kind": op.gvk.kind, "version": op.gvk.version });
    }
    obj
}

pub(super) fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        401 => "Unauthorized",
        _ => "",
    }
}
