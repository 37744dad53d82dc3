//! PUT: replace an object with optimistic concurrency (409 on a stale `resourceVersion`), and the
//! update path patches and subresources share.

use http::Response;
use hyper::body::Incoming;
use serde_json::Value;

use super::prepare::{self, meta};
use super::{read_body, Ctx};
use crate::apiserver::edge::body::{json_response, Body};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::storage::Retry;
use crate::apiserver::{admission, storage, strategy};
use crate::auth::admission::Operation;

pub async fn update(ctx: &mut Ctx, body: Incoming) -> ApiResult<Response<Body>> {
    let (_, obj) = read_body(ctx, body).await?;
    let name = ctx.info.name.clone();
    // Upstream's GuaranteedUpdate: a PUT without resourceVersion is unconditional, so a write
    // that lands in between (a controller's, a key rotation re-encrypting the object) is
    // retried on the fresh object instead of answered 409.
    let unconditional = obj["metadata"]["resourceVersion"]
        .as_str()
        .is_none_or(str::is_empty);
    let mut retry = Retry::new(RETRIES);
    loop {
        let (current, rev) = ctx.load(&name).await?;
        match update_object(ctx, obj.clone(), current, rev, false).await {
            Err(e) if e.code == 409 && unconditional => retry.conflict(e)?,
            result => {
                let (obj, code) = result?;
                return Ok(json_response(code, &obj));
            }
        }
    }
}

/// Tries of an unconditional write that keeps losing to concurrent writers (upstream retries
/// without bound; a key rotation re-encrypting a busy namespace is the usual competitor).
const RETRIES: usize = storage::CAS_ATTEMPTS;

/// Replace `current` (stored at `rev`) with `obj`. `status_only` is the /status subresource.
/// Returns the stored object and the HTTP code.
pub async fn update_object(
    ctx: &mut Ctx,
    mut obj: Value,
    current: Value,
    rev: u64,
    status_only: bool,
) -> ApiResult<(Value, u16)> {
    let name = ctx.info.name.clone();
    prepare::check_type(ctx, &mut obj)?;
    match obj["metadata"]["name"].as_str() {
        Some(n) if !n.is_empty() && n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
        _ => {
            meta(&mut obj).insert("name".into(), Value::String(name.clone()));
        }
    }
    prepare::place_in_namespace(ctx, &mut obj)?;
    match obj["metadata"]["resourceVersion"].as_str() {
        Some(v) if !v.is_empty() && v != rev.to_string() => {
            return Err(ApiError::modified(&ctx.ri, &name))
        }
        _ => {}
    }
    if let (Some(want), Some(have)) = (
        obj["metadata"]["uid"].as_str().filter(|u| !u.is_empty()),
        current["metadata"]["uid"].as_str(),
    ) {
        if want != have {
            return Err(ApiError::conflict(
                &ctx.ri,
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {have}"
                ),
            ));
        }
    }
    let mut obj = prepare::decode(ctx, obj)?;
    crate::apiserver::strategy::defaults::apply(&ctx.ri, &mut obj);
    prepare::carry_over(ctx, &current, &mut obj, status_only);
    strategy::prepare_update(ctx, &current, &mut obj).await?;
    prepare::validate(ctx, &obj, Some(&current))?;
    let admitted = admission::validate(ctx, Operation::Update, &obj, Some(&current)).await;
    ctx.admitted(admitted)?;
    if ctx.dry_run() {
        storage::set_resource_version(&mut obj, rev);
        return Ok((obj, 200));
    }
    // An object being deleted whose last finalizer is gone is deleted now (upstream's
    // graceful deletion completion).
    let finalizers_done = obj["metadata"]["deletionTimestamp"].is_string()
        && obj["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty())
        // Pods wait for their kubelet unless their grace period is already zero (upstream's
        // shouldDeleteDuringUpdate).
        && !(ctx.ri.kind == "Pod"
            && ctx.ri.group.is_empty()
            && obj["metadata"]["deletionGracePeriodSeconds"].as_i64() != Some(0))
        // A namespace also waits for its spec.finalizers (the namespace controller's
        // `kubernetes`, removed through /finalize once the namespace is empty).
        && !(ctx.ri.kind == "Namespace"
            && ctx.ri.group.is_empty()
            && obj["spec"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty()));
    if finalizers_done {
        ctx.state
            .store
            .delete(&ctx.key(&name), rev)
            .await
            .map_err(|e| ApiError::from_store(e, &ctx.ri, &name))?;
        strategy::after_delete(ctx, &obj).await;
        return Ok((obj, 200));
    }
    if unchanged(&current, &obj) {
        return Ok((current, 200));
    }
    let claims = strategy::begin_write(ctx, &mut obj, Some(&current)).await?;
    super::store_update(ctx, &mut obj, rev).await?;
    strategy::commit(claims).await;
    Ok((obj, 200))
}

/// Upstream skips writes that change nothing but managedFields timestamps.
fn unchanged(current: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
                for e in mf.iter_mut() {
                    if let Some(o) = e.as_object_mut() {
                        o.remove("time");
                    }
                }
            }
        }
        v
    };
    strip(current) == strip(new)
}
