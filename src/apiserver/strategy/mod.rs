//! Per-resource strategies, in the shape of upstream's registry strategies and store hooks
//! (`k8s.io/apiserver/pkg/registry/rest` `RESTCreateStrategy`/`RESTUpdateStrategy` and the
//! generic store's `BeginCreate`/`BeginUpdate`/`AfterDelete`). The write pipeline
//! (`handlers/`) calls, in order:
//!
//! 1. [`prepare_create`] / [`prepare_update`] — server-owned fields and per-kind rules that
//!    need no claim (namespace phase, CRD status, CSR requester, RBAC escalation, Service
//!    values carried over from the stored version);
//! 2. [`validate`] — per-kind rules added to `validate::object`;
//! 3. admission (`apiserver::admission`);
//! 4. [`begin_write`] — the claims a write needs (Service ClusterIPs and node ports), made
//!    atomically through the store only now; the returned guard gives them back unless the
//!    handler calls `commit` after the store write succeeded;
//! 5. [`after_commit`] / [`after_delete`] — reactions to what was stored or removed. Every
//!    delete path (DELETE, DELETECOLLECTION, a finalizer-completed delete) runs `after_delete`;
//!    the claim repair loop ([`repair`]) covers deletes that bypass the handlers.
//!
//! The per-resource rules the pipeline applies live here too: defaulting (`defaults`), typed
//! decoding (`typed`), validation (`validate`), custom resources against their CRD (`custom`,
//! `crd_lifecycle`), Service ClusterIP and node-port claims (`service_claims`), CSRs (`csr`)
//! and service-account tokens (`service_account_tokens`: TokenRequest, OIDC discovery).

pub mod apiservice;
mod crd;
pub(super) mod crd_lifecycle;
pub(super) mod csr;
pub(super) mod custom;
pub(super) mod defaults;
mod job;
mod namespace;
pub mod repair;
mod service;
pub(crate) mod service_account_tokens;
pub(super) mod service_claims;
pub(super) mod typed;
pub(super) mod validate;

use serde_json::Value;

use super::context::Ctx;
use super::status::{ApiError, ApiResult};
use service_claims::Claims;

fn is(ctx: &Ctx, group: &str, kind: &str) -> bool {
    ctx.ri.group == group && ctx.ri.kind == kind
}

fn is_service(ctx: &Ctx) -> bool {
    is(ctx, "", "Service")
}

pub async fn prepare_create(ctx: &Ctx, obj: &mut Value) -> ApiResult<()> {
    csr::before_create(ctx, obj)?;
    super::rbac::escalation::check(ctx, obj, None).await?;
    if is(ctx, "", "Namespace") {
        namespace::prepare_create(obj);
    }
    if is(ctx, "apiextensions.k8s.io", "CustomResourceDefinition") {
        crd::prepare_create(&ctx.state, obj).await;
    }
    if is(ctx, "apiregistration.k8s.io", "APIService") {
        apiservice::set_availability(&ctx.state, obj, None).await;
    }
    if is(ctx, "batch", "Job") {
        job::prepare_create(obj);
    }
    Ok(())
}

pub async fn prepare_update(ctx: &Ctx, old: &Value, new: &mut Value) -> ApiResult<()> {
    csr::before_update(ctx, old, new)?;
    super::rbac::escalation::check(ctx, new, Some(old)).await?;
    if is_service(ctx) {
        service::prepare_update(old, new);
    }
    if is(ctx, "apiextensions.k8s.io", "CustomResourceDefinition") {
        crd::prepare_update(&ctx.state, old, new).await;
    }
    if is(ctx, "apiregistration.k8s.io", "APIService") {
        apiservice::set_availability(&ctx.state, new, Some(old)).await;
    }
    Ok(())
}

/// Field causes for the per-kind rules the strategies own.
pub fn validate(ctx: &Ctx, obj: &Value, old: Option<&Value>) -> Vec<(String, String)> {
    if is_service(ctx) {
        return service::validate(obj, old);
    }
    if is(ctx, "apiregistration.k8s.io", "APIService") {
        return apiservice::validate(obj);
    }
    Vec::new()
}

/// Claim what the write needs, after validation and admission and right before the store
/// write. `None` when the kind claims nothing.
pub async fn begin_write(
    ctx: &Ctx,
    obj: &mut Value,
    old: Option<&Value>,
) -> ApiResult<Option<Claims>> {
    if is_service(ctx) && !ctx.dry_run() {
        if old.is_none() {
            // A create that will fail with 409 must not claim and give back (which would
            // move the store revision): check first; a racing create still gets its claims
            // returned by the guard.
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            let found = ctx
                .state
                .store
                .get(&ctx.key(name), None)
                .await
                .map_err(|e| ApiError::from_store(e, &ctx.ri, name))?;
            if found.is_some() {
                return Err(ApiError::already_exists(&ctx.ri, name));
            }
        }
        return service_claims::claim(&ctx.state, obj, old).await.map(Some);
    }
    Ok(None)
}

/// The write is stored: keep its claims (and give back what an update dropped).
pub async fn commit(claims: Option<Claims>) {
    if let Some(c) = claims {
        c.commit().await;
    }
}

pub async fn after_commit(ctx: &Ctx, obj: &Value) {
    if is(ctx, "apiextensions.k8s.io", "CustomResourceDefinition") {
        crd_lifecycle::reload_crds(&ctx.state).await;
        apiservice::sync_crd_groups(&ctx.state).await;
    }
    // Dependents of deleted objects and the contents of deleted namespaces are the controller
    // manager's (`src/controllers/garbage_collector.rs`, `namespace.rs`), as upstream.
    let _ = obj;
}

/// `obj` (the last stored version) was removed from the store.
pub async fn after_delete(ctx: &Ctx, obj: &Value) {
    if is_service(ctx) {
        service_claims::release(&ctx.state, obj).await;
    }
    if is(ctx, "apiextensions.k8s.io", "CustomResourceDefinition") {
        crd_lifecycle::reload_crds(&ctx.state).await;
        apiservice::sync_crd_groups(&ctx.state).await;
        crd_lifecycle::spawn_crd_cleanup(ctx.state.clone(), obj.clone());
    }
}
