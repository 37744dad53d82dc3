//! The disruption controller, as upstream's `disruption` controller (`disruption.go`): keeps
//! every PodDisruptionBudget's `status` current so the eviction API (`pods/eviction`) can
//! decide from it alone whether one more voluntary disruption is allowed.
//!
//! For each budget, from the shared pod cache (pods of its namespace its selector matches; a
//! null selector matches none, an empty one all):
//! - `expectedPods` and `desiredHealthy`: an integer `minAvailable` is taken as is against the
//!   number of matching pods; a percentage `minAvailable`, or any `maxUnavailable`, is scaled
//!   against the sum of the scales of the pods' controllers (Deployment through its
//!   ReplicaSet, ReplicaSet, ReplicationController, StatefulSet), rounding up as upstream's
//!   `GetScaledValueFromIntOrPercent(.., true)`; pods without a controller are reported in an
//!   `UnmanagedPods` Warning Event and not counted.
//! - `currentHealthy`: matching pods that are Ready, not being deleted, and not in
//!   `disruptedPods` (pods the eviction API approved, which count as gone for
//!   [`DELETION_TIMEOUT`] while their deletion is on its way).
//! - `disruptedPods` cleanup: entries for pods that are gone, being deleted, or whose deletion
//!   never came within [`DELETION_TIMEOUT`] are dropped (the last with a `NotDeleted` Event);
//!   the budget is re-checked when the oldest remaining entry expires.
//! - `disruptionsAllowed = max(0, currentHealthy - desiredHealthy)`, and 0 while no pod is
//!   expected (a budget whose first pods appear is safe before this controller has seen them).
//! - `observedGeneration`, and the `DisruptionAllowed` condition: `True`/`SufficientPods`,
//!   `False`/`InsufficientPods`, or `False`/`SyncFailed` with `disruptionsAllowed` forced to 0
//!   when the status cannot be computed (upstream's fail-safe: never approve on an error).
//!
//! Invariant: the status is written with `update` on the budget's `resourceVersion`, as
//! upstream's `UpdateStatus`, so a decrement the eviction API wrote meanwhile is never
//! overwritten: the write conflicts and the budget is synced again from the new state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};

use super::events::{Kind, Recorder};
use super::informers::Informer;
use super::replicaset::controller_of;
use super::Error;

const NAME: &str = "disruption-controller";
/// Upstream's `DeletionTimeout`: how long an approved eviction counts the pod as gone.
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);
/// The condition type and reasons of `policy/v1`.
pub const CONDITION: &str = "DisruptionAllowed";
pub const SUFFICIENT_PODS: &str = "SufficientPods";
pub const INSUFFICIENT_PODS: &str = "InsufficientPods";
pub const SYNC_FAILED: &str = "SyncFailed";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(String);

impl From<kube::Error> for ReconcileError {
    fn from(e: kube::Error) -> Self {
        Self(e.to_string())
    }
}

/// The caches the controller reads: pods and every kind whose scale a budget may count.
pub struct Caches {
    pub pods: Store<Pod>,
    pub replica_sets: Store<ReplicaSet>,
    pub deployments: Store<Deployment>,
    pub replication_controllers: Store<ReplicationController>,
    pub stateful_sets: Store<StatefulSet>,
}

struct Ctx {
    client: kube::Client,
    caches: Caches,
    recorder: Recorder,
}

/// The informers a caller shares with the controller.
pub struct Informers<'a> {
    pub budgets: &'a Informer<PodDisruptionBudget>,
    pub pods: &'a Informer<Pod>,
    pub replica_sets: &'a Informer<ReplicaSet>,
    pub deployments: &'a Informer<Deployment>,
    pub replication_controllers: &'a Informer<ReplicationController>,
    pub stateful_sets: &'a Informer<StatefulSet>,
}

/// The pods a budget's selector picks in its namespace (a null selector picks none).
fn selector_of(pdb: &PodDisruptionBudget) -> Option<Selector> {
    let sel = pdb.spec.as_ref()?.selector.clone()?;
    Selector::try_from(sel).ok()
}

fn budgets_for(
    pod: &Pod,
    budgets: &Store<PodDisruptionBudget>,
) -> Vec<ObjectRef<PodDisruptionBudget>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    budgets
        .state()
        .iter()
        .filter(|b| b.metadata.namespace.as_deref() == Some(ns))
        .filter(|b| selector_of(b).is_some_and(|s| s.matches(&labels)))
        .map(|b| ObjectRef::from_obj(b.as_ref()))
        .collect()
}

