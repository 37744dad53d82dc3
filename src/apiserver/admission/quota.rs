//! ResourceQuota on the write path (decisions in `auth::admission::quota`).
//!
//! Charging is atomic, as upstream's plugin: a create that fits a quota adds its usage to the
//! quota's `status.used` with a compare-and-swap on the quota object, and retries from a
//! fresh read when another create charged first; so N concurrent creates against room for M
//! admit exactly M. `status.used` is the truth for admission; when it lacks a resource (a
//! quota no one has reconciled yet) the usage is computed from the stored objects.
//!
//! Whether a namespace has quotas at all comes from the followed cache (`cache.rs`), so
//! namespaces without quotas pay no store read; a quota created a few milliseconds ago may
//! not be enforced yet, as with upstream's informer-fed plugin.
//!
//! Reconciliation (upstream's quota controller) recomputes `status.used` from the stored
//! objects after deletes, updates (a pod turning terminal frees its share), quota writes and
//! creates that failed after being charged. Like upstream's controller it can briefly miss a
//! create that was charged but not yet stored; the next change corrects it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{forbidden, list, Denied};
use crate::api::ResourceInfo;
use crate::apiserver::context::Ctx;
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::storage::Mutation;
use crate::apiserver::{storage, State};
use crate::auth::admission::quota;
use crate::store::{KeyValue, RangeRequest};

async fn quotas(state: &State, ns: &str) -> ApiResult<Vec<KeyValue>> {
    Ok(state
        .store
        .range(RangeRequest {
            prefix: storage::Builtin::ResourceQuotas.in_namespace(ns),
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .items)
}

/// The namespace's usage of `ri` objects, from the store.
async fn stored_usage(state: &State, ri: &ResourceInfo, ns: &str) -> ApiResult<quota::Usage> {
    let mut used = quota::Usage::new();
    for o in list(state, storage::prefix(ri, Some(ns))).await? {
        for (k, v) in quota::usage(ri, &o) {
            let e = used.entry(k).or_default();
            *e = *e + v;
        }
    }
    Ok(used)
}

/// Admit `obj` (being created) against every quota of its namespace and charge it.
/// Returns whether any quota was charged (so a failed create can be reconciled).
pub async fn charge(ctx: &Ctx, obj: &Value, ns: &str, name: &str) -> Result<bool, Denied> {
    if ctx.state.admission_caches.quotas.any_in(ns) == Some(false) {
        return Ok(false);
    }
    let listed = quotas(&ctx.state, ns).await?;
    if listed.is_empty() {
        return Ok(false);
    }
    let delta = quota::usage(&ctx.ri, obj);
    // The namespace's usage from the store, read at most once, only when a quota's status
    // does not say it yet.
    let from_store = tokio::sync::OnceCell::<quota::Usage>::new();
    let mut charged = false;
    for kv in listed {
        // Upstream's quota evaluator updates each quota's status with a compare-and-swap and
        // retries on conflict; the store's guarded update does both (a quota deleted
        // meanwhile has nothing to charge).
        let quota_name = kv.key.rsplit('/').next().unwrap_or_default().to_string();
        let (delta, from_store) = (&delta, &from_store);
        let written =
            storage::guaranteed_update(ctx.state.store.as_ref(), &kv.key, move |q| async move {
                let Some(mut q) = q else {
                    return Ok(Mutation::Keep(false));
                };
                let hard = q["spec"]["hard"].as_object().cloned().unwrap_or_default();
                let wanted: Vec<String> = hard
                    .keys()
                    .filter(|k| delta.get(*k).is_some_and(|d| d.0 > 0))
                    .cloned()
                    .collect();
                let mut used = quota::Usage::new();
                for k in &wanted {
                    match q["status"]["used"][k.as_str()]
                        .as_str()
                        .and_then(crate::auth::admission::quantity::Milli::parse)
                    {
                        Some(v) => {
                            used.insert(k.clone(), v);
                        }
                        None => {
                            let from_store = from_store
                                .get_or_try_init(|| stored_usage(&ctx.state, &ctx.ri, ns))
                                .await?;
                            let v = from_store.get(k.as_str()).copied().unwrap_or_default();
                            used.insert(k.clone(), v);
                        }
                    }
                }
                if let Err(msg) = quota::check(&ctx.ri, obj, &q, &used, delta) {
                    return Err(forbidden(ctx, name, &msg));
                }
                if wanted.is_empty() || ctx.dry_run() {
                    return Ok(Mutation::Keep(false));
                }
                let mut after = used.clone();
                for k in &wanted {
                    let e = after.entry(k.clone()).or_default();
                    *e = *e + delta.get(k.as_str()).copied().unwrap_or_default();
                }
                // Keep what the status says about resources this object does not use.
                let mut status = quota::status(&q, &after);
                for (k, v) in q["status"]["used"].as_object().into_iter().flatten() {
                    if !wanted.contains(k) {
                        status["used"][k] = v.clone();
                    }
                }
                q["status"] = status;
                Ok(Mutation::Write(q, true))
            })
            .await;
        match written {
            Ok(c) => charged |= c,
            Err(e) if e.code == 409 => {
                return Err(match resource_for(&ctx.state, "resourcequotas") {
                    Some(ri) => ApiError::modified(&ri, &quota_name),
                    None => ApiError::new(409, "Conflict", "the quota is busy; try again"),
                }
                .into())
            }
            // The only 403 the charge makes is this quota refusing the object.
            Err(e) if e.code == 403 => {
                return Err(Denied::by(format!("builtin/ResourceQuota/{quota_name}"), e))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(charged)
}

/// Reconcile the namespace's quotas after a change that can free or change usage. Creates
/// already charged their usage; only a create whose store write failed after charging asks
/// (`charged_but_failed`).
pub fn after_change(ctx: &Ctx, created: bool) {
    if !ctx.state.enforcement.admits() || !quota::tracked(&ctx.ri) || ctx.dry_run() {
        return;
    }
    let is_quota = ctx.ri.group.is_empty() && ctx.ri.plural == "resourcequotas";
    if created && !is_quota {
        return;
    }
    reconcile_later(
        ctx.state.clone(),
        ctx.namespace().to_string(),
        Duration::ZERO,
    );
}

/// A create was charged and then failed: give the charge back by reconciling.
pub fn charged_but_failed(ctx: &Ctx) {
    reconcile_later(
        ctx.state.clone(),
        ctx.namespace().to_string(),
        Duration::from_millis(200),
    );
}

fn reconcile_later(state: Arc<State>, ns: String, after: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        if let Err(e) = refresh(&state, &ns).await {
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

async fn refresh(state: &Arc<State>, ns: &str) -> ApiResult<()> {
    for kv in quotas(state, ns).await? {
        let Ok(mut q) = storage::decode_object(&kv) else {
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
            for (k, v) in stored_usage(state, &ri, ns).await? {
                let e = used.entry(k).or_default();
                *e = *e + v;
            }
        }
        let status = quota::status(&q, &used);
        if q["status"] == status {
            continue;
        }
        q["status"] = status;
        let Ok(bytes) = storage::encode(&q) else {
            continue;
        };
        // One attempt, not a retry loop: a concurrent charge wins, and the next change
        // reconciles again.
        let _ = state.store.update(&kv.key, bytes, kv.mod_revision).await;
    }
    Ok(())
}
