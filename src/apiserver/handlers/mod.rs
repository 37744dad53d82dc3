//! Resource requests: one file per verb, sharing the request context and the write pipeline.
//! Dispatch mirrors upstream's routing: unknown resources and subresources are 404, methods a
//! resource does not support are 405.

mod create;
mod delete;
mod get;
mod list;
mod list_stream;
mod output;
mod patch;
mod prepare;
mod subresource;
mod update;
pub(super) mod watch;

use std::sync::Arc;

use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;
use serde_json::Value;

use super::body::{self, error_response, Body};
use super::request::{Query, RequestInfo};
use super::status::{ApiError, ApiResult};
use super::{storage, State};
use crate::api::ResourceInfo;
use crate::auth::UserInfo;

/// Everything a handler needs about the request it serves.
pub(super) struct Ctx {
    pub state: Arc<State>,
    pub user: UserInfo,
    pub info: RequestInfo,
    pub query: Query,
    pub ri: ResourceInfo,
    pub headers: HeaderMap,
    /// The connection's upgrade, for the streaming subresources (exec over WebSocket).
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The query as sent (repeated keys kept: exec's `command`).
    pub raw_query: String,
    /// Warnings for the `Warning` response header (upstream's `299 - "..."`, deduplicated and
    /// capped as upstream's recorder: `apiserver::warnings`).
    pub warnings: crate::apiserver::warnings::Warnings,
    /// Admission's verdict, for the audit line (set by `apiserver::admission`).
    pub admission: std::sync::Mutex<Option<crate::apiserver::audit::AdmissionAudit>>,
    /// Whether admission charged a ResourceQuota for this create (given back if it fails).
    pub quota_charged: std::sync::Mutex<bool>,
    /// The body is a server-side apply whose managedFields `merge::apply` already wrote (as
    /// Apply); the write pipeline must not record the change again as an Update.
    pub applied: bool,
    /// The audit level of this request (bodies are kept only from Request up).
    pub audit_level: crate::auth::audit::Level,
    /// What the audit line needs from the handlers (request body, created name).
    pub seen: std::sync::Mutex<crate::apiserver::audit::RequestSeen>,
}

impl Ctx {
    /// The namespace part of the storage key ("" for cluster-scoped resources).
    pub fn namespace(&self) -> &str {
        if self.ri.namespaced {
            &self.info.namespace
        } else {
            ""
        }
    }

    pub fn key(&self, name: &str) -> String {
        storage::key(&self.ri, self.namespace(), name)
    }

    pub fn dry_run(&self) -> bool {
        self.query.get("dryRun") == Some("All")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The field manager for managedFields: `?fieldManager=`, else derived from the
    /// User-Agent as upstream does (`kubectl-client-side-apply`, `kubectl-edit`, ...).
    pub fn field_manager(&self) -> String {
        if let Some(m) = self.query.get("fieldManager") {
            return m.to_string();
        }
        let ua = self.header("user-agent").unwrap_or("unknown");
        ua.split('/').next().unwrap_or("unknown").to_string()
    }

    /// Load the current object (404 if absent).
    pub async fn load(&self, name: &str) -> ApiResult<(Value, u64)> {
        let kv = self
            .state
            .store
            .get(&self.key(name), None)
            .await
            .map_err(|e| ApiError::from_store(e, &self.ri, name))?
            .ok_or_else(|| ApiError::not_found(&self.ri, name))?;
        Ok((storage::decode(&kv, &self.ri)?, kv.mod_revision))
    }

    /// Write `obj` over the stored object at `rev` (compare-and-swap), stamp its new
    /// resourceVersion, and run the post-write hooks.
    pub async fn store_update(&self, obj: &mut Value, rev: u64) -> ApiResult<()> {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let bytes = storage::encode(obj)?;
        let new_rev = self
            .state
            .store
            .update(&self.key(&name), bytes, rev)
            .await
            .map_err(|e| ApiError::from_store(e, &self.ri, &name))?;
        storage::set_resource_version(obj, new_rev);
        super::strategy::after_commit(self, obj).await;
        super::admission::after_change(self, false);
        Ok(())
    }

    /// Keep the request body (decoded from `len` bytes) when the audit level asks for it.
    pub fn keep_request_body(&self, len: usize, body: &Value) {
        if self.audit_level >= crate::auth::audit::Level::Request {
            if let Ok(mut seen) = self.seen.lock() {
                seen.keep(len, body);
            }
        }
    }

    /// Record admission's verdict for the audit line.
    pub fn record(&self, verdict: crate::apiserver::audit::AdmissionAudit) {
        if let Ok(mut a) = self.admission.lock() {
            *a = Some(verdict);
        }
    }

    /// Attach collected warnings (and admission's verdict, for the audit line) to a response.
    pub fn finish(&mut self, mut resp: Response<Body>) -> Response<Body> {
        let admission = self.admission.lock().ok().and_then(|a| a.clone());
        if let Some(a) = &admission {
            self.warnings.extend(a.warnings.iter().cloned());
        }
        if let Some(a) = admission {
            resp.extensions_mut().insert(a);
        }
        if let Some(seen) = self.seen.lock().ok().map(|s| s.clone()) {
            if seen.object.is_some() || seen.created_name.is_some() {
                resp.extensions_mut().insert(seen);
            }
        }
        self.warnings.write(resp.headers_mut());
        resp
    }
}

pub(super) async fn read_body(ctx: &Ctx, body: Incoming) -> ApiResult<(String, Value)> {
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
            crate::apiserver::offload::run(move || decode(&raw)).await??
        };
        ctx.keep_request_body(bytes.len(), &value);
        return Ok((media, value));
    }
    let value = body::decode_offloaded(&media, &bytes).await?;
    ctx.keep_request_body(bytes.len(), &value);
    Ok((media, value))
}

/// The Status for a path no route serves at its scope.
pub(super) fn scope_error(e: super::request::ScopeError) -> ApiError {
    match e {
        super::request::ScopeError::NotFound => ApiError::path_not_found(),
        super::request::ScopeError::MethodNotAllowed => ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ),
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
    if let Err(e) = super::request::check_scope(&info, &ri) {
        return error_response(&scope_error(e));
    }
    if !info.subresource.is_empty() && !ri.has_subresource(&info.subresource) {
        return error_response(&ApiError::path_not_found());
    }
    let audit_level = crate::apiserver::audit::level_for(
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
        admission: std::sync::Mutex::new(None),
        quota_charged: std::sync::Mutex::new(false),
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
        ("delete", "") => delete::delete(&ctx, body).await,
        ("deletecollection", "") => delete::delete_collection(&ctx, body).await,
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
