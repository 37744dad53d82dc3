//! Subresources: `status` (get/update/patch), `scale` (autoscaling/v1 Scale over
//! `spec.replicas`, also for custom resources that declare it), `binding`, `eviction`,
//! `finalize` and `approval`. Streaming subresources are the kubelet's: `pods/log` is proxied
//! to it (`node_proxy`); exec, attach, portforward and proxy answer a clear 503 Status until
//! they are.

use http::Response;
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{patch, read_body, update, Ctx};
use crate::apiserver::edge::body::{self, json_response, Body};
use crate::apiserver::merge;
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::storage::Retry;

pub async fn dispatch(
    ctx: &mut Ctx,
    verb: &str,
    sub: &str,
    body_in: Incoming,
) -> ApiResult<Response<Body>> {
    let name = ctx.info.name.clone();
    match (sub, verb) {
        ("status" | "approval" | "ephemeralcontainers", "get") => Ok(json_response(200, &ctx.load(&name).await?.0)),
        ("status" | "approval", "update") => {
            let (_, obj) = read_body(ctx, body_in).await?;
            let (current, rev) = ctx.load(&name).await?;
            let (out, code) = update::update_object(ctx, obj, current, rev, true).await?;
            Ok(json_response(code, &out))
        }
        ("status" | "approval", "patch") => {
            let (out, code) = patch::patch_object(ctx, body_in, true).await?;
            Ok(json_response(code, &out))
        }
        ("finalize" | "ephemeralcontainers", "update") => {
            let (_, obj) = read_body(ctx, body_in).await?;
            let (current, rev) = ctx.load(&name).await?;
            let (out, code) = update::update_object(ctx, obj, current, rev, false).await?;
            Ok(json_response(code, &out))
        }
        ("scale", "get") => {
            let (obj, _) = ctx.load(&name).await?;
            Ok(json_response(200, &to_scale(ctx, &obj)))
        }
        ("scale", "update" | "patch") => scale_write(ctx, verb, body_in).await,
        ("binding", "create") => binding(ctx, body_in).await,
        ("eviction", "create") => eviction(ctx, body_in).await,
        ("token", "create") => match ctx.state.service_accounts.clone() {
            Some(issuer) => crate::apiserver::strategy::service_account_tokens::token_request(ctx, &issuer, body_in).await,
            None => Err(ApiError::unavailable("service-account tokens are not configured on this server")),
        },
        ("exec", "create") if ctx.ri.group.is_empty() && ctx.ri.plural == "pods" => {
            crate::apiserver::node_proxy::exec::serve(ctx).await
        }
        ("portforward", "create") if ctx.ri.group.is_empty() && ctx.ri.plural == "pods" => {
            crate::apiserver::node_proxy::portforward::serve(ctx).await
        }
        ("log", "get") if ctx.ri.group.is_empty() && ctx.ri.plural == "pods" => {
            crate::apiserver::node_proxy::log::serve(ctx).await
        }
        ("proxy", _) if ctx.ri.group.is_empty() && ctx.ri.plural == "nodes" => {
            crate::apiserver::node_proxy::nodes::serve(ctx, body_in).await
        }
        ("log" | "exec" | "attach" | "portforward" | "proxy", _) => Err(ApiError::unavailable(format!(
            "{sub} for {} \"{name}\" is not available yet: it is served by the node agent, which this server does not run yet",
            ctx.ri.group_resource()
        ))),
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({verb} {sub})"
        ))),
    }
}

/// The dotted paths of replicas and selector for this resource.
fn scale_paths(ctx: &Ctx) -> (String, String, Option<String>) {
    if let Some(cv) =
        ctx.state
            .registry
            .custom_version(&ctx.ri.group, &ctx.ri.version, &ctx.ri.plural)
    {
        if let Some((spec, status, selector)) = cv.scale {
            return (spec, status, selector);
        }
    }
    (
        ".spec.replicas".into(),
        ".status.replicas".into(),
        Some(".status.selector".into()),
    )
}

fn get_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.trim_start_matches('.')
        .split('.')
        .try_fold(obj, |cur, p| cur.get(p))
}

fn set_path(obj: &mut Value, path: &str, v: Value) {
    let parts: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    let mut cur = obj;
    for (i, p) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            cur[*p] = v;
            return;
        }
        if !cur[*p].is_object() {
            cur[*p] = json!({});
        }
        cur = &mut cur[*p];
    }
}

