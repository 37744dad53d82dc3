//! The ReplicaSet controller, as upstream's `replicaset` controller (`replica_set.go`): keeps
//! `spec.replicas` active pods that match the selector, and reports them in `status`.
//!
//! - Pods are claimed as upstream's `ControllerRefManager`: pods controlled by this set and
//!   matching its selector are its own; matching pods with no controller are adopted (a
//!   controller `ownerReference` with `blockOwnerDeletion`); controlled pods that no longer match
//!   are released.
//! - Missing pods are created in slow-start batches (1, 2, 4, ... up to 500 per sync), stopping
//!   at the first failure, each recorded as a `SuccessfulCreate` / `FailedCreate` Event; extra
//!   pods are deleted in upstream's rank order (unscheduled, then pending, not ready, recently
//!   ready, restarted, newest first) with `SuccessfulDelete` Events.
//! - Expectations, as upstream: after creating or deleting, the set waits until the shared pod
//!   cache shows those changes before it counts again, so a lagging cache never causes
//!   double creation.
//! - Status: `replicas` (active pods), `fullyLabeledReplicas`, `readyReplicas`,
//!   `availableReplicas` (ready for `minReadySeconds`), `observedGeneration`, and the
//!   `ReplicaFailure` condition while creates fail.
//!
//! The logic is shared with the ReplicationController (`replication_controller.rs`), which
//! hands in its own spec through [`Replicated`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use super::events::{Kind, Recorder};
use super::informers::Informer;
use super::Error;

const NAME: &str = "replicaset-controller";
/// Upstream's `BurstReplicas`: at most this many creates or deletes per sync.
const BURST: usize = 500;
/// Upstream's `ExpectationsTimeout`.
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);
/// How soon a sync whose create failed (quota, admission) is tried again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(pub String);

impl From<kube::Error> for ReconcileError {
    fn from(e: kube::Error) -> Self {
        Self(e.to_string())
    }
}

/// What a replica controller (ReplicaSet or ReplicationController) asks for.
pub struct Replicated {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub replicas: i32,
    pub selector: Selector,
    pub template: PodTemplateSpec,
    pub min_ready_seconds: i32,
    pub deleting: bool,
}

/// What the controller observed, for the owner's status.
#[derive(Debug, Default, PartialEq)]
pub struct Observed {
    pub replicas: i32,
    pub fully_labeled: i32,
    pub ready: i32,
    pub available: i32,
    /// A create failed this sync (upstream's ReplicaFailure condition).
    pub failure: Option<String>,
    /// When the next pod becomes available (minReadySeconds), to requeue then.
    pub next_available: Option<Duration>,
}

/// Pods created or deleted but not yet seen in the cache, per owner uid.
#[derive(Default)]
pub struct Expectations {
    pending: Mutex<HashMap<String, Pending>>,
}

struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: std::time::Instant,
}

impl Expectations {
    pub fn satisfied(&self, owner: &str, pods: &[Arc<Pod>]) -> bool {
        let Ok(mut map) = self.pending.lock() else {
            return true;
        };
        let Some(p) = map.get_mut(owner) else {
            return true;
        };
        let names: HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        let alive: HashSet<&str> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        p.creates.retain(|n| !names.contains(n.as_str()));
        p.deletes.retain(|u| alive.contains(u.as_str()));
        if (p.creates.is_empty() && p.deletes.is_empty())
            || p.since.elapsed() > EXPECTATIONS_TIMEOUT
        {
            map.remove(owner);
            return true;
        }
        false
    }

    fn expect(&self, owner: &str, creates: Vec<String>, deletes: Vec<String>) {
        if creates.is_empty() && deletes.is_empty() {
            return;
        }
        if let Ok(mut map) = self.pending.lock() {
            let p = map.entry(owner.to_string()).or_insert_with(|| Pending {
                creates: HashSet::new(),
                deletes: HashSet::new(),
                since: std::time::Instant::now(),
            });
            p.creates.extend(creates);
            p.deletes.extend(deletes);
            p.since = std::time::Instant::now();
        }
    }

    pub fn expect_creates(&self, owner: &str, names: Vec<String>) {
        self.expect(owner, names, Vec::new());
    }

