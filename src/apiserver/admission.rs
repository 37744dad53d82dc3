//! The admission chain on the API server's write path (decisions in `auth::admission`).
//!
//! Order, as upstream's plugin order: mutating built-ins (ServiceAccount, LimitRanger
//! defaults; the object's defaulting already ran), then — after validation — the validating
//! built-ins (NamespaceLifecycle in `prepare::ensure_namespace`, NodeRestriction, LimitRanger,
//! ResourceQuota) and the Cedar admission policies. Denials are upstream's 403 `<resource>
//! "<name>" is forbidden: ...`; the verdict is kept in the request context for the audit line.
//! `CedarPolicy` objects are validated here (422 naming the line) and followed by a store
//! watch (`follow_cedar_policies`) that loads them into the policy set.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::audit::AdmissionAudit;
use super::follow::{follow, Follower};
use super::handlers::Ctx;
use super::status::{ApiError, ApiResult};
use super::{storage, State};
use crate::api::ResourceInfo;
use crate::auth::admission::{
    self, limits, node_restriction, quota, Admission, AdmissionRequest, Operation,
};
use crate::auth::cedar::entities::Principal;
use crate::store::{Backend, RangeRequest};

pub const CEDAR_POLICY_GROUP: &str = "policy.rampart.io";
const CEDAR_POLICY_PREFIX: &str = "/registry/policy.rampart.io/cedarpolicies/";

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
    let listed = state
        .store
        .range(RangeRequest {
            prefix,
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(listed
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect())
}

async fn get(state: &State, key: &str) -> ApiResult<Option<Value>> {
    let kv = state
        .store
        .get(key, None)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(kv.and_then(|kv| serde_json::from_slice(&kv.value).ok()))
}

/// Mutating admission on create: ServiceAccount and LimitRanger defaults for pods.
pub async fn mutate_create(ctx: &Ctx, obj: &mut Value) -> ApiResult<()> {
    if ctx.state.authorizer.is_none() || !is_pod(&ctx.ri) || !ctx.info.subresource.is_empty() {
        return Ok(());
    }
    let ns = ctx.namespace().to_string();
    let name = name_of(obj);
    let mirror = obj["metadata"]["annotations"]
        .get("kubernetes.io/config.mirror")
        .is_some();
    if !mirror {
        let sa = obj["spec"]["serviceAccountName"]
            .as_str()
            .filter(|s| !s.is_empty())
            .or_else(|| {
                obj["spec"]["serviceAccount"]
                    .as_str()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or("default")
            .to_string();
        obj["spec"]["serviceAccountName"] = json!(sa);
        obj["spec"]["serviceAccount"] = json!(sa);
        let key = format!("/registry/core/serviceaccounts/{ns}/{sa}");
        // The default account is created by a controller right after its namespace: wait for
        // it briefly, as upstream's plugin retries its lookup.
        let tries = if sa == "default" { 20 } else { 1 };
        let mut found = false;
        for i in 0..tries {
            if get(&ctx.state, &key).await?.is_some() {
                found = true;
                break;
            }
            if i + 1 < tries {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if !found {
            return Err(forbidden(
                ctx,
                &name,
                &format!(
                    "error looking up service account {ns}/{sa}: serviceaccount \"{sa}\" not found"
                ),
            ));
        }
    }
    let ranges = list(&ctx.state, format!("/registry/core/limitranges/{ns}/")).await?;
    limits::default_pod(obj, &ranges);
    Ok(())
}

/// Upstream's aggregate error text: one error as is, several as `[a, b]`.
fn aggregate(errs: &[String]) -> String {
    if errs.len() == 1 {
        errs[0].clone()
    } else {
        format!("[{}]", errs.join(", "))
    }
}

/// Validating admission for a create, an update (`old`) or a delete (`obj` is the stored
/// object). Records the verdict in `ctx.admission`.
pub async fn validate(ctx: &Ctx, op: Operation, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    if ctx.state.authorizer.is_none() {
        return Ok(());
    }
    let name = name_of(obj);
    let sub = ctx.info.subresource.clone();
    if let Principal::Node(node) = Principal::of(&ctx.user) {
        if let Err(msg) = node_restriction::check(&node, op, &ctx.ri, &sub, obj, old) {
            ctx.record(AdmissionAudit {
                allowed: false,
                policies: vec!["builtin/NodeRestriction".into()],
                ..Default::default()
            });
            return Err(forbidden(ctx, &name, &msg));
        }
    }
    let ns = ctx.namespace().to_string();
    if op == Operation::Create && sub.is_empty() && is_pod(&ctx.ri) {
        let ranges = list(&ctx.state, format!("/registry/core/limitranges/{ns}/")).await?;
        let errs = limits::validate_pod(obj, &ranges);
        if !errs.is_empty() {
            ctx.record(AdmissionAudit {
                allowed: false,
                policies: vec!["builtin/LimitRanger".into()],
                ..Default::default()
            });
            return Err(forbidden(ctx, &name, &aggregate(&errs)));
        }
    }
    if op == Operation::Create && sub.is_empty() && quota::tracked(&ctx.ri) {
        check_quota(ctx, obj, &ns, &name).await?;
    }
    if is_cedar_policy(&ctx.ri) && op != Operation::Delete {
        if let Some(adm) = &ctx.state.admission {
            let text = obj["spec"]["policy"].as_str().unwrap_or_default();
            if let Err(e) = adm.compile_object(&name, text) {
                return Err(ApiError::invalid(
                    &ctx.ri,
                    &name,
                    vec![("spec.policy".into(), e.to_string())],
                ));
            }
        }
    }
    let Some(adm) = ctx.state.admission.clone() else {
        return Ok(());
    };
    if matches!(
        sub.as_str(),
        "binding" | "eviction" | "token" | "approval" | "finalize"
    ) {
        return Ok(());
    }
    let (mut level, mut policy) = ("privileged".to_string(), "privileged:latest".to_string());
    if is_pod(&ctx.ri) && op != Operation::Delete {
        let spec_changed = old.is_none_or(|o| o["spec"] != obj["spec"]);
        if spec_changed && sub != "status" {
            let labels = get(&ctx.state, &format!("/registry/core/namespaces/{ns}"))
                .await?
                .map(|n| n["metadata"]["labels"].clone());
            (level, policy) = admission::pod_security_level(&ns, labels.as_ref());
        }
    }
    let user = ctx.user.clone();
    let verdict = adm.admit(&AdmissionRequest {
        user: &user,
        operation: op,
        ri: &ctx.ri,
        subresource: &sub,
        object: obj,
        old,
        pod_level: &level,
        pod_policy: &policy,
    });
    ctx.record(AdmissionAudit {
        allowed: verdict.allowed,
        policies: verdict.policies.clone(),
        ..Default::default()
    });
    if verdict.allowed {
        Ok(())
    } else {
        Err(forbidden(ctx, &name, &verdict.message))
    }
}

async fn check_quota(ctx: &Ctx, obj: &Value, ns: &str, name: &str) -> ApiResult<()> {
    let quotas = list(&ctx.state, format!("/registry/core/resourcequotas/{ns}/")).await?;
    if quotas.is_empty() {
        return Ok(());
    }
    let delta = quota::usage(&ctx.ri, obj);
    let mut used = quota::Usage::new();
    for o in list(&ctx.state, storage::prefix(&ctx.ri, Some(ns))).await? {
        for (k, v) in quota::usage(&ctx.ri, &o) {
            let e = used.entry(k).or_default();
            *e = *e + v;
        }
    }
    for q in &quotas {
        if let Err(msg) = quota::check(&ctx.ri, obj, q, &used, &delta) {
            ctx.record(AdmissionAudit {
                allowed: false,
                policies: vec![format!("builtin/ResourceQuota/{}", name_of(q))],
                ..Default::default()
            });
            return Err(forbidden(ctx, name, &msg));
        }
    }
    Ok(())
}

pub fn is_cedar_policy(ri: &ResourceInfo) -> bool {
    ri.group == CEDAR_POLICY_GROUP && ri.kind == "CedarPolicy"
}

/// After a successful write or delete: keep the namespace's quotas' `status` current.
pub fn after_change(ctx: &Ctx) {
    if ctx.state.authorizer.is_none() || !quota::tracked(&ctx.ri) || ctx.dry_run() {
        return;
    }
    let state = ctx.state.clone();
    let ns = ctx.namespace().to_string();
    tokio::spawn(async move {
        if let Err(e) = refresh_quotas(&state, &ns).await {
            tracing::debug!(namespace = %ns, error = %e.message, "cannot refresh quota status");
        }
    });
}

/// The resource a quota key counts.
fn resource_for(state: &State, key: &str) -> Option<ResourceInfo> {
    let (group, plural) = match key {
        "pods" | "cpu" | "memory" => ("", "pods"),
        k if k.starts_with("requests.") || k.starts_with("limits.") => {
            if k == "requests.storage" {
                ("", "persistentvolumeclaims")
            } else {
                ("", "pods")
            }
        }
        k if k.starts_with("services") => ("", "services"),
        k if k.starts_with("count/") => {
            let rest = k.strip_prefix("count/").unwrap_or(k);
            match rest.split_once('.') {
                Some((p, g)) => (g, p),
                None => ("", rest),
            }
        }
        k => ("", k),
    };
    state
        .registry
        .all()
        .into_iter()
        .find(|r| r.group == group && r.plural == plural)
}

async fn refresh_quotas(state: &Arc<State>, ns: &str) -> ApiResult<()> {
    let prefix = format!("/registry/core/resourcequotas/{ns}/");
    let listed = state
        .store
        .range(RangeRequest {
            prefix,
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    for kv in &listed.items {
        let Ok(mut q) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        let mut used = quota::Usage::new();
        let mut seen = Vec::new();
        for key in q["spec"]["hard"]
            .as_object()
            .into_iter()
            .flat_map(|h| h.keys())
        {
            let Some(ri) = resource_for(state, key) else {
                continue;
            };
            if seen.contains(&ri.plural) {
                continue;
            }
            seen.push(ri.plural.clone());
            for o in list(state, storage::prefix(&ri, Some(ns))).await? {
                for (k, v) in quota::usage(&ri, &o) {
                    let e = used.entry(k).or_default();
                    *e = *e + v;
                }
            }
        }
        let status = quota::status(&q, &used);
        if q["status"] == status {
            continue;
        }
        q["status"] = status;
        let bytes = serde_json::to_vec(&q).unwrap_or_default();
        // A concurrent write wins; the next change refreshes again.
        let _ = state
            .store
            .update(&kv.key, bytes.into(), kv.mod_revision)
            .await;
    }
    Ok(())
}

/// Load every `CedarPolicy` object into `adm`, and follow changes (list, then watch; relist
/// on error). Objects that no longer compile (the schema changed) are skipped and logged.
struct CedarPolicies(Arc<Admission>);

impl Follower for CedarPolicies {
    fn reset(&self, items: Vec<(String, Value)>) {
        let names: Vec<String> = items.iter().map(|(_, v)| load_one(&self.0, v)).collect();
        for id in self.0.source_names() {
            if let Some(n) = id.strip_prefix("CedarPolicy/") {
                if !names.iter().any(|x| x == n) {
                    self.0.remove_source(&id);
                }
            }
        }
    }
    fn apply(&self, _key: &str, obj: &Value) {
        load_one(&self.0, obj);
    }
    fn remove(&self, _key: &str, obj: &Value) {
        self.0
            .remove_source(&format!("CedarPolicy/{}", name_of(obj)));
    }
}

/// Keep the admission engine's `CedarPolicy/<name>` sources in step with the store.
pub async fn follow_cedar_policies(adm: Arc<Admission>, store: Arc<dyn Backend>) {
    follow(
        "CedarPolicy",
        CEDAR_POLICY_PREFIX,
        store,
        Arc::new(CedarPolicies(adm)),
    )
    .await
}

fn load_one(adm: &Admission, obj: &Value) -> String {
    let name = name_of(obj);
    let text = obj["spec"]["policy"].as_str().unwrap_or_default();
    match adm.compile_object(&name, text) {
        Ok(p) => adm.set_source(&format!("CedarPolicy/{name}"), p),
        Err(e) => {
            tracing::error!(policy = %name, error = %e, "CedarPolicy does not validate; not loaded");
            adm.remove_source(&format!("CedarPolicy/{name}"));
        }
    }
    name
}
