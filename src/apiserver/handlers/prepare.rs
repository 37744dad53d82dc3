//! The write pipeline every create, update and patch goes through, in upstream's order:
//! type check → decode (typed for built-ins, schema for custom resources) with field
//! validation → defaulting → system fields → validation → admission.

use serde_json::{json, Map, Value};

use super::Ctx;
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::strategy::{custom, defaults, typed};
use crate::apiserver::{crd, merge, storage};

pub(crate) use crate::apiserver::now_rfc3339;

/// `kind` and `apiVersion` of the body must match the URL. Missing ones are taken from the
/// endpoint, as upstream's decoder does (the Python client sends objects without them).
pub fn check_type(ctx: &Ctx, obj: &mut Value) -> ApiResult<()> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "the request body must be a JSON object, not {}",
            type_name(obj)
        )));
    }
    let want_version = ctx.ri.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v == want_version => {}
        Some(v) if !v.is_empty() => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({want_version})"
            )))
        }
        _ => obj["apiVersion"] = json!(want_version),
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if k == ctx.ri.kind => {}
        Some(k) if !k.is_empty() => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                ctx.ri.kind
            )))
        }
        _ => obj["kind"] = json!(ctx.ri.kind),
    }
    match obj.get("metadata") {
        None | Some(Value::Object(_)) => Ok(()),
        Some(other) => Err(ApiError::bad_request(format!(
            "metadata must be an object, not {}",
            type_name(other)
        ))),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The object's metadata map, created if missing or malformed.
pub fn meta(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    match &mut obj["metadata"] {
        Value::Object(m) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// Set the namespace from the URL, refusing a body that names another one.
pub fn place_in_namespace(ctx: &Ctx, obj: &mut Value) -> ApiResult<()> {
    let url_ns = ctx.namespace().to_string();
    let m = meta(obj);
    match m.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ctx.ri.namespaced && ns != url_ns => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ))
        }
        _ => {}
    }
    if ctx.ri.namespaced {
        m.insert("namespace".into(), json!(url_ns));
    } else {
        m.remove("namespace");
    }
    Ok(())
}

/// Decode and clean the object: typed round trip for built-ins (unknown fields reported per
/// `fieldValidation`), schema pruning, validation and defaulting for custom resources.
pub fn decode(ctx: &mut Ctx, obj: Value) -> ApiResult<Value> {
    let mode = ctx
        .query
        .get("fieldValidation")
        .unwrap_or("Warn")
        .to_string();
    if !matches!(mode.as_str(), "Strict" | "Warn" | "Ignore") {
        return Err(ApiError::bad_request(format!(
            "fieldValidation must be one of Strict, Warn, Ignore (got {mode:?})"
        )));
    }
    let (obj, unknown) = match typed::decode(&ctx.ri.group, &ctx.ri.kind, &obj) {
        Ok(Some(d)) => (d.object, d.unknown),
        Ok(None) => {
            let mut obj = obj;
            let mut unknown = Vec::new();
            if let Some(cv) =
                ctx.state
                    .registry
                    .custom_version(&ctx.ri.group, &ctx.ri.version, &ctx.ri.plural)
            {
                if let Some(schema) = &cv.typed_schema {
                    crd::apply_defaults(schema, &mut obj);
                    crd::prune(schema, &mut obj, &mut unknown);
                }
            }
            (obj, unknown)
        }
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                ctx.ri.kind, ctx.ri.version, ctx.ri.kind
            )))
        }
    };
    if !unknown.is_empty() {
        let msgs = unknown.iter().map(|f| format!("unknown field \"{f}\""));
        match mode.as_str() {
            "Strict" => {
                // Upstream lists every field; a body of 150,000 unknown fields would make a
                // multi-megabyte error (and audit line), so list the first ones and count
                // the rest, each path cut as the Warning headers are.
                let mut listed: Vec<String> = msgs
                    .take(STRICT_FIELDS_LISTED)
                    .map(|m| crate::apiserver::edge::warnings::cut(&m).to_string())
                    .collect();
                if unknown.len() > STRICT_FIELDS_LISTED {
                    listed.push(format!(
                        "and {} more unknown fields",
                        unknown.len() - STRICT_FIELDS_LISTED
                    ));
                }
                return Err(ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                    ctx.ri.kind,
                    ctx.ri.version,
                    ctx.ri.kind,
                    listed.join(", ")
                )));
            }
            "Warn" => ctx.warnings.extend(msgs),
            _ => {}
        }
    }
    Ok(obj)
}

