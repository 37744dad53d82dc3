//! PATCH: JSON patch, merge patch, strategic merge patch and server-side apply, each applied to
//! the current object and then sent down the update path (retried on a concurrent write, as
//! upstream's `GuaranteedUpdate` does).
//!
//! Applying a patch is CPU work proportional to the object and the patch (up to a few MiB
//! each), so it runs on the offload pool, never on an async worker. What a patch may produce
//! is bounded by `merge` (depth, JSON patch copies and operations) and, like every write, by
//! the object limits in `storage::encode`.

use std::sync::Arc;

use http::Response;
use hyper::body::Incoming;
use serde_json::Value;

use super::{create, update, Ctx};
use crate::apiserver::edge::body::{self, json_response, Body};
use crate::apiserver::edge::offload;
use crate::apiserver::merge;
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::storage::Retry;

const RETRIES: usize = 5;

#[derive(Clone, Copy)]
enum Kind {
    Json,
    Merge,
    Strategic,
    Apply,
}

/// Everything needed to apply the request's patch to one version of the object.
struct Job {
    kind: Kind,
    patch: Value,
    group: String,
    object_kind: String,
    manager: String,
    force: bool,
    now: String,
}

enum Failed {
    Patch(merge::PatchError),
    Apply(merge::ApplyError),
}

impl Job {
    /// The patched object; `current` is `None` only for an apply that creates. A result larger
    /// than a request may be is refused here, before decoding and validating it (upstream
    /// rejects patch results over its request size limit the same way).
    fn run(&self, current: Option<&Value>) -> Result<Value, Failed> {
        let out = self.apply(current)?;
        if approx_size(&out) > body::MAX_BODY {
            return Err(Failed::Patch(merge::PatchError::TooLarge(format!(
                "Request entity too large: the patched object is larger than {} bytes",
                body::MAX_BODY
            ))));
        }
        Ok(out)
    }

    fn apply(&self, current: Option<&Value>) -> Result<Value, Failed> {
        let (group, kind) = (self.group.as_str(), self.object_kind.as_str());
        match (self.kind, current) {
            (Kind::Apply, current) => merge::apply(
                current,
                &self.patch,
                &self.manager,
                self.force,
                group,
                kind,
                &self.now,
            )
            .map_err(Failed::Apply),
            (_, None) => Err(Failed::Patch(merge::PatchError::Unapplicable(
                "there is no object to patch".into(),
            ))),
            (Kind::Json, Some(c)) => merge::json_patch(c, &self.patch).map_err(Failed::Patch),
            (Kind::Merge, Some(c)) => merge::merge_patch(c, &self.patch).map_err(Failed::Patch),
            (Kind::Strategic, Some(c)) => {
                merge::strategic_merge_patch(c, &self.patch, group, kind).map_err(Failed::Patch)
            }
        }
    }
}

/// Runs `job` against `current` on the offload pool; gives `current` back with the result.
async fn run_job(
    ctx: &Ctx,
    job: &Arc<Job>,
    current: Option<Value>,
    name: &str,
) -> ApiResult<(Option<Value>, Value)> {
    let job = Arc::clone(job);
    let (current, result) = offload::run(move || {
        let result = job.run(current.as_ref());
        (current, result)
    })
    .await?;
    match result {
        Ok(v) => Ok((current, v)),
        Err(Failed::Patch(e)) => Err(ApiError::from(e)),
        Err(Failed::Apply(e)) => Err(ApiError::from_apply(e, &ctx.ri, name)),
    }
}

pub async fn patch(ctx: &mut Ctx, body_in: Incoming) -> ApiResult<Response<Body>> {
    let (obj, code) = patch_object(ctx, body_in, false).await?;
    Ok(json_response(code, &obj))
}

/// Hands the memory of a big patch back once it is answered, whatever the answer.
struct ReleaseOnDrop(bool);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if self.0 {
            offload::release_memory();
        }
    }
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
    let mut release = ReleaseOnDrop(raw.len() >= offload::RELEASE_AFTER_BYTES);
    let patch_doc = body::decode_offloaded(&media, &raw).await?;
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
    if matches!(kind, Kind::Apply) && ctx.query.get("fieldManager").is_none() {
        return Err(ApiError::bad_request(
            "PATCH requests of type application/apply-patch+yaml must include fieldManager",
        ));
    }
    let precondition = precondition_in(&patch_doc);
    let name = ctx.info.name.clone();
    ctx.applied = matches!(kind, Kind::Apply);
    let job = Arc::new(Job {
        kind,
        patch: patch_doc,
        group: ctx.ri.group.clone(),
        object_kind: ctx.ri.kind.clone(),
        manager: ctx.field_manager(),
        force: ctx.query.flag("force"),
        now: super::prepare::now_rfc3339(),
    });
    let mut retry = Retry::new(RETRIES);
    loop {
        let loaded = ctx.load(&name).await;
        let (current, rev) = match (loaded, kind) {
            (Ok(x), _) => {
                release.0 |= approx_size(&x.0) >= offload::RELEASE_AFTER_BYTES;
                x
            }
            (Err(e), Kind::Apply) if e.code == 404 && !status_only => {
                let (_, applied) = run_job(ctx, &job, None, &name).await?;
                let (obj, _) = create::create_object(ctx, applied).await?;
                return Ok((obj, 201));
            }
            (Err(e), _) => return Err(e),
        };
        let (current, patched) = run_job(ctx, &job, Some(current), &name).await?;
        let current = current.unwrap_or_default();
        match update::update_object(ctx, patched, current, rev, status_only).await {
            Err(e) if e.code == 409 && e.reason == "Conflict" && !precondition => {
                retry.conflict(e)?
            }
            other => return other,
        }
    }
}

fn approx_size(v: &Value) -> usize {
    match merge::measure(v, merge::Limits::depth(usize::MAX)) {
        merge::Measure::Fits { bytes, .. } => bytes,
        _ => usize::MAX,
    }
}

/// A patch that names a resourceVersion asks for optimistic concurrency: do not retry it.
fn precondition_in(doc: &Value) -> bool {
    doc["metadata"]["resourceVersion"].is_string()
}
