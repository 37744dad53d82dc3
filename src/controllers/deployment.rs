//! The Deployment controller, as upstream's `deployment` controller: a Deployment owns
//! ReplicaSets, one per distinct pod template, and moves replicas from the old ones to the
//! new one with its strategy (`deployment_rollout.rs`: RollingUpdate with maxSurge and
//! maxUnavailable, or Recreate), reporting progress in the status fields and conditions that
//! `kubectl rollout status` reads.
//!
//! - The new ReplicaSet is named `<deployment>-<pod-template-hash>`; the hash (FNV-1a of the
//!   template and `status.collisionCount`, encoded with upstream's safe alphabet; not the same
//!   digits as upstream's Go struct hash) is added to its template labels and selector. A name
//!   taken by a ReplicaSet with another template bumps `collisionCount`, as upstream.
//! - Revisions: `deployment.kubernetes.io/revision` on every ReplicaSet and the Deployment; a
//!   template that matches an old ReplicaSet (`kubectl rollout undo`) makes that set the new one
//!   with the next revision, the old number kept in `deployment.kubernetes.io/revision-history`.
//!   The Deployment's annotations (such as `kubernetes.io/change-cause`) are copied to the new
//!   ReplicaSet, which `kubectl rollout history` reads.
//! - Paused Deployments create no new ReplicaSet but still scale; a change of `spec.replicas`
//!   alone scales the active sets proportionally (`deployment.kubernetes.io/desired-replicas`
//!   and `max-replicas` annotations, as upstream).
//! - ReplicaSets are claimed like pods are (adopt by selector, release when not matching);
//!   beyond `revisionHistoryLimit` (default 10) old empty sets are deleted, oldest first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use serde_json::json;

use super::deployment_rollout as rollout;
use super::events::{Kind, Recorder};
use super::informers::Informer;
use super::replicaset::{controller_of, owners_of};
use super::Error;

const NAME: &str = "deployment-controller";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(pub String);

impl From<kube::Error> for ReconcileError {
    fn from(e: kube::Error) -> Self {
        Self(e.to_string())
    }
}

pub struct Ctx {
    pub client: kube::Client,
    pub sets: Store<ReplicaSet>,
    pub recorder: Recorder,
}

pub fn run(
    client: kube::Client,
    deployments: &Informer<Deployment>,
    sets: &Informer<ReplicaSet>,
) -> impl std::future::Future<Output = Result<(), Error>> {
    // kube-runtime's applier waits for its store with a wait that wakes one waiter only;
    // waiting here first makes that wait return at once.
    let main_ready = deployments.ready();
    let sets_ready = sets.ready();
    let dep_store = deployments.store();
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), NAME),
        client,
        sets: sets.store(),
    });
    let controller = Controller::for_stream(deployments.triggers(), dep_store.clone())
        .reconcile_on(sets.related(move |rs: &ReplicaSet| {
            let as_pod = k8s_openapi::api::core::v1::Pod {
                metadata: rs.metadata.clone(),
                ..Default::default()
            };
            owners_of(&as_pod, &dep_store, "Deployment", |d: &Deployment| {
                Selector::try_from(d.spec.selector.clone()).ok()
            })
        }));
    async move {
        // Decide nothing before the caches hold a full list: a half-filled cache would look
        // like missing objects.
        sets_ready.await;
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

fn error_policy(_: Arc<Deployment>, e: &ReconcileError, _: Arc<Ctx>) -> Action {
    tracing::debug!(controller = NAME, error = %e, "retrying");
    Action::requeue(Duration::from_secs(1))
}

pub fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(0)
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The pod template without the `pod-template-hash` label (upstream's `EqualIgnoreHash`).
fn without_hash(t: &PodTemplateSpec) -> serde_json::Value {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            if let Some(m) = t.metadata.as_mut() {
                m.labels = None;
            }
        }
    }
    serde_json::to_value(&t).unwrap_or_default()
}

/// Upstream's `rand.SafeEncodeString` over the decimal FNV-1a hash.
pub fn template_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(without_hash(t).to_string().as_bytes());
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let (Some(ns), Some(_), Some(spec)) = (
        d.metadata.namespace.clone(),
        d.metadata.name.clone(),
        Some(&d.spec),
    ) else {
        return Ok(Action::await_change());
    };
    let Ok(selector) = Selector::try_from(spec.selector.clone()) else {
        return Ok(Action::await_change());
    };
    if selector.selects_all() {
        // Upstream: an empty selector selects nothing for a Deployment.
        return Ok(Action::await_change());
    }
    let sets = claim(&ctx, &d, &ns, &selector).await?;
    let plan = rollout::Plan::new(&ctx, &d, &ns, sets);
    plan.sync().await
}