    pub fn forget(&self, owner: &str) {
        if let Ok(mut map) = self.pending.lock() {
            map.remove(owner);
        }
    }
}

pub struct Ctx {
    pub client: kube::Client,
    pub pods: Store<Pod>,
    pub expectations: Expectations,
    pub recorder: Recorder,
}

pub fn run(
    client: kube::Client,
    sets: &Informer<ReplicaSet>,
    pods: &Informer<Pod>,
) -> impl std::future::Future<Output = Result<(), Error>> {
    // kube-runtime's applier waits for its store with a wait that wakes one waiter only;
    // waiting here first makes that wait return at once.
    let main_ready = sets.ready();
    let pods_ready = pods.ready();
    let set_store = sets.store();
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), NAME),
        client,
        pods: pods.store(),
        expectations: Expectations::default(),
    });
    let controller = Controller::for_stream(sets.triggers(), set_store.clone()).reconcile_on(
        pods.related(move |pod: &Pod| {
            owners_of(pod, &set_store, "ReplicaSet", |rs: &ReplicaSet| {
                Selector::try_from(rs.spec.selector.clone()).ok()
            })
        }),
    );
    async move {
        // Decide nothing before the caches hold a full list: a half-filled cache would look
        // like missing objects.
        pods_ready.await;
        main_ready.await;
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

/// The owners a pod event concerns: its controller of `kind`, or (for an orphan) every owner
/// in its namespace whose selector matches it, which may adopt it.
pub fn owners_of<K>(
    pod: &Pod,
    store: &Store<K>,
    kind: &str,
    selector: impl Fn(&K) -> Option<Selector>,
) -> Vec<ObjectRef<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone,
{
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    if let Some(c) = controller_of(&pod.metadata) {
        if c.kind == kind {
            return vec![ObjectRef::new(&c.name).within(&ns)];
        }
        return Vec::new();
    }
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns.as_str()))
        .filter(|o| selector(o).is_some_and(|s| !s.selects_all() && s.matches(&labels)))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let (Some(ns), Some(name), Some(uid), Some(spec)) = (
        rs.metadata.namespace.clone(),
        rs.metadata.name.clone(),
        rs.metadata.uid.clone(),
        Some(&rs.spec),
    ) else {
        return Ok(Action::await_change());
    };
    let Ok(selector) = Selector::try_from(spec.selector.clone()) else {
        return Ok(Action::await_change());
    };
    let want = Replicated {
        api_version: "apps/v1",
        kind: "ReplicaSet",
        namespace: ns.clone(),
        name: name.clone(),
        uid,
        replicas: spec.replicas.unwrap_or(1),
        selector,
        template: spec.template.clone().unwrap_or_default(),
        min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
        deleting: rs.metadata.deletion_timestamp.is_some(),
    };
    let observed = sync(&ctx, &want).await?;
    let status = rs.status.clone().unwrap_or_default();
    let generation = rs.metadata.generation;
    let mut conditions = status.conditions.clone().unwrap_or_default();
    conditions.retain(|c| c.type_.as_deref() != Some("ReplicaFailure"));
    if let Some(msg) = &observed.failure {
        conditions.push(k8s_openapi::api::apps::v1::ReplicaSetCondition {
            type_: Some("ReplicaFailure".into()),
            status: Some("True".into()),
            reason: Some("FailedCreate".into()),
            message: Some(msg.clone()),
            last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::now(),
            )),
        });
    }
    let changed = status.replicas != observed.replicas
        || status.fully_labeled_replicas.unwrap_or(0) != observed.fully_labeled
        || status.ready_replicas.unwrap_or(0) != observed.ready
        || status.available_replicas.unwrap_or(0) != observed.available
        || status.observed_generation != generation
        || status.conditions.clone().unwrap_or_default().len() != conditions.len();
    if changed {
        let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({"status": {
            "replicas": observed.replicas,
            "fullyLabeledReplicas": observed.fully_labeled,
            "readyReplicas": observed.ready,
            "availableReplicas": observed.available,
            "observedGeneration": generation,
            "conditions": conditions,
        }});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    // A failed create is retried as upstream's rate-limited requeue would (each retry that
    // fails again records the same `FailedCreate`, which the event correlator folds).
    if observed.failure.is_some() {
        return Ok(Action::requeue(RETRY_AFTER_FAILURE));
    }
    Ok(match observed.next_available {
        Some(d) => Action::requeue(d + Duration::from_millis(100)),
        None => Action::await_change(),
    })
}