/// Unknown fields named in a strict decoding error; the rest are counted.
const STRICT_FIELDS_LISTED: usize = 100;

/// Validate the finished object (metadata rules, kind rules, custom resource schema).
pub fn validate(ctx: &Ctx, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut causes = crate::apiserver::strategy::validate::object(&ctx.ri, obj, old);
    causes.extend(crate::apiserver::strategy::validate(ctx, obj, old));
    if let Some(cv) =
        ctx.state
            .registry
            .custom_version(&ctx.ri.group, &ctx.ri.version, &ctx.ri.plural)
    {
        if let Some(schema) = &cv.typed_schema {
            causes.extend(custom::validate_object(schema, obj));
        }
    }
    if ctx.ri.group == "apiextensions.k8s.io" && ctx.ri.kind == "CustomResourceDefinition" {
        causes.extend(custom::validate_crd(obj, old));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&ctx.ri, &name, causes))
    }
}

/// Fields the server owns on create.
pub fn stamp_create(ctx: &Ctx, obj: &mut Value) {
    let manager = ctx.field_manager();
    let api_version = ctx.ri.api_version();
    let m = meta(obj);
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(now_rfc3339()));
    m.remove("deletionTimestamp");
    m.remove("deletionGracePeriodSeconds");
    m.remove("resourceVersion");
    if obj.get("spec").is_some() || ctx.ri.group == "apiextensions.k8s.io" {
        meta(obj).insert("generation".into(), json!(1));
    }
    if ctx.ri.has_subresource("status") && ctx.ri.kind != "CustomResourceDefinition" {
        // Status is written through /status by controllers, never by creators.
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }
    defaults::status_on_create(&ctx.ri, obj);
    // Server-side apply recorded its own (Apply) ownership; an Update on top would move the
    // applier's fields to an Update entry (upstream runs one of FieldManager.Apply/Update).
    if !ctx.applied {
        merge::record_update(None, obj, &manager, "Update", &api_version, &now_rfc3339());
    }
}

/// Carry server-owned fields from `old` into an update, as upstream's `PrepareForUpdate`.
pub fn carry_over(ctx: &Ctx, old: &Value, new: &mut Value, status_only: bool) {
    let manager = ctx.field_manager();
    let api_version = ctx.ri.api_version();
    if status_only {
        // /status changes only status (and nothing in metadata but what the server owns).
        let status = new.get("status").cloned();
        *new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    } else if ctx.ri.has_subresource("status") {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old["metadata"].get(field) {
            Some(v) => {
                meta(new).insert(field.into(), v.clone());
            }
            None => {
                meta(new).remove(field);
            }
        }
    }
    if !status_only && old.get("spec") != new.get("spec") {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        meta(new).insert("generation".into(), json!(generation));
    }
    if new["metadata"].get("managedFields").is_none() {
        if let Some(mf) = old["metadata"].get("managedFields") {
            meta(new).insert("managedFields".into(), mf.clone());
        }
    }
    crate::apiserver::strategy::defaults::empty_status(&ctx.ri, new);
    if !ctx.applied {
        merge::record_update(
            Some(old),
            new,
            &manager,
            "Update",
            &api_version,
            &now_rfc3339(),
        );
    }
}

/// Namespaced writes need a live namespace (upstream's NamespaceLifecycle admission).
pub async fn ensure_namespace(ctx: &Ctx, name: &str) -> ApiResult<()> {
    if !ctx.ri.namespaced {
        return Ok(());
    }
    let ns = ctx.namespace();
    let key = storage::Builtin::Namespaces.key("", ns);
    let found = ctx
        .state
        .store
        .get(&key, None)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let Some(kv) = found else {
        return Err(
            ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
                .with_details(json!({"name": ns, "kind": "namespaces"})),
        );
    };
    let obj = storage::decode_object(&kv).unwrap_or(Value::Null);
    if obj["status"]["phase"] == "Terminating" || obj["metadata"]["deletionTimestamp"].is_string() {
        return Err(ApiError::forbidden(format!(
            "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            ctx.ri.group_resource(),
            name
        )));
    }
    Ok(())
}
