//! DELETE and DELETECOLLECTION with upstream's graceful deletion: preconditions, grace periods
//! for pods bound to a node, finalizers (an object with finalizers only gets a
//! `deletionTimestamp`), and `propagationPolicy` recorded as the `orphan` / `foregroundDeletion`
//! finalizers for the garbage collector.

use http::Response;
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::prepare::meta;
use super::selectors::Selectors;
use super::{read_body, Ctx};
use crate::apiserver::edge::body::{bytes_response, json_response, Body};
use crate::apiserver::status::{status_bytes, ApiError, ApiResult};
use crate::apiserver::storage::Retry;
use crate::apiserver::{admission, storage, strategy};
use crate::auth::admission::Operation;
use crate::store::RangeRequest;

/// DeleteOptions from the body (if any) merged over the query parameters.
struct Options {
    grace: Option<i64>,
    propagation: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
}

async fn options(ctx: &mut Ctx, body: Incoming) -> ApiResult<Options> {
    let has_body = ctx.header("content-length").is_some_and(|l| l != "0")
        || ctx.header("transfer-encoding").is_some();
    let doc = if has_body {
        match read_body(ctx, body).await {
            Ok((_, v)) => v,
            Err(e) if e.message.contains("empty") => json!({}),
            Err(e) => return Err(e),
        }
    } else {
        json!({})
    };
    let q = |k: &str| ctx.query.get(k).map(str::to_string);
    let grace =
        match doc["gracePeriodSeconds"].as_i64() {
            Some(g) => Some(g),
            None => match q("gracePeriodSeconds") {
                Some(g) => Some(g.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}"))
                })?),
                None => None,
            },
        };
    let mut propagation = doc["propagationPolicy"]
        .as_str()
        .map(str::to_string)
        .or_else(|| q("propagationPolicy"));
    if propagation.is_none() {
        let orphan = doc["orphanDependents"]
            .as_bool()
            .or_else(|| q("orphanDependents").map(|v| v == "true"));
        if orphan == Some(true) {
            propagation = Some("Orphan".into());
        }
    }
    if let Some(p) = &propagation {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy must be Orphan, Background or Foreground (got {p:?})"
            )));
        }
    }
    Ok(Options {
        grace,
        propagation,
        uid: doc["preconditions"]["uid"].as_str().map(str::to_string),
        resource_version: doc["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
    })
}

pub async fn delete(ctx: &mut Ctx, body: Incoming) -> ApiResult<Response<Body>> {
    let opts = options(ctx, body).await?;
    let name = ctx.info.name.clone();
    // Upstream's delete is a guarded update: without a resourceVersion precondition, a
    // write that lands between the read and the delete (a controller updating the status)
    // is retried on the fresh object instead of answered 409.
    let mut retry = Retry::new(RETRIES);
    let (code, out) = loop {
        let (obj, rev) = ctx.load(&name).await?;
        match delete_one(ctx, &opts, obj, rev).await {
            Err(e) if lost_race(&e) && opts.resource_version.is_none() => retry.conflict(e)?,
            other => break other?,
        }
    };
    if out["kind"] == "Status" {
        // Upstream's field order, not serde_json's sorted maps.
        return Ok(bytes_response(
            code,
            status_bytes("Success", "", "", Some(&out["details"]), 0),
        ));
    }
    Ok(json_response(code, &out))
}

/// Tries of a delete that keeps losing to concurrent writers.
const RETRIES: usize = 5;

/// A compare-and-swap lost to a concurrent write (not a failed precondition).
fn lost_race(e: &ApiError) -> bool {
    e.code == 409 && e.message.contains("the object has been modified")
}

/// Upstream's registries with `ReturnDeletedObject: true` answer a delete with the deleted
/// object; every other resource answers a `Status` naming it.
fn returns_object(ctx: &Ctx) -> bool {
    let core = ctx.ri.group.is_empty()
        && matches!(
            ctx.ri.kind.as_str(),
            "Pod"
                | "Service"
                | "ServiceAccount"
                | "Namespace"
                | "PersistentVolume"
                | "PersistentVolumeClaim"
        );
    core || (ctx.ri.group == "storage.k8s.io" && ctx.ri.kind == "StorageClass")
        || ctx
            .state
            .registry
            .custom_version(&ctx.ri.group, &ctx.ri.version, &ctx.ri.plural)
            .is_some()
}

