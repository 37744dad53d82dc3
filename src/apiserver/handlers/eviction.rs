//! `POST pods/<name>/eviction`, as upstream's `EvictionREST`: a pod is deleted only if the
//! PodDisruptionBudget that selects it allows one more disruption.
//!
//! - A pod that is Pending, Succeeded, Failed or already being deleted is deleted without
//!   consulting any budget (its disruption already happened, or never mattered).
//! - Otherwise the budgets of its namespace whose selector matches it are consulted (an empty
//!   or invalid selector matches nothing here): none → delete; more than one → 500 "This pod
//!   has more than one PodDisruptionBudget, which the eviction subresource does not support.";
//!   one → its status decides: `observedGeneration` behind `generation` → 429 ("still being
//!   processed"), `disruptionsAllowed` negative or more than 2,000 `disruptedPods` → 403,
//!   `disruptionsAllowed == 0` → 429 "Cannot evict pod as it would violate the pod's
//!   disruption budget." with a `DisruptionBudget` cause naming the healthy counts;
//!   otherwise `disruptionsAllowed` is decremented and the pod recorded in `disruptedPods`
//!   (compare-and-swap on the budget, re-checked on conflict) before the pod is deleted. The
//!   disruption controller (`controllers::disruption`) clears the entry once the pod is gone.
//! - An unready pod does not count as healthy: with `unhealthyPodEvictionPolicy: AlwaysAllow`,
//!   or when the budget is met anyway (`currentHealthy >= desiredHealthy > 0`), it is deleted
//!   without a decrement, on the pod's resourceVersion (a pod that became ready meanwhile
//!   answers 429 so the client retries).
//! - dryRun checks everything and writes nothing.
//!
//! The delete itself is graceful for a bound pod (`deleteOptions.gracePeriodSeconds`, else the
//! pod's own grace period) and immediate for an unbound one, as the pod delete path.

use http::Response;
use hyper::body::Incoming;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::{json, Value};

use super::{read_body, Ctx};
use crate::apiserver::edge::body::{json_response, Body};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::storage::{self, Builtin, Mutation, Retry};

/// Upstream's `MaxDisruptedPodSize`.
const MAX_DISRUPTED_PODS: usize = 2000;
/// Delete attempts on conflicts with the kubelet's or scheduler's status writes.
const RETRIES: usize = 10;
const VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

fn too_many_requests(cause: String, retry_after: u64) -> ApiError {
    let mut details = json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]});
    if retry_after > 0 {
        details["retryAfterSeconds"] = json!(retry_after);
    }
    ApiError::new(429, "TooManyRequests", VIOLATION).with_details(details)
}

fn still_processing(pdb: &str) -> ApiError {
    too_many_requests(
        format!("The disruption budget {pdb} is still being processed by the server."),
        10,
    )
}

fn pdb_forbidden(pdb: &str, why: &str) -> ApiError {
    ApiError::new(
        403,
        "Forbidden",
        format!("poddisruptionbudget.policy \"{pdb}\" is forbidden: {why}"),
    )
    .with_details(json!({"name": pdb, "group": "policy", "kind": "poddisruptionbudget"}))
}

fn can_ignore_budgets(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Pending" | "Succeeded" | "Failed")
    ) || !pod["metadata"]["deletionTimestamp"].is_null()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The budgets of the pod's namespace that select it.
async fn budgets_for(ctx: &Ctx, pod: &Value) -> ApiResult<Vec<PodDisruptionBudget>> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let labels: crate::api::matching::Labels =
        serde_json::from_value(pod["metadata"]["labels"].clone()).unwrap_or_default();
    let listed = storage::list(
        ctx.state.store.as_ref(),
        Builtin::PodDisruptionBudgets.in_namespace(ns),
    )
    .await?;
    Ok(listed
        .into_iter()
        .filter_map(|v| serde_json::from_value::<PodDisruptionBudget>(v).ok())
        .filter(|b| {
            let sel = b.spec.as_ref().and_then(|s| s.selector.as_ref());
            // An empty selector must match nothing here, not everything.
            let empty = sel.is_none_or(|s| {
                s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                    && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
            });
            !empty && crate::api::matching::label_selector(sel, &labels)
        })
        .collect())
}