/// The ReplicaSets this Deployment controls, after adoption and release.
async fn claim(
    ctx: &Ctx,
    d: &Deployment,
    ns: &str,
    selector: &Selector,
) -> Result<Vec<ReplicaSet>, ReconcileError> {
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
    let mut mine = Vec::new();
    for rs in ctx.sets.state() {
        if rs.metadata.namespace.as_deref() != Some(ns) {
            continue;
        }
        let labels = rs.metadata.labels.clone().unwrap_or_default();
        let matches = selector.matches(&labels);
        let Some(name) = rs.metadata.name.as_deref() else {
            continue;
        };
        match controller_of(&rs.metadata) {
            Some(c) if c.uid == uid => {
                if matches || d.metadata.deletion_timestamp.is_some() {
                    mine.push((*rs).clone());
                    continue;
                }
                let refs: Vec<&OwnerReference> = rs
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|r| r.uid != uid)
                    .collect();
                let patch = json!({"metadata": {"ownerReferences": refs, "uid": rs.metadata.uid}});
                match api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Some(_) => {}
            None => {
                if !matches
                    || d.metadata.deletion_timestamp.is_some()
                    || rs.metadata.deletion_timestamp.is_some()
                {
                    continue;
                }
                let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                refs.push(owner_ref(d));
                let patch = json!({"metadata": {
                    "ownerReferences": refs,
                    "uid": rs.metadata.uid,
                    "resourceVersion": rs.metadata.resource_version,
                }});
                match api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(adopted) => mine.push(adopted),
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(mine)
}

pub fn owner_ref(d: &Deployment) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: d.metadata.name.clone().unwrap_or_default(),
        uid: d.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Annotations the Deployment passes to its ReplicaSets (upstream's `skipCopyAnnotation`).
fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "kubectl.kubernetes.io/last-applied-configuration"
                    | REVISION
                    | REVISION_HISTORY
                    | DESIRED_REPLICAS
                    | MAX_REPLICAS
                    | "deprecated.deployment.rollback.to"
            )
        })
        .collect()
}