/// Pod is active: not finished and not being deleted (upstream's `IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// When the pod's Ready condition turned true, if it is ready.
pub fn ready_since(pod: &Pod) -> Option<jiff::Timestamp> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map(|t| t.0)
                .unwrap_or_else(jiff::Timestamp::now)
        })
}

/// Ready for at least `min_ready` seconds; otherwise how long until it will be.
pub fn available(pod: &Pod, min_ready: i32) -> Result<(), Option<Duration>> {
    let Some(since) = ready_since(pod) else {
        return Err(None);
    };
    if min_ready <= 0 {
        return Ok(());
    }
    let until = since + jiff::SignedDuration::from_secs(i64::from(min_ready));
    let now = jiff::Timestamp::now();
    if until <= now {
        Ok(())
    } else {
        Err(Some(
            Duration::try_from(until.duration_since(now)).unwrap_or(Duration::from_secs(1)),
        ))
    }
}

/// Claim, create or delete pods for `want`, and report what is there.
pub async fn sync(ctx: &Ctx, want: &Replicated) -> Result<Observed, ReconcileError> {
    let in_ns: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(want.namespace.as_str()))
        .collect();
    let owned = claim(ctx, want, &in_ns).await?;
    let active: Vec<Arc<Pod>> = owned.into_iter().filter(|p| is_active(p)).collect();
    let mut failure = None;
    if !want.deleting && ctx.expectations.satisfied(&want.uid, &in_ns) {
        let diff = active.len() as i64 - i64::from(want.replicas.max(0));
        if diff < 0 {
            failure = create_pods(ctx, want, (-diff) as usize).await;
        } else if diff > 0 {
            delete_pods(ctx, want, &active, diff as usize).await?;
        }
    }
    let template_labels = want
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut obs = Observed {
        replicas: active.len() as i32,
        failure,
        ..Default::default()
    };
    for p in &active {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            obs.fully_labeled += 1;
        }
        if ready_since(p).is_some() {
            obs.ready += 1;
        }
        match available(p, want.min_ready_seconds) {
            Ok(()) => obs.available += 1,
            Err(Some(d)) => {
                obs.next_available = Some(obs.next_available.map_or(d, |n: Duration| n.min(d)))
            }
            Err(None) => {}
        }
    }
    Ok(obs)
}

fn owner_ref(want: &Replicated) -> OwnerReference {
    OwnerReference {
        api_version: want.api_version.into(),
        kind: want.kind.into(),
        name: want.name.clone(),
        uid: want.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Upstream's ClaimPods: own, adopt or release; returns the pods this owner controls.
async fn claim(
    ctx: &Ctx,
    want: &Replicated,
    pods: &[Arc<Pod>],
) -> Result<Vec<Arc<Pod>>, ReconcileError> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &want.namespace);
    let mut mine = Vec::new();
    for pod in pods {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let matches = !want.selector.selects_all() && want.selector.matches(&labels);
        let Some(pod_name) = pod.metadata.name.as_deref() else {
            continue;
        };
        match controller_of(&pod.metadata) {
            Some(c) if c.uid == want.uid => {
                if matches || want.deleting {
                    mine.push(pod.clone());
                    continue;
                }
                // Release: it no longer matches.
                let refs: Vec<&OwnerReference> = pod
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|r| r.uid != want.uid)
                    .collect();
                let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.metadata.uid}});
                match api
                    .patch(pod_name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Some(_) => {}
            None => {
                if !matches || want.deleting || pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                // Adopt: the owner is live (we are reconciling it) and the pod is an orphan.
                let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
                refs.push(owner_ref(want));
                let patch = json!({"metadata": {
                    "ownerReferences": refs,
                    "uid": pod.metadata.uid,
                    "resourceVersion": pod.metadata.resource_version,
                }});
                match api
                    .patch(pod_name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(p) => mine.push(Arc::new(p)),
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(mine)
}

fn new_pod(want: &Replicated) -> Pod {
    let tm = want.template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", want.name)),
            namespace: Some(want.namespace.clone()),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner_ref(want)]),
            ..Default::default()
        },
        spec: want.template.spec.clone(),
        status: None,
    }
}