/// What the budget decided.
enum Verdict {
    /// Delete, the budget already charged (or no budget applies).
    Delete,
    /// Delete without charging the budget, but only the pod version that was judged.
    DeleteIfUnchanged,
}

/// Upstream's `checkAndDecrement` on the stored budget, compare-and-swap, re-judged on a
/// lost race.
async fn charge(
    ctx: &Ctx,
    ns: &str,
    pdb_name: &str,
    pod_name: &str,
    dry_run: bool,
) -> ApiResult<()> {
    let key = Builtin::PodDisruptionBudgets.key(ns, pdb_name);
    let pdb_name = pdb_name.to_string();
    let pod_name = pod_name.to_string();
    let outcome = storage::guaranteed_update(ctx.state.store.as_ref(), &key, |current| {
        let pdb_name = pdb_name.clone();
        let pod_name = pod_name.clone();
        async move {
            let Some(mut obj) = current else {
                // Deleted since we listed it: nothing limits this eviction any more.
                return Ok(Mutation::Keep(Ok(())));
            };
            let status = obj["status"].clone();
            let generation = obj["metadata"]["generation"].as_i64().unwrap_or(0);
            let observed = status["observedGeneration"].as_i64().unwrap_or(0);
            if observed < generation {
                return Ok(Mutation::Keep(Err(still_processing(&pdb_name))));
            }
            let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
            if allowed < 0 {
                return Ok(Mutation::Keep(Err(pdb_forbidden(&pdb_name, "pdb disruptions allowed is negative"))));
            }
            let disrupted = status["disruptedPods"].as_object().map_or(0, |m| m.len());
            if disrupted > MAX_DISRUPTED_PODS {
                return Ok(Mutation::Keep(Err(pdb_forbidden(
                    &pdb_name,
                    "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
                ))));
            }
            if allowed == 0 {
                return Ok(Mutation::Keep(Err(too_many_requests(
                    format!(
                        "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                        status["desiredHealthy"].as_i64().unwrap_or(0),
                        status["currentHealthy"].as_i64().unwrap_or(0)
                    ),
                    0,
                ))));
            }
            if dry_run {
                return Ok(Mutation::Keep(Ok(())));
            }
            let left = allowed - 1;
            obj["status"]["disruptionsAllowed"] = json!(left);
            if left == 0 {
                set_insufficient(&mut obj["status"], observed);
            }
            let now = jiff::Timestamp::now();
            let now = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
            if !obj["status"]["disruptedPods"].is_object() {
                obj["status"]["disruptedPods"] = json!({});
            }
            obj["status"]["disruptedPods"][pod_name.as_str()] = json!(now.to_string());
            Ok(Mutation::Write(obj, Ok(())))
        }
    })
    .await
    .map_err(|e| {
        if e.code == 409 {
            ApiError::new(
                504,
                "Timeout",
                format!("couldn't update PodDisruptionBudget \"{pdb_name}\" due to conflicts"),
            )
        } else {
            e
        }
    })?;
    outcome
}

/// The `DisruptionAllowed` condition once the last allowed disruption is spent (upstream's
/// `UpdateDisruptionAllowedCondition`).
fn set_insufficient(status: &mut Value, generation: i64) {
    let now = jiff::Timestamp::now();
    let now = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
    let cond = json!({
        "type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods",
        "message": "", "observedGeneration": generation, "lastTransitionTime": now.to_string(),
    });
    let conds = status["conditions"].as_array_mut();
    match conds {
        Some(list) => match list.iter_mut().find(|c| c["type"] == "DisruptionAllowed") {
            Some(c) => {
                if c["status"] != "False" {
                    c["lastTransitionTime"] = cond["lastTransitionTime"].clone();
                }
                c["status"] = json!("False");
                c["reason"] = json!("InsufficientPods");
                c["observedGeneration"] = json!(generation);
            }
            None => list.push(cond),
        },
        None => status["conditions"] = json!([cond]),
    }
}

