//! The admission chain on the API server's write path (decisions in `auth::admission`).
//!
//! Order, as upstream's plugin order: mutating built-ins (ServiceAccount, LimitRanger
//! defaults; the object's defaulting already ran), then — after validation — the validating
//! built-ins (NamespaceLifecycle in `prepare::ensure_namespace`, NodeRestriction, LimitRanger,
//! ResourceQuota) and the Cedar admission policies. Denials are upstream's 403 `<resource>
//! "<name>" is forbidden: ...`; the verdict is kept in the request context for the audit line.
//! Pod Security's warn and audit modes add `Warning`s and audit annotations (also kept in
//! the request context).
//!
//! - `service_account`: the ServiceAccount plugin (account, token volume);
//! - `priority`: the Priority plugin (priorityClassName → priority) and
//!   DefaultTolerationSeconds;
//! - `pod_security`: namespace policies, warn/audit, namespace label checks;
//! - `quota`: ResourceQuota charging (compare-and-swap on the quota) and reconciliation;
//! - `cedar_policies`: `CedarPolicy` objects (validated here, 422 naming the line) followed
//!   into the engine.

mod cache;
mod cedar_policies;
mod pod_security;
pub mod priority;
mod quota;
mod service_account;

pub use cache::Caches;
pub use cedar_policies::follow_cedar_policies;

use serde_json::{json, Value};

use super::context::Ctx;
use super::status::{ApiError, ApiResult};
use super::{storage, State};
use crate::api::ResourceInfo;
use crate::apiserver::edge::audit::AdmissionAudit;
use crate::auth::admission::{
    limits, node_restriction, pod_security::template_pod, quota as quota_rules, AdmissionRequest,
    Operation,
};
use crate::auth::cedar::entities::Principal;

pub const CEDAR_POLICY_GROUP: &str = "policy.rampart.io";

fn is_pod(ri: &ResourceInfo) -> bool {
    ri.group.is_empty() && ri.kind == "Pod"
}

fn forbidden(ctx: &Ctx, name: &str, message: &str) -> ApiError {
    ApiError::forbidden(format!(
        "{} \"{name}\" is forbidden: {message}",
        ctx.ri.group_resource()
    ))
    .with_details(json!({"name": name, "group": ctx.ri.group, "kind": ctx.ri.plural}))
}