pub fn run(
    client: kube::Client,
    inf: Informers<'_>,
) -> impl std::future::Future<Output = Result<(), Error>> {
    let waits = [
        inf.budgets.ready().boxed(),
        inf.pods.ready().boxed(),
        inf.replica_sets.ready().boxed(),
        inf.deployments.ready().boxed(),
        inf.replication_controllers.ready().boxed(),
        inf.stateful_sets.ready().boxed(),
    ];
    let budgets = inf.budgets.store();
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), NAME),
        client,
        caches: Caches {
            pods: inf.pods.store(),
            replica_sets: inf.replica_sets.store(),
            deployments: inf.deployments.store(),
            replication_controllers: inf.replication_controllers.store(),
            stateful_sets: inf.stateful_sets.store(),
        },
    });
    let for_pods = budgets.clone();
    let controller = Controller::for_stream(inf.budgets.triggers(), budgets).reconcile_on(
        inf.pods
            .related(move |pod: &Pod| budgets_for(pod, &for_pods)),
    );
    async move {
        // No decision on a half-filled cache: a missing pod would look like a disruption.
        futures::future::join_all(waits).await;
        tracing::info!(controller = NAME, "caches synced, controller started");
        controller
            .run(reconcile, error_policy, ctx)
            .for_each(|res| async move {
                if let Err(e) = res {
                    tracing::debug!(controller = NAME, error = %e, "reconcile failed");
                }
            })
            .await;
        Err(Error::Controller {
            name: NAME,
            detail: "the controller stream ended".into(),
        })
    }
}

fn error_policy(_: Arc<PodDisruptionBudget>, e: &ReconcileError, _: Arc<Ctx>) -> Action {
    tracing::debug!(controller = NAME, error = %e, "retrying");
    Action::requeue(Duration::from_secs(1))
}

/// `GetScaledValueFromIntOrPercent(v, total, roundUp=true)`.
pub fn scaled(v: &IntOrString, total: i32) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid type: string is not a percentage: {s:?}"))?;
            let v = (pct * i64::from(total) + 99).div_euclid(100);
            Ok(v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
        }
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Upstream's finders: the scale of the controller a pod's controller reference names.
fn controller_scale(
    caches: &Caches,
    ns: &str,
    kind: &str,
    name: &str,
    uid: &str,
) -> Option<(String, i32)> {
    fn key<K>(n: &str, ns: &str) -> ObjectRef<K>
    where
        K: kube::Resource<DynamicType = ()>,
    {
        ObjectRef::new(n).within(ns)
    }
    let same = |m: &kube::api::ObjectMeta| m.uid.as_deref() == Some(uid);
    match kind {
        "ReplicaSet" => {
            let rs = caches
                .replica_sets
                .get(&key(name, ns))
                .filter(|r| same(&r.metadata))?;
            // A ReplicaSet a Deployment controls counts with the Deployment's scale.
            if let Some(owner) = controller_of(&rs.metadata).filter(|o| o.kind == "Deployment") {
                let d = caches
                    .deployments
                    .get(&key(&owner.name, ns))
                    .filter(|d| d.metadata.uid.as_deref() == Some(owner.uid.as_str()))?;
                let replicas = d.spec.replicas.unwrap_or(1);
                return Some((owner.uid.clone(), replicas));
            }
            Some((uid.into(), rs.spec.replicas.unwrap_or(1)))
        }
        "ReplicationController" => {
            let rc = caches
                .replication_controllers
                .get(&key(name, ns))
                .filter(|r| same(&r.metadata))?;
            Some((
                uid.into(),
                rc.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            ))
        }
        "StatefulSet" => {
            let s = caches
                .stateful_sets
                .get(&key(name, ns))
                .filter(|r| same(&r.metadata))?;
            Some((uid.into(), s.spec.replicas.unwrap_or(1)))
        }
        _ => None,
    }
}

/// What a budget's status is computed from.
#[derive(Debug, PartialEq)]
pub struct Counts {
    pub expected: i32,
    pub desired_healthy: i32,
    pub unmanaged: Vec<String>,
}