async fn judge(ctx: &Ctx, pod: &Value, dry_run: bool) -> ApiResult<Verdict> {
    let budgets = budgets_for(ctx, pod).await?;
    let pdb = match budgets.as_slice() {
        [] => return Ok(Verdict::Delete),
        [one] => one,
        _ => {
            return Err(ApiError::new(
                500,
                "InternalError",
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ))
        }
    };
    let pdb_name = pdb.metadata.name.clone().unwrap_or_default();
    let status = pdb.status.clone().unwrap_or_default();
    let always = pdb
        .spec
        .as_ref()
        .and_then(|s| s.unhealthy_pod_eviction_policy.as_deref())
        == Some("AlwaysAllow");
    if !is_ready(pod)
        && (always
            || (status.current_healthy.unwrap_or(0) >= status.desired_healthy.unwrap_or(0)
                && status.desired_healthy.unwrap_or(0) > 0))
    {
        return Ok(Verdict::DeleteIfUnchanged);
    }
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    charge(ctx, ns, &pdb_name, name, dry_run).await?;
    Ok(Verdict::Delete)
}

pub(super) async fn eviction(ctx: &mut Ctx, body_in: Incoming) -> ApiResult<Response<Body>> {
    let name = ctx.info.name.clone();
    let (_, ev) = read_body(ctx, body_in).await?;
    if ev["metadata"]["name"].as_str() != Some(name.as_str()) {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let opts = &ev["deleteOptions"];
    let grace = opts["gracePeriodSeconds"].as_i64();
    let dry_run = ctx.dry_run()
        || opts["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    let want_uid = opts["preconditions"]["uid"].as_str().map(str::to_string);
    let want_rv = opts["preconditions"]["resourceVersion"]
        .as_str()
        .map(str::to_string);
    let mut verdict: Option<Verdict> = None;
    // Upstream retries on conflict: the scheduler or kubelet may write the pod's status between
    // our read and the delete.
    let mut retry = Retry::new(RETRIES);
    loop {
        let (current, rev) = ctx.load(&name).await?;
        let uid = current["metadata"]["uid"].as_str().unwrap_or_default();
        if let Some(want) = &want_uid {
            if want != uid {
                return Err(ApiError::conflict(
                    &ctx.ri,
                    &name,
                    &format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                ),
                ));
            }
        }
        if let Some(want) = &want_rv {
            if *want != rev.to_string() {
                return Err(ApiError::conflict(&ctx.ri, &name, &format!(
                    "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rev}"
                )));
            }
        }
        // The budget is judged once, on the first pod version that needs it.
        if verdict.is_none() && !can_ignore_budgets(&current) {
            verdict = Some(judge(ctx, &current, dry_run).await?);
        }
        if dry_run {
            break;
        }
        let result = delete_pod(ctx, &name, current, rev, grace).await;
        match result {
            Ok(()) => break,
            Err(e) if e.code == 409 && matches!(verdict, Some(Verdict::DeleteIfUnchanged)) => {
                // The unready pod changed (it may be ready now): the client retries the
                // eviction, which judges again.
                let pdb = e.message.clone();
                tracing::debug!(pod = %name, error = %pdb, "unready pod changed during eviction");
                return Err(too_many_requests(
                    format!("The disruption budget for pod {name} is still being processed by the server."),
                    10,
                ));
            }
            Err(e) if e.code == 409 && want_rv.is_none() => retry.conflict(e)?,
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// Graceful deletion of a bound pod, immediate deletion of an unbound one, on revision `rev`.
async fn delete_pod(
    ctx: &Ctx,
    name: &str,
    current: Value,
    rev: u64,
    grace: Option<i64>,
) -> ApiResult<()> {
    let bound = current["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    if bound && grace != Some(0) {
        if !current["metadata"]["deletionTimestamp"].is_null() {
            // Already being deleted gracefully: the eviction is done.
            return Ok(());
        }
        let mut obj = current.clone();
        let g = grace
            .or_else(|| current["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30);
        let when = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(g);
        let when = jiff::Timestamp::from_second(when.as_second()).unwrap_or(when);
        obj["metadata"]["deletionTimestamp"] = json!(when.to_string());
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(g);
        super::store_update(ctx, &mut obj, rev).await
    } else {
        ctx.state
            .store
            .delete(&ctx.key(name), rev)
            .await
            .map(|_| ())
            .map_err(|e| ApiError::from_store(e, &ctx.ri, name))
    }
}
