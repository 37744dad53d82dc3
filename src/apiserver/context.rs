//! The request context of a resource request: the facts about it (who, what, where, how the
//! response is wanted), and what the handler collects for the response and the audit line
//! (warnings, admission's verdict, the request body and created name).
//!
//! Invariant: nothing here reaches into the write pipeline. Admission and the strategies read
//! the facts through `&Ctx` and *return* their outcome; only the handler, which owns the
//! context (`&mut Ctx`), records it. So the context has no interior mutability and sits below
//! `handlers`, `strategy`, `admission`, `rbac` and `node_proxy` in the import graph (the cycle
//! test in `tests/layering.rs` keeps it there).

use std::sync::Arc;

use http::{HeaderMap, Response};
use serde_json::Value;

use super::edge::audit::{AdmissionAudit, RequestSeen};
use super::edge::body::Body;
use super::edge::request::{Query, RequestInfo};
use super::edge::warnings::Warnings;
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
    /// The body is a server-side apply whose managedFields `merge::apply` already wrote (as
    /// Apply); the write pipeline must not record the change again as an Update.
    pub applied: bool,
    /// The audit level of this request (bodies are kept only from Request up).
    pub audit_level: crate::auth::audit::Level,
    /// Warnings for the `Warning` response header (upstream's `299 - "..."`, deduplicated and
    /// capped as upstream's recorder: `edge::warnings`).
    pub warnings: Warnings,
    /// Admission's verdict for the audit line, as the handler received it from
    /// `admission::validate` (`record`).
    pub admission: Option<AdmissionAudit>,
    /// What the audit line needs from the handlers (request body, created name).
    pub seen: RequestSeen,
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

    /// Keep the request body (decoded from `len` bytes) when the audit level asks for it.
    pub fn keep_request_body(&mut self, len: usize, body: &Value) {
        if self.audit_level >= crate::auth::audit::Level::Request {
            self.seen.keep(len, body);
        }
    }

    /// Record admission's verdict for the audit line (the last one wins: a delete-collection
    /// records its last item's, as before).
    pub fn record(&mut self, verdict: Option<AdmissionAudit>) {
        if verdict.is_some() {
            self.admission = verdict;
        }
    }

    /// Attach collected warnings (and admission's verdict, for the audit line) to a response.
    pub fn finish(&mut self, mut resp: Response<Body>) -> Response<Body> {
        if let Some(a) = self.admission.take() {
            self.warnings.extend(a.warnings.iter().cloned());
            resp.extensions_mut().insert(a);
        }
        if self.seen.object.is_some() || self.seen.created_name.is_some() {
            resp.extensions_mut().insert(std::mem::take(&mut self.seen));
        }
        self.warnings.write(resp.headers_mut());
        resp
    }
}