fn name_of(obj: &Value) -> String {
    obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn list(state: &State, prefix: String) -> ApiResult<Vec<Value>> {
    storage::list(state.store.as_ref(), prefix).await
}

/// One object; one that cannot be decoded counts as absent, as before.
async fn get(state: &State, key: &str) -> ApiResult<Option<Value>> {
    let kv = state
        .store
        .get(key, None)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(kv.and_then(|kv| storage::decode_object(&kv).ok()))
}

/// Mutating admission on create: ServiceAccount, Priority, DefaultTolerationSeconds and
/// LimitRanger defaults for pods.
pub async fn mutate_create(ctx: &Ctx, obj: &mut Value) -> ApiResult<()> {
    if !ctx.state.enforcement.admits() || !is_pod(&ctx.ri) || !ctx.info.subresource.is_empty() {
        return Ok(());
    }
    service_account::mutate(ctx, obj).await?;
    priority::mutate(ctx, obj).await?;
    priority::default_tolerations(obj);
    let ns = ctx.namespace().to_string();
    let ranges = limit_ranges(ctx, &ns).await?;
    limits::default_pod(obj, &ranges);
    Ok(())
}

/// The namespace's LimitRanges, from the cache once it has synced.
async fn limit_ranges(ctx: &Ctx, ns: &str) -> ApiResult<Vec<Value>> {
    match ctx.state.admission_caches.limit_ranges.in_namespace(ns) {
        Some(r) => Ok(r),
        None => list(&ctx.state, format!("{}{ns}/", cache::LIMIT_RANGES)).await,
    }
}

/// Upstream's aggregate error text: one error as is, several as `[a, b]`.
fn aggregate(errs: &[String]) -> String {
    if errs.len() == 1 {
        errs[0].clone()
    } else {
        format!("[{}]", errs.join(", "))
    }
}

/// What validating admission let through: the verdict for the audit line and whether a
/// ResourceQuota was charged (a create that then fails gives the charge back:
/// [`create_failed`]).
#[derive(Debug, Default)]
pub struct Admitted {
    pub audit: Option<AdmissionAudit>,
    pub quota_charged: bool,
}

/// A refusal: the Status for the client and, when a policy decided, the verdict for the
/// audit line.
#[derive(Debug)]
pub struct Denied {
    pub error: ApiError,
    pub audit: Option<AdmissionAudit>,
}

impl From<ApiError> for Denied {
    fn from(error: ApiError) -> Self {
        Denied { error, audit: None }
    }
}

impl Denied {
    fn by(policy: String, error: ApiError) -> Self {
        Denied {
            error,
            audit: Some(AdmissionAudit {
                allowed: false,
                policies: vec![policy],
                ..Default::default()
            }),
        }
    }
}

impl Ctx {
    /// Take admission's outcome: keep its verdict for the audit line, and hand the handler
    /// what it must thread on (or the error to answer).
    pub fn admitted(&mut self, outcome: Result<Admitted, Denied>) -> ApiResult<Admitted> {
        match outcome {
            Ok(mut a) => {
                self.record(a.audit.take());
                Ok(a)
            }
            Err(d) => {
                self.record(d.audit);
                Err(d.error)
            }
        }
    }
}

fn deny(ctx: &Ctx, policy: String, name: &str, message: &str) -> Denied {
    Denied::by(policy, forbidden(ctx, name, message))
}

/// Validating admission for a create, an update (`old`) or a delete (`obj` is the stored
/// object). Returns the verdict (and Pod Security's warnings and annotations) for the
/// handler to record ([`Ctx::admitted`]).
pub async fn validate(
    ctx: &Ctx,
    op: Operation,
    obj: &Value,
    old: Option<&Value>,
) -> Result<Admitted, Denied> {
    let mut admitted = Admitted::default();
    if !ctx.state.enforcement.admits() {
        return Ok(admitted);
    }
    let name = name_of(obj);
    let sub = ctx.info.subresource.clone();
    if let Principal::Node(node) = Principal::of(&ctx.user) {
        if let Err(msg) = node_restriction::check(&node, op, &ctx.ri, &sub, obj, old) {
            return Err(deny(ctx, "builtin/NodeRestriction".into(), &name, &msg));
        }
    }
    let ns = ctx.namespace().to_string();
    if op != Operation::Delete && sub.is_empty() {
        let errs = if op == Operation::Create && is_pod(&ctx.ri) {
            limits::validate_pod(obj, &limit_ranges(ctx, &ns).await?)
        } else if ctx.ri.group.is_empty() && ctx.ri.plural == "persistentvolumeclaims" {
            limits::validate_pvc(obj, &limit_ranges(ctx, &ns).await?)
        } else {
            Vec::new()
        };
        if !errs.is_empty() {
            return Err(deny(
                ctx,
                "builtin/LimitRanger".into(),
                &name,
                &aggregate(&errs),
            ));
        }
    }
    if op == Operation::Create && sub.is_empty() && quota_rules::tracked(&ctx.ri) {
        admitted.quota_charged = quota::charge(ctx, obj, &ns, &name).await?;
    }
    if is_cedar_policy(&ctx.ri) && op != Operation::Delete {
        if let Some(adm) = ctx.state.enforcement.admission() {
            let text = obj["spec"]["policy"].as_str().unwrap_or_default();
            if let Err(e) = adm.compile_object(&name, text) {
                return Err(ApiError::invalid(
                    &ctx.ri,
                    &name,
                    vec![("spec.policy".into(), e.to_string())],
                )
                .into());
            }
        }
    }
    let Some(adm) = ctx.state.enforcement.admission().cloned() else {
        return Ok(admitted);
    };
    if matches!(
        sub.as_str(),
        "binding" | "eviction" | "token" | "approval" | "finalize"
    ) {
        return Ok(admitted);
    }
    // Pod Security applies to pod writes that change the spec, and (warn and audit only)
    // to workloads whose template changes, as upstream.
    let template_changed = |o: &Value| template_pod(o).map(|p| p["spec"].clone());
    let ns_policy = if op == Operation::Delete || sub == "status" {
        None
    } else if is_pod(&ctx.ri) {
        let spec_changed = old.is_none_or(|o| o["spec"] != obj["spec"]);
        match spec_changed {
            true => Some(pod_security::namespace_policy(ctx, &ns).await?),
            false => None,
        }
    } else if pod_security::is_workload(ctx)
        && old.is_none_or(|o| template_changed(o) != template_changed(obj))
    {
        Some(pod_security::namespace_policy(ctx, &ns).await?)
    } else {
        None
    };
    let (level, policy) = match (&ns_policy, is_pod(&ctx.ri)) {
        (Some(p), true) => (p.enforce.level.clone(), p.enforce.policy()),
        _ => ("privileged".to_string(), "privileged:latest".to_string()),
    };
    let user = ctx.user.clone();
    let req = AdmissionRequest {
        user: &user,
        operation: op,
        ri: &ctx.ri,
        subresource: &sub,
        object: obj,
        old,
        pod_level: &level,
        pod_policy: &policy,
    };
    let verdict = adm.admit(&req);
    let mut audit = AdmissionAudit {
        allowed: verdict.allowed,
        policies: verdict.policies.clone(),
        ..Default::default()
    };
    if let Some(p) = &ns_policy {
        if is_pod(&ctx.ri) {
            audit
                .annotations
                .insert(pod_security::ENFORCE_POLICY.into(), policy.clone());
        }
        // Only warn and audit modes look at the pod again (most namespaces set neither).
        if p.warn.is_some() || p.audit.is_some() {
            let template;
            let pod = if is_pod(&ctx.ri) {
                Some(obj)
            } else {
                template = template_pod(obj);
                template.as_ref()
            };
            if let Some(pod) = pod {
                let (warnings, annotations) =
                    pod_security::warn_and_audit(&adm, &req, p, pod, !verdict.allowed);
                audit.warnings.extend(warnings);
                audit.annotations.extend(annotations);
            }
        }
    }
    if verdict.allowed && ctx.ri.group.is_empty() && ctx.ri.kind == "Namespace" {
        match pod_security::check_namespace(ctx, &adm, &req, obj, old).await {
            Ok(w) => audit.warnings.extend(w),
            Err(error) => {
                return Err(Denied {
                    error,
                    audit: Some(audit),
                })
            }
        }
    }
    if verdict.allowed {
        admitted.audit = Some(audit);
        Ok(admitted)
    } else {
        Err(Denied {
            error: forbidden(ctx, &name, &verdict.message),
            audit: Some(audit),
        })
    }
}

pub fn is_cedar_policy(ri: &ResourceInfo) -> bool {
    ri.group == CEDAR_POLICY_GROUP && ri.kind == "CedarPolicy"
}

/// After a successful write or delete: reconcile the namespace's quotas when the change can
/// free or change usage (creates were charged at admission).
pub fn after_change(ctx: &Ctx, created: bool) {
    quota::after_change(ctx, created);
}

/// After a create that failed once admitted: give back what it was charged.
pub fn create_failed(ctx: &Ctx, admitted: &Admitted) {
    if admitted.quota_charged {
        quota::charged_but_failed(ctx);
    }
}