async fn delete_one(
    ctx: &mut Ctx,
    opts: &Options,
    mut obj: Value,
    rev: u64,
) -> ApiResult<(u16, Value)> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let uid = obj["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(want) = &opts.uid {
        if *want != uid {
            return Err(ApiError::conflict(
                &ctx.ri,
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                ),
            ));
        }
    }
    if let Some(want) = &opts.resource_version {
        if *want != rev.to_string() {
            return Err(ApiError::conflict(&ctx.ri, &name, &format!(
                "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rev}"
            )));
        }
    }
    let is_pod = ctx.ri.group.is_empty() && ctx.ri.kind == "Pod";
    let is_namespace = ctx.ri.group.is_empty() && ctx.ri.kind == "Namespace";
    // Finalizers the propagation policy asks for.
    let mut finalizers: Vec<String> = obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    match opts.propagation.as_deref() {
        Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
            finalizers.push("orphan".into())
        }
        Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
            finalizers.push("foregroundDeletion".into())
        }
        _ => {}
    }
    let grace = if is_pod {
        let bound = obj["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        let default = obj["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(30);
        let g = opts.grace.unwrap_or(default).max(0);
        // Unscheduled pods have nobody to stop them: upstream deletes them at once.
        if bound {
            g
        } else {
            0
        }
    } else {
        0
    };
    let admitted = admission::validate(ctx, Operation::Delete, &obj, None).await;
    ctx.admitted(admitted)?;
    let already_deleting = obj["metadata"]["deletionTimestamp"].is_string();
    let immediate = finalizers.is_empty() && grace == 0 && !is_namespace;
    if ctx.dry_run() {
        return Ok((200, obj));
    }
    if immediate {
        let del_rev = ctx
            .state
            .store
            .delete(&ctx.key(&name), rev)
            .await
            .map_err(|e| ApiError::from_store(e, &ctx.ri, &name))?;
        storage::set_resource_version(&mut obj, del_rev);
        strategy::after_delete(ctx, &obj).await;
        admission::after_change(ctx, false);
        if returns_object(ctx) {
            return Ok((200, obj));
        }
        let mut details = json!({"name": name, "kind": ctx.ri.plural, "uid": uid});
        if !ctx.ri.group.is_empty() {
            details["group"] = json!(ctx.ri.group);
        }
        return Ok((
            200,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
        ));
    }
    // Graceful: mark and let finalizers / the kubelet / the namespace finalizer finish.
    let m = meta(&mut obj);
    if !already_deleting {
        let when = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
        let when = jiff::Timestamp::from_second(when.as_second()).unwrap_or(when);
        m.insert("deletionTimestamp".into(), json!(when.to_string()));
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
    } else if is_pod
        && grace
            < m.get("deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(i64::MAX)
    {
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), json!(finalizers));
    }
    if is_namespace {
        obj["status"]["phase"] = json!("Terminating");
    }
    super::store_update(ctx, &mut obj, rev).await?;
    let code = if opts.propagation.as_deref() == Some("Foreground") {
        202
    } else {
        200
    };
    Ok((code, obj))
}

pub async fn delete_collection(ctx: &mut Ctx, body: Incoming) -> ApiResult<Response<Body>> {
    let opts = options(ctx, body).await?;
    let selectors = Selectors::parse(ctx)?;
    let ns = (ctx.ri.namespaced && !ctx.info.namespace.is_empty())
        .then_some(ctx.info.namespace.as_str());
    let listed = ctx
        .state
        .store
        .range(RangeRequest {
            prefix: storage::prefix(&ctx.ri, ns),
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::from_store(e, &ctx.ri, ""))?;
    let mut items = Vec::new();
    for kv in &listed.items {
        let obj = storage::decode(kv, &ctx.ri)?;
        if !selectors.matches(&obj) {
            continue;
        }
        match delete_one(ctx, &opts, obj, kv.mod_revision).await {
            Ok((_, out)) if out["kind"] != "Status" => items.push(out),
            Ok(_) => {}
            // Someone else changed or removed it meanwhile: upstream skips those too.
            Err(e) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        200,
        &json!({
            "kind": ctx.ri.list_kind,
            "apiVersion": ctx.ri.api_version(),
            "metadata": {"resourceVersion": ctx.state.store.current_revision().to_string()},
            "items": items,
        }),
    ))
}