fn involved(want: &Replicated) -> ObjectReference {
    ObjectReference {
        api_version: Some(want.api_version.into()),
        kind: Some(want.kind.into()),
        name: Some(want.name.clone()),
        namespace: Some(want.namespace.clone()),
        uid: Some(want.uid.clone()),
        ..Default::default()
    }
}

/// Slow start (upstream's `slowStartBatch`): batches of 1, 2, 4, ...; the first failing batch
/// stops the sync. Returns the failure message, if any.
async fn create_pods(ctx: &Ctx, want: &Replicated, count: usize) -> Option<String> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &want.namespace);
    let mut left = count.min(BURST);
    let mut batch = 1usize;
    let template = new_pod(want);
    while left > 0 {
        let n = batch.min(left);
        let pp = PostParams::default();
        let results = futures::future::join_all((0..n).map(|_| api.create(&pp, &template))).await;
        let mut created = Vec::new();
        let mut failed = None;
        for r in results {
            match r {
                Ok(p) => {
                    let pname = p.metadata.name.clone().unwrap_or_default();
                    ctx.recorder.record_ref(
                        involved(want),
                        Kind::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {pname}"),
                    );
                    created.push(pname);
                }
                Err(e) => {
                    let msg = match &e {
                        kube::Error::Api(s) => s.message.clone(),
                        other => other.to_string(),
                    };
                    ctx.recorder.record_ref(
                        involved(want),
                        Kind::Warning,
                        "FailedCreate",
                        format!("Error creating: {msg}"),
                    );
                    failed = Some(msg);
                }
            }
        }
        ctx.expectations.expect(&want.uid, created, Vec::new());
        if failed.is_some() {
            return failed;
        }
        left -= n;
        batch *= 2;
    }
    None
}

/// Upstream's deletion preference (`ActivePodsWithRanks`), most deletable first.
fn deletion_rank(
    p: &Pod,
) -> (
    u8,
    u8,
    u8,
    std::cmp::Reverse<i64>,
    std::cmp::Reverse<i32>,
    std::cmp::Reverse<i64>,
) {
    let assigned = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let ready = ready_since(p);
    let restarts: i32 = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0);
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    (
        u8::from(assigned),
        phase,
        u8::from(ready.is_some()),
        std::cmp::Reverse(ready.map(|t| t.as_second()).unwrap_or(0)),
        std::cmp::Reverse(restarts),
        std::cmp::Reverse(created),
    )
}

async fn delete_pods(
    ctx: &Ctx,
    want: &Replicated,
    active: &[Arc<Pod>],
    count: usize,
) -> Result<(), ReconcileError> {
    let mut ranked: Vec<&Arc<Pod>> = active.iter().collect();
    ranked.sort_by_key(|p| deletion_rank(p));
    let victims: Vec<&Arc<Pod>> = ranked.into_iter().take(count.min(BURST)).collect();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &want.namespace);
    ctx.expectations.expect(
        &want.uid,
        Vec::new(),
        victims
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect(),
    );
    for p in victims {
        let Some(pname) = p.metadata.name.as_deref() else {
            continue;
        };
        match api.delete(pname, &DeleteParams::default()).await {
            Ok(_) => ctx.recorder.record_ref(
                involved(want),
                Kind::Normal,
                "SuccessfulDelete",
                format!("Deleted pod: {pname}"),
            ),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                ctx.expectations.forget(&want.uid);
                return Err(e.into());
            }
        }
    }
    Ok(())
}

fn error_policy(_: Arc<ReplicaSet>, e: &ReconcileError, _: Arc<Ctx>) -> Action {
    tracing::debug!(controller = NAME, error = %e, "retrying");
    Action::requeue(Duration::from_secs(1))
}

/// Label maps as selectors (ReplicationController's `spec.selector`).
pub fn map_selector(labels: &BTreeMap<String, String>) -> Selector {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
