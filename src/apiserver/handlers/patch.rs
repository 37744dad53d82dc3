//! PATCH: JSON patch, merge patch, strategic merge patch and server-side apply, each applied to
//! the current object and then sent down the update path (retried on a concurrent write, as
//! upstream's `GuaranteedUpdate` does).

use http::Response;
use hyper::body::Incoming;
use serde_json::Value;

use super::{create, update, Ctx};
use crate::apiserver::body::{self, json_response, Body};
use crate::apiserver::merge;
use crate::apiserver::status::{ApiError, ApiResult};

const RETRIES: usize = 5;

enum Kind {
    Json,
    Merge,
    Strategic,
    Apply,
}

pub async fn patch(ctx: &mut Ctx, body_in: Incoming) -> ApiResult<Response<Body>> {
    let (obj, code) = patch_object(ctx, body_in, false).await?;
    Ok(json_response(code, &obj))
}

/// Shared with the status subresource (`status_only`).
pub async fn patch_object(
    ctx: &mut Ctx,
    body_in: Incoming,
    status_only: bool,
) -> ApiResult<(Value, u16)> {
    let media = body::media_type(ctx.header("content-type"));
    let kind = match media.as_str() {
        "application/json-patch+json" => Kind::Json,
        "application/merge-patch+json" => Kind::Merge,
        "application/strategic-merge-patch+json" => Kind::Strategic,
        "application/apply-patch+yaml" => Kind::Apply,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    let length = ctx
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok());
    let raw = body::read(body_in, length).await?;
    let patch_doc = body::decode(&media, &raw)?;
    ctx.keep_request_body(raw.len(), &patch_doc);
    if matches!(kind, Kind::Strategic)
        && ctx
            .state
            .registry
            .custom_version(&ctx.ri.group, &ctx.ri.version, &ctx.ri.plural)
            .is_some()
    {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "strategic merge patch is not supported for custom resources; use a merge patch or server-side apply",
        ));
    }
    let force = ctx.query.flag("force");
    if matches!(kind, Kind::Apply) && ctx.query.get("fieldManager").is_none() {
        return Err(ApiError::bad_request(
            "PATCH requests of type application/apply-patch+yaml must include fieldManager",
        ));
    }
    let name = ctx.info.name.clone();
    let manager = ctx.field_manager();
    ctx.applied = matches!(kind, Kind::Apply);
    let now = super::prepare::now_rfc3339();
    for _ in 0..RETRIES {
        let loaded = ctx.load(&name).await;
        let (current, rev) = match (loaded, &kind) {
            (Ok(x), _) => x,
            (Err(e), Kind::Apply) if e.code == 404 && !status_only => {
                let applied = merge::apply(
                    None,
                    &patch_doc,
                    &manager,
                    force,
                    &ctx.ri.group,
                    &ctx.ri.kind,
                    &now,
                )
                .map_err(|e| ApiError::from_apply(e, &ctx.ri, &name))?;
                let (obj, _) = create::create_object(ctx, applied).await?;
                return Ok((obj, 201));
            }
            (Err(e), _) => return Err(e),
        };
        let patched = match &kind {
            Kind::Json => merge::json_patch(&current, &raw),
            Kind::Merge => merge::merge_patch(&current, &patch_doc),
            Kind::Strategic => {
                merge::strategic_merge_patch(&current, &patch_doc, &ctx.ri.group, &ctx.ri.kind)
            }
            Kind::Apply => {
                match merge::apply(
                    Some(&current),
                    &patch_doc,
                    &manager,
                    force,
                    &ctx.ri.group,
                    &ctx.ri.kind,
                    &now,
                ) {
                    Ok(v) => Ok(v),
                    Err(e) => return Err(ApiError::from_apply(e, &ctx.ri, &name)),
                }
            }
        }
        .map_err(ApiError::from)?;
        match update::update_object(ctx, patched, current, rev, status_only).await {
            Err(e) if e.code == 409 && e.reason == "Conflict" && !precondition_in(&patch_doc) => {
                continue
            }
            other => return other,
        }
    }
    Err(ApiError::modified(&ctx.ri, &name))
}

/// A patch that names a resourceVersion asks for optimistic concurrency: do not retry it.
fn precondition_in(doc: &Value) -> bool {
    doc["metadata"]["resourceVersion"].is_string()
}