/// A label selector object as the string form Scale reports.
fn selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        parts.extend(
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())),
        );
    } else if let Some(m) = sel.as_object() {
        // ReplicationController selectors are plain maps.
        if !m.contains_key("matchExpressions") {
            parts.extend(
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}"))),
            );
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or_default();
        let vals: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", vals.join(",")),
            "NotIn" => format!("{key} notin ({})", vals.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    parts.join(",")
}

fn to_scale(ctx: &Ctx, obj: &Value) -> Value {
    let (spec_path, status_path, selector_path) = scale_paths(ctx);
    let selector = if ctx
        .state
        .registry
        .custom_version(&ctx.ri.group, &ctx.ri.version, &ctx.ri.plural)
        .is_some()
    {
        selector_path
            .and_then(|p| {
                get_path(obj, &p)
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_default()
    } else {
        selector_string(&obj["spec"]["selector"])
    };
    let m = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": get_path(obj, &spec_path).and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": get_path(obj, &status_path).and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

async fn scale_write(ctx: &mut Ctx, verb: &str, body_in: Incoming) -> ApiResult<Response<Body>> {
    let name = ctx.info.name.clone();
    let media = body::media_type(ctx.header("content-type"));
    let length = ctx
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok());
    let raw = body::read(body_in, length).await?;
    let doc = body::decode_offloaded(&media, &raw).await?;
    let mut retry = Retry::new(RETRIES);
    loop {
        let (current, rev) = ctx.load(&name).await?;
        let scale = to_scale(ctx, &current);
        let new_scale = if verb == "update" {
            doc.clone()
        } else {
            match media.as_str() {
                "application/json-patch+json" => merge::json_patch(&scale, &doc),
                "application/merge-patch+json" => merge::merge_patch(&scale, &doc),
                "application/strategic-merge-patch+json" => {
                    merge::strategic_merge_patch(&scale, &doc, "autoscaling", "Scale")
                }
                other => return Err(ApiError::unsupported_media_type(other)),
            }
            .map_err(ApiError::from)?
        };
        let replicas = new_scale["spec"]["replicas"].as_i64().ok_or_else(|| {
            ApiError::invalid(
                &ctx.ri,
                &name,
                vec![(
                    "spec.replicas".into(),
                    "Required value: must be an integer".into(),
                )],
            )
        })?;
        if replicas < 0 {
            return Err(ApiError::invalid(
                &ctx.ri,
                &name,
                vec![(
                    "spec.replicas".into(),
                    format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                )],
            ));
        }
        if let Some(want) = new_scale["metadata"]["resourceVersion"]
            .as_str()
            .filter(|s| !s.is_empty())
        {
            if want != rev.to_string() {
                return Err(ApiError::modified(&ctx.ri, &name));
            }
        }
        let mut obj = current.clone();
        let (spec_path, _, _) = scale_paths(ctx);
        set_path(&mut obj, &spec_path, json!(replicas));
        match update::update_object(ctx, obj, current, rev, false).await {
            Ok((stored, _)) => return Ok(json_response(200, &to_scale(ctx, &stored))),
            Err(e) if e.code == 409 && verb == "patch" => retry.conflict(e)?,
            Err(e) => return Err(e),
        }
    }
}

/// Tries of a subresource write that keeps losing to concurrent writers (upstream retries
/// its guarded updates the same way).
const RETRIES: usize = 5;

async fn binding(ctx: &mut Ctx, body_in: Incoming) -> ApiResult<Response<Body>> {
    let name = ctx.info.name.clone();
    let (_, b) = read_body(ctx, body_in).await?;
    let node = b["target"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                &ctx.ri,
                &name,
                vec![("target.name".into(), "Required value".into())],
            )
        })?
        .to_string();
    // As upstream's binding storage: a guarded update of the stored pod, retried when a
    // concurrent write (a status update) moved it.
    let want_uid = b["metadata"]["uid"].as_str().filter(|u| !u.is_empty());
    let mut retry = Retry::new(RETRIES);
    loop {
        let (current, rev) = ctx.load(&name).await?;
        if let Some(want) = want_uid {
            let have = current["metadata"]["uid"].as_str().unwrap_or_default();
            if want != have {
                return Err(ApiError::conflict(
                    &ctx.ri,
                    &name,
                    &format!("Precondition failed: UID in precondition: {want}, UID in object meta: {have}"),
                ));
            }
        }
        if let Some(existing) = current["spec"]["nodeName"]
            .as_str()
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(
                &ctx.ri,
                &name,
                &format!("pod {name} is already assigned to node \"{existing}\""),
            ));
        }
        if current["metadata"]["deletionTimestamp"].is_string() {
            return Err(ApiError::conflict(
                &ctx.ri,
                &name,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        let mut obj = current.clone();
        obj["spec"]["nodeName"] = json!(node);
        // The pod is now PodScheduled=True (replacing an earlier Unschedulable).
        let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                          "lastTransitionTime": crate::apiserver::now_rfc3339()});
        if !obj["status"].is_object() {
            obj["status"] = json!({});
        }
        match obj["status"]["conditions"].as_array_mut() {
            Some(conds) => {
                conds.retain(|c| c["type"] != "PodScheduled");
                conds.push(cond);
            }
            None => obj["status"]["conditions"] = json!([cond]),
        }
        if ctx.dry_run() {
            break;
        }
        match super::store_update(ctx, &mut obj, rev).await {
            Ok(()) => break,
            Err(e) if e.code == 409 => retry.conflict(e)?,
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

async fn eviction(ctx: &mut Ctx, body_in: Incoming) -> ApiResult<Response<Body>> {
    let name = ctx.info.name.clone();
    let (_, ev) = read_body(ctx, body_in).await?;
    let grace = ev["deleteOptions"]["gracePeriodSeconds"].as_i64();
    // Upstream retries on conflict: the scheduler or kubelet may write the pod's status between
    // our read and the delete.
    let mut retry = Retry::new(RETRIES);
    loop {
        let (current, rev) = ctx.load(&name).await?;
        let bound = current["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        let result = if bound && grace != Some(0) {
            let mut obj = current.clone();
            let g = grace
                .or_else(|| current["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30);
            let when = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(g);
            let when = jiff::Timestamp::from_second(when.as_second()).unwrap_or(when);
            obj["metadata"]["deletionTimestamp"] = json!(when.to_string());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(g);
            super::store_update(ctx, &mut obj, rev).await
        } else {
            ctx.state
                .store
                .delete(&ctx.key(&name), rev)
                .await
                .map(|_| ())
                .map_err(|e| ApiError::from_store(e, &ctx.ri, &name))
        };
        match result {
            Ok(()) => break,
            Err(e) if e.code == 409 => retry.conflict(e)?,
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}
