//! Resource requests: one file per verb, sharing the request context and the write pipeline.
//! Dispatch mirrors upstream's routing: unknown resources and subresources are 404, methods a
//! resource does not support are 405.

mod create;
mod delete;
mod eviction;
mod get;
mod list;
mod list_stream;
mod output;
mod patch;
mod prepare;
mod selectors;
mod subresource;
mod update;
pub(super) mod watch;

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::Value;

pub(super) use super::context::Ctx;
use super::status::{ApiError, ApiResult};
use super::{storage, State};
use crate::apiserver::edge::body::{self, error_response, Body};
use crate::apiserver::edge::request::{Query, RequestInfo};
use crate::auth::UserInfo;

/// Write `obj` over the stored object at `rev` (compare-and-swap), stamp its new
/// resourceVersion, and run the post-write steps (strategy, quota reconciliation).
pub(super) async fn store_update(ctx: &Ctx, obj: &mut Value, rev: u64) -> ApiResult<()> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let bytes = storage::encode(obj)?;
    let new_rev = ctx
        .state
        .store
        .update(&ctx.key(&name), bytes, rev)
        .await
        .map_err(|e| ApiError::from_store(e, &ctx.ri, &name))?;
    storage::set_resource_version(obj, new_rev);
    super::strategy::after_commit(ctx, obj).await;
    super::admission::after_change(ctx, false);
    Ok(())
}

pub(super) async fn read_body(ctx: &mut Ctx, body: Incoming) -> ApiResult<(String, Value)> {
    let length = ctx
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok());
    let bytes = body::read(body, length).await?;
    let media = body::media_type(ctx.header("content-type"));
    // kubectl's typed clients send built-in kinds as protobuf; everything else is JSON/YAML.
    if media == crate::apiserver::protobuf::MEDIA_TYPE {
        let (api_version, kind) = (ctx.ri.api_version(), ctx.ri.kind.clone());
        let decode = move |bytes: &[u8]| {
            crate::apiserver::protobuf::decode_with_defaults(bytes, &api_version, &kind).map_err(
                |e| ApiError::bad_request(format!("cannot decode the protobuf request body: {e}")),
            )
        };
        let value = if bytes.len() <= body::INLINE_DECODE_BYTES {
            decode(&bytes[..])?
        } else {
            let raw = bytes.clone();
            crate::apiserver::edge::offload::run(move || decode(&raw)).await??
        };
        ctx.keep_request_body(bytes.len(), &value);
        return Ok((media, value));
    }
    let value = body::decode_offloaded(&media, &bytes).await?;
    ctx.keep_request_body(bytes.len(), &value);
    Ok((media, value))
}

/// The Status for a path no route serves at its scope.
pub(super) fn scope_error(e: crate::apiserver::edge::request::ScopeError) -> ApiError {
    match e {
        crate::apiserver::edge::request::ScopeError::NotFound => ApiError::path_not_found(),
        crate::apiserver::edge::request::ScopeError::MethodNotAllowed => {
            ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            )
        }
    }
}

pub(super) async fn dispatch(
    state: &Arc<State>,
    user: UserInfo,
    info: RequestInfo,
    query: Query,
    req: Request<Incoming>,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let Some(ri) = state
        .registry
        .lookup(&info.group, &info.version, &info.resource)
    else {
        return error_response(&ApiError::path_not_found());
    };
    // The request was authorized in the scope `check_scope` accepted (serve.rs); checking
    // again against the entry served here keeps that true even if the registry changed since.
    if let Err(e) = crate::apiserver::edge::request::check_scope(&info, &ri) {
        return error_response(&scope_error(e));
    }
    if !info.subresource.is_empty() && !ri.has_subresource(&info.subresource) {
        return error_response(&ApiError::path_not_found());
    }
    let audit_level = crate::apiserver::edge::audit::level_for(
        state.enforcement.audit().map(|a| &**a),
        &user,
        &info,
        "",
    );
    let mut ctx = Ctx {
        state: state.clone(),
        user,
        info,
        query,
        ri,
        headers: parts.headers,
        upgrade: parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
        raw_query: parts.uri.query().unwrap_or("").to_string(),
        warnings: Default::default(),
        admission: None,
        applied: false,
        audit_level,
        seen: Default::default(),
    };
    let sub = ctx.info.subresource.clone();
    let verb = ctx.info.verb.clone();
    let result = match (verb.as_str(), sub.as_str()) {
        // Create-only kinds (reviews, bindings) store nothing to read back, as upstream.
        (v, "") if v != "create" && ctx.ri.verbs == ["create"] => {
            Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({verb})"
            )))
        }
        // Served from the kubelet scrape, not the store.
        (_, "") if ctx.ri.group == crate::apiserver::metrics_api::GROUP => {
            crate::apiserver::metrics_api::serve(&ctx).await
        }
        ("get", "") => get::get(&ctx).await,
        ("list", "") => list::list(&ctx).await,
        ("watch", "") => watch::watch(&ctx).await,
        ("create", "") if ctx.info.name.is_empty() => create::create(&mut ctx, body).await,
        ("update", "") => update::update(&mut ctx, body).await,
        ("patch", "") => patch::patch(&mut ctx, body).await,
        ("delete", "") => delete::delete(&mut ctx, body).await,
        ("deletecollection", "") => delete::delete_collection(&mut ctx, body).await,
        (_, "") => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({verb})"
        ))),
        (_, _) => subresource::dispatch(&mut ctx, &verb, &sub, body).await,
    };
    match result {
        Ok(resp) => ctx.finish(resp),
        Err(e) => ctx.finish(error_response(&e)),
    }
}