/// Find the ReplicaSet whose template is the Deployment's, or (when `create`) create it with
/// `replicas` and the next revision. Old sets are the rest.
pub async fn new_replica_set(
    ctx: &Ctx,
    d: &Deployment,
    ns: &str,
    sets: &[ReplicaSet],
    create: bool,
    initial_replicas: impl Fn(&[ReplicaSet]) -> i32,
) -> Result<Option<ReplicaSet>, ReconcileError> {
    let spec = &d.spec;
    let want = without_hash(&spec.template);
    let max_old = sets
        .iter()
        .filter(|rs| rs.spec.template.as_ref().map(without_hash) != Some(want.clone()))
        .map(revision)
        .max()
        .unwrap_or(0);
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
    // The oldest set with this template is the new one (upstream's FindNewReplicaSet).
    let mut existing: Vec<&ReplicaSet> = sets
        .iter()
        .filter(|rs| rs.spec.template.as_ref().map(without_hash) == Some(want.clone()))
        .collect();
    existing.sort_by_key(|rs| {
        rs.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
    });
    if let Some(rs) = existing.first() {
        // Keep its revision current, the Deployment's annotations, and minReadySeconds.
        let next = max_old + 1;
        let mut annotations = rs.metadata.annotations.clone().unwrap_or_default();
        let mut changed = false;
        if revision(rs) < next {
            let old = revision(rs);
            if old > 0 {
                let history = annotations.get(REVISION_HISTORY).cloned();
                annotations.insert(
                    REVISION_HISTORY.into(),
                    match history {
                        Some(h) if !h.is_empty() => format!("{h},{old}"),
                        _ => old.to_string(),
                    },
                );
            }
            annotations.insert(REVISION.into(), next.to_string());
            changed = true;
        }
        for (k, v) in copied_annotations(d) {
            if annotations.get(&k) != Some(&v) {
                annotations.insert(k, v);
                changed = true;
            }
        }
        let min_ready = spec.min_ready_seconds;
        let min_ready_changed = rs.spec.min_ready_seconds != min_ready;
        if !changed && !min_ready_changed {
            return Ok(Some((*rs).clone()));
        }
        let name = rs.metadata.name.clone().unwrap_or_default();
        let patch = json!({
            "metadata": {"annotations": annotations, "resourceVersion": rs.metadata.resource_version},
            "spec": {"minReadySeconds": min_ready.unwrap_or(0)},
        });
        let updated = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        return Ok(Some(updated));
    }
    if !create {
        return Ok(None);
    }
    let collision = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = template_hash(&spec.template, collision);
    let d_name = d.metadata.name.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.clone());
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.clone());
    let replicas = initial_replicas(sets);
    let mut annotations = copied_annotations(d);
    annotations.insert(REVISION.into(), (max_old + 1).to_string());
    annotations.insert(
        DESIRED_REPLICAS.into(),
        spec.replicas.unwrap_or(1).to_string(),
    );
    annotations.insert(
        MAX_REPLICAS.into(),
        (spec.replicas.unwrap_or(1) + rollout::max_surge(d)).to_string(),
    );
    let rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{d_name}-{hash}")),
            namespace: Some(ns.to_string()),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_ref(d)]),
            ..Default::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        },
        status: None,
    };
    match api.create(&PostParams::default(), &rs).await {
        Ok(created) => {
            ctx.recorder.record(
                d,
                Kind::Normal,
                "ScalingReplicaSet",
                format!(
                    "Scaled up replica set {} from 0 to {replicas}",
                    created.metadata.name.as_deref().unwrap_or_default()
                ),
            );
            Ok(Some(created))
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Ours already (the cache has not caught up with an earlier create)?
            if let Some(existing) = api
                .get_opt(rs.metadata.name.as_deref().unwrap_or_default())
                .await?
            {
                let ours = controller_of(&existing.metadata)
                    .is_some_and(|c| Some(&c.uid) == d.metadata.uid.as_ref());
                let same = existing.spec.template.as_ref().map(without_hash) == Some(want.clone());
                if ours && same {
                    return Ok(Some(existing));
                }
            }
            // The name is taken by a set with another template: count the collision so the
            // next hash differs (upstream's collisionCount), and retry.
            let deps: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
            let patch = json!({"status": {"collisionCount": collision.unwrap_or(0) + 1}});
            deps.patch_status(&d_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            Err(ReconcileError(format!(
                "replica set name {d_name}-{hash} is taken; collisionCount raised"
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Set a ReplicaSet's size and the Deployment's size annotations on it.
pub async fn scale(
    ctx: &Ctx,
    d: &Deployment,
    rs: &ReplicaSet,
    to: i32,
) -> Result<bool, ReconcileError> {
    let desired = d.spec.replicas.unwrap_or(1);
    let max = desired + rollout::max_surge(d);
    let ann = rs.metadata.annotations.clone().unwrap_or_default();
    let from = replicas(rs);
    let annotations_ok = ann.get(DESIRED_REPLICAS) == Some(&desired.to_string())
        && ann.get(MAX_REPLICAS) == Some(&max.to_string());
    if from == to && annotations_ok {
        return Ok(false);
    }
    let name = rs.metadata.name.clone().unwrap_or_default();
    let api: Api<ReplicaSet> = Api::namespaced(
        ctx.client.clone(),
        rs.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let patch = json!({
        "metadata": {
            "annotations": {DESIRED_REPLICAS: desired.to_string(), MAX_REPLICAS: max.to_string()},
            "resourceVersion": rs.metadata.resource_version,
        },
        "spec": {"replicas": to},
    });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    if from != to {
        let dir = if to > from { "up" } else { "down" };
        ctx.recorder.record(
            d,
            Kind::Normal,
            "ScalingReplicaSet",
            format!("Scaled {dir} replica set {name} from {from} to {to}"),
        );
    }
    Ok(from != to)
}

/// Delete old, empty ReplicaSets beyond `revisionHistoryLimit`, oldest revision first.
pub async fn cleanup(ctx: &Ctx, d: &Deployment, old: &[ReplicaSet]) -> Result<(), ReconcileError> {
    let limit = d.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let mut empty: Vec<&ReplicaSet> = old
        .iter()
        .filter(|rs| {
            replicas(rs) == 0
                && rs.status.as_ref().map(|s| s.replicas).unwrap_or(0) == 0
                && rs.metadata.deletion_timestamp.is_none()
        })
        .collect();
    if empty.len() <= limit {
        return Ok(());
    }
    empty.sort_by_key(|rs| revision(rs));
    let excess = empty.len() - limit;
    for rs in empty.into_iter().take(excess) {
        let Some(name) = rs.metadata.name.as_deref() else {
            continue;
        };
        let api: Api<ReplicaSet> = Api::namespaced(
            ctx.client.clone(),
            rs.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: rs.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