/// Upstream's `getExpectedPodCount`.
fn expected_counts(
    caches: &Caches,
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
) -> Result<Counts, String> {
    let spec = pdb.spec.clone().unwrap_or_default();
    let ns = pdb.metadata.namespace.clone().unwrap_or_default();
    let scale = || -> Result<(i32, Vec<String>), String> {
        let mut scales: BTreeMap<String, i32> = BTreeMap::new();
        let mut unmanaged = Vec::new();
        for pod in pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let Some(owner) = controller_of(&pod.metadata) else {
                unmanaged.push(name);
                continue;
            };
            if scales.contains_key(&owner.uid) {
                continue;
            }
            let Some((uid, n)) =
                controller_scale(caches, &ns, &owner.kind, &owner.name, &owner.uid)
            else {
                return Err(format!("found no controllers for pod {name:?}"));
            };
            scales.insert(owner.uid.clone(), 0);
            scales.insert(uid, n);
        }
        Ok((
            scales
                .values()
                .map(|v| i64::from(*v))
                .sum::<i64>()
                .min(i64::from(i32::MAX)) as i32,
            unmanaged,
        ))
    };
    if let Some(max) = &spec.max_unavailable {
        let (expected, unmanaged) = scale()?;
        let max = scaled(max, expected)?;
        return Ok(Counts {
            expected,
            desired_healthy: expected.saturating_sub(max).max(0),
            unmanaged,
        });
    }
    match &spec.min_available {
        Some(IntOrString::Int(i)) => Ok(Counts {
            expected: pods.len().min(i32::MAX as usize) as i32,
            desired_healthy: *i,
            unmanaged: Vec::new(),
        }),
        Some(v) => {
            let (expected, unmanaged) = scale()?;
            Ok(Counts {
                expected,
                desired_healthy: scaled(v, expected)?,
                unmanaged,
            })
        }
        None => Ok(Counts {
            expected: 0,
            desired_healthy: 0,
            unmanaged: Vec::new(),
        }),
    }
}

/// Upstream's `SetStatusCondition`: the transition time moves only when the status changes.
fn set_condition(
    conds: &mut Vec<Condition>,
    status: &str,
    reason: &str,
    message: &str,
    generation: i64,
) {
    let now = Time(
        jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
            .unwrap_or_else(|_| jiff::Timestamp::now()),
    );
    match conds.iter_mut().find(|c| c.type_ == CONDITION) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status.into();
            c.reason = reason.into();
            c.message = message.into();
            c.observed_generation = Some(generation);
        }
        None => conds.push(Condition {
            type_: CONDITION.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: Some(generation),
            last_transition_time: now,
        }),
    }
}

/// The `DisruptionAllowed` condition for a computed status.
fn allowed_condition(status: &mut PodDisruptionBudgetStatus) {
    let (s, r) = if status.disruptions_allowed.unwrap_or(0) > 0 {
        ("True", SUFFICIENT_PODS)
    } else {
        ("False", INSUFFICIENT_PODS)
    };
    let generation = status.observed_generation.unwrap_or(0);
    let conds = status.conditions.get_or_insert_with(Vec::new);
    set_condition(conds, s, r, "", generation);
}

fn conditions_up_to_date(status: &PodDisruptionBudgetStatus) -> bool {
    let Some(c) = status
        .conditions
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.type_ == CONDITION))
    else {
        return false;
    };
    let want = if status.disruptions_allowed.unwrap_or(0) > 0 {
        ("True", SUFFICIENT_PODS)
    } else {
        ("False", INSUFFICIENT_PODS)
    };
    c.observed_generation == status.observed_generation
        && (c.status.as_str(), c.reason.as_str()) == want
}

