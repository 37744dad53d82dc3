//! Rendering of the OpenAPI 3.0 documents served under `/openapi/v3`.
//!
//! Copied from upstream's `kube-openapi/pkg/handler3` and builder3:
//! * the root (`/openapi/v3`) is `{"paths": {"<gv path>": {"serverRelativeURL":
//!   "/openapi/v3/<gv path>?hash=<HASH>"}}}`; clients (client-go's
//!   `openapi.Client`, and its disk cache) treat the URL as immutable while the
//!   hash is unchanged, so the hash is a digest of the exact bytes served for
//!   that group version (upstream: uppercase hex SHA-512);
//! * a group-version document has `openapi: 3.0.0`, `info`, `paths` for that
//!   group version only, and `components.schemas` holding every schema
//!   reachable from those paths (kubectl explain finds the kind's schema by
//!   scanning `components.schemas` for its `x-kubernetes-group-version-kind`);
//! * parameters are inline with a `schema`, request bodies and responses use
//!   `content` maps keyed by media type.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha512};

use super::dialect;
use super::paths::{BodyKind, Operation, Param, ParamIn, PathItem};
use super::v2::status_text;
use super::{PATCH_MEDIA_TYPES, RESPONSE_MEDIA_TYPES, SERVER_VERSION};

/// One group-version document. `definitions` are neutral-dialect schemas;
/// `cached_v3` supplies already-converted schemas by name where it can.
pub(super) fn document<'c>(
    paths: &[PathItem],
    definitions: &BTreeMap<String, Value>,
    cached_v3: impl Fn(&str) -> Option<&'c Value>,
) -> Value {
    let mut rendered_paths = Map::new();
    for item in paths {
        rendered_paths.insert(item.path.clone(), path_item(item));
    }
    let schemas: Map<String, Value> = definitions
        .iter()
        .map(|(name, schema)| {
            let v3 = cached_v3(name)
                .cloned()
                .unwrap_or_else(|| dialect::to_v3(name, schema));
            (name.clone(), v3)
        })
        .collect();
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": SERVER_VERSION },
        "paths": rendered_paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": {
                    "description": "Bearer Token authentication",
                    "in": "header",
                    "name": "authorization",
                    "type": "apiKey",
                },
            },
        },
        "security": [{ "BearerToken": [] }],
    })
}

/// The root index document, from (gv path, hash) pairs.
pub(super) fn index<'a>(entries: impl Iterator<Item = (&'a str, &'a str)>) -> Value {
    let paths: Map<String, Value> = entries
        .map(|(gv, hash)| {
            (
                gv.to_owned(),
                json!({ "serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash}") }),
            )
        })
        .collect();
    json!({ "paths": paths })
}

/// Uppercase hex SHA-512 of the serialized document, as upstream's ETag.
pub(super) fn hash(serialized: &[u8]) -> String {
    Sha512::digest(serialized)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

fn parameter(p: &Param) -> Value {
    let mut v = json!({
        "description": p.description,
        "in": match p.location { ParamIn::Path => "path", ParamIn::Query => "query" },
        "name": p.name,
        "schema": { "type": p.ty, "uniqueItems": true },
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

fn content(media_types: &[&str], schema: &Value) -> Value {
    let mut map = Map::new();
    for m in media_types {
        map.insert((*m).to_owned(), json!({ "schema": schema }));
    }
    Value::Object(map)
}

fn operation(op: &Operation) -> Value {
    let mut schema = op.response.schema();
    dialect::refs_to_v3(&mut schema);
    let mut media: Vec<&str> = RESPONSE_MEDIA_TYPES.to_vec();
    if op.watch || op.action == "list" {
        media.push("application/json;stream=watch");
    }
    if matches!(op.response, super::paths::Payload::Text) {
        media = vec!["*/*"];
    }
    let mut responses = Map::new();
    for code in op.success_codes {
        responses.insert(
            code.to_string(),
            json!({ "description": status_text(*code), "content": content(&media, &schema) }),
        );
    }
    responses.insert("401".into(), json!({ "description": "Unauthorized" }));

    let mut obj = json!({
        "description": op.description,
        "operationId": op.id,
        "responses": responses,
        "tags": [op.tag.clone()],
    });
    if !op.params.is_empty() {
        obj["parameters"] = Value::Array(op.params.iter().map(parameter).collect());
    }
    if let Some((kind, definition)) = &op.body {
        let body_schema = json!({ "$ref": format!("{}{definition}", dialect::V3_REF_PREFIX) });
        let types: &[&str] = match kind {
            BodyKind::Object => &["*/*"],
            BodyKind::Patch => PATCH_MEDIA_TYPES,
        };
        obj["requestBody"] = json!({ "content": content(types, &body_schema), "required": true });
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