async fn write_status(
    ctx: &Ctx,
    pdb: &PodDisruptionBudget,
    status: PodDisruptionBudgetStatus,
) -> Result<(), ReconcileError> {
    let ns = pdb.metadata.namespace.clone().unwrap_or_default();
    let name = pdb.metadata.name.clone().unwrap_or_default();
    let mut next = pdb.clone();
    next.status = Some(status);
    let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
    // A conflict means the eviction API (or another sync) wrote first: the watch brings the
    // new state and the budget is synced again.
    api.replace_status(&name, &PostParams::default(), &next)
        .await?;
    Ok(())
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let Some(ns) = pdb.metadata.namespace.clone() else {
        return Ok(Action::await_change());
    };
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let pods: Vec<Arc<Pod>> = match selector_of(&pdb) {
        Some(sel) => ctx
            .caches
            .pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
            .filter(|p| sel.matches(&p.metadata.labels.clone().unwrap_or_default()))
            .collect(),
        None => Vec::new(),
    };
    if pods.is_empty() {
        ctx.recorder.record(
            pdb.as_ref(),
            Kind::Normal,
            "NoPods",
            "No matching pods found".into(),
        );
    }
    let old = pdb.status.clone().unwrap_or_default();
    let generation = pdb.metadata.generation.unwrap_or(0);
    let counts = match expected_counts(&ctx.caches, &pdb, &pods) {
        Ok(c) => c,
        Err(e) => {
            ctx.recorder.record(
                pdb.as_ref(),
                Kind::Warning,
                "CalculateExpectedPodCountFailed",
                format!("Failed to calculate the number of expected pods: {e}"),
            );
            // Fail safe: no eviction is approved from a status we could not compute.
            let mut status = old.clone();
            status.disruptions_allowed = Some(0);
            let og = status.observed_generation.unwrap_or(0);
            set_condition(
                status.conditions.get_or_insert_with(Vec::new),
                "False",
                SYNC_FAILED,
                &e,
                og,
            );
            if status != old {
                write_status(&ctx, &pdb, status).await?;
            }
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    if !counts.unmanaged.is_empty() {
        let sel = pdb
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| serde_json::to_string(s).ok())
            .unwrap_or_default();
        ctx.recorder.record(
            pdb.as_ref(),
            Kind::Warning,
            "UnmanagedPods",
            format!(
                "Pods selected by this PodDisruptionBudget (selector: {sel}) were found to be unmanaged. \
                 As a result, the status of the PDB cannot be calculated correctly, which may result in \
                 undefined behavior. To account for these pods please set \".spec.minAvailable\" field of \
                 the PDB to an integer value."
            ),
        );
    }
    // Rebuild disruptedPods: keep entries for live pods whose deletion is still expected.
    let now = jiff::Timestamp::now();
    let timeout = jiff::SignedDuration::try_from(DELETION_TIMEOUT).unwrap_or_default();
    let mut disrupted: BTreeMap<String, Time> = BTreeMap::new();
    let mut recheck: Option<jiff::Timestamp> = None;
    let old_disrupted = old.disrupted_pods.clone().unwrap_or_default();
    for pod in &pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(at) = old_disrupted.get(&name) else {
            continue;
        };
        let expected_deletion = at.0 + timeout;
        if expected_deletion < now {
            ctx.recorder.record(
                pod.as_ref(),
                Kind::Warning,
                "NotDeleted",
                format!(
                    "Pod was expected by PDB {ns}/{} to be deleted but it wasn't",
                    pdb.metadata.name.as_deref().unwrap_or_default()
                ),
            );
        } else {
            recheck = Some(recheck.map_or(expected_deletion, |r| r.min(expected_deletion)));
            disrupted.insert(name, at.clone());
        }
    }
    let healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or_default()))
        .filter(|p| is_ready(p))
        .count()
        .min(i32::MAX as usize) as i32;
    let mut allowed = healthy - counts.desired_healthy;
    if counts.expected <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let unchanged = old.current_healthy == Some(healthy)
        && old.desired_healthy == Some(counts.desired_healthy)
        && old.expected_pods == Some(counts.expected)
        && old.disruptions_allowed == Some(allowed)
        && old.disrupted_pods.clone().unwrap_or_default() == disrupted
        && old.observed_generation == Some(generation)
        && conditions_up_to_date(&old);
    if !unchanged {
        let mut status = PodDisruptionBudgetStatus {
            current_healthy: Some(healthy),
            desired_healthy: Some(counts.desired_healthy),
            expected_pods: Some(counts.expected),
            disruptions_allowed: Some(allowed),
            disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
            observed_generation: Some(generation),
            conditions: old.conditions.clone(),
        };
        allowed_condition(&mut status);
        write_status(&ctx, &pdb, status).await?;
    }
    Ok(match recheck {
        Some(at) => {
            let wait = now.duration_until(at).unsigned_abs();
            Action::requeue(wait + Duration::from_secs(1))
        }
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up_as_upstream() {
        assert_eq!(scaled(&IntOrString::Int(2), 10), Ok(2));
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3), Ok(2));
        assert_eq!(scaled(&IntOrString::String("34%".into()), 3), Ok(2));
        assert_eq!(scaled(&IntOrString::String("0%".into()), 3), Ok(0));
        assert_eq!(scaled(&IntOrString::String("100%".into()), 7), Ok(7));
        assert!(scaled(&IntOrString::String("half".into()), 3).is_err());
    }

    #[test]
    fn the_condition_follows_disruptions_allowed() {
        let mut s = PodDisruptionBudgetStatus {
            disruptions_allowed: Some(1),
            observed_generation: Some(3),
            ..Default::default()
        };
        allowed_condition(&mut s);
        assert!(conditions_up_to_date(&s));
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", SUFFICIENT_PODS)
        );
        s.disruptions_allowed = Some(0);
        assert!(!conditions_up_to_date(&s));
        allowed_condition(&mut s);
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", INSUFFICIENT_PODS)
        );
        assert_eq!(s.conditions.as_ref().unwrap().len(), 1);
    }
}
