//! The StatefulSet controller, as upstream's `statefulset` controller: pods with stable
//! ordinal names `<set>-<n>` (from `spec.ordinals.start`), each with its own
//! PersistentVolumeClaims from `volumeClaimTemplates` (`<claim>-<set>-<n>`, created before the
//! pod and never replaced), hostname `<set>-<n>` and subdomain `serviceName`.
//!
//! - `OrderedReady` (default): one pod at a time — ordinal n is created only when every lower
//!   one is Running and Ready, and scale-down removes the highest ordinal first, waiting for it
//!   to go; `Parallel` creates and deletes all at once.
//! - Updates: pods are labelled `controller-revision-hash` (a ControllerRevision per template,
//!   shared with the DaemonSet's history code); `RollingUpdate` replaces pods with ordinal ≥
//!   `partition` from the highest down, one at a time once the previous is Ready; `OnDelete`
//!   leaves it to the user.
//! - PVC retention (`persistentVolumeClaimRetentionPolicy`): `whenDeleted: Delete` makes the
//!   claims owned by the set (the garbage collector removes them with it); `whenScaled:
//!   Delete` makes a condemned pod own its claims before it is deleted.
//! - Status: replicas, ready, available, current/updated replicas and revisions,
//!   observedGeneration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::Selector;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use serde_json::json;

use super::daemonset::{ensure_revision, REVISION_LABEL};
use super::deployment::template_hash;
use super::events::{Kind, Recorder};
use super::informers::Informer;
use super::replicaset::{available, controller_of, is_active, owners_of, ready_since};
use super::Error;

const NAME: &str = "statefulset-controller";
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(String);

impl From<kube::Error> for ReconcileError {
    fn from(e: kube::Error) -> Self {
        Self(e.to_string())
    }
}

struct Ctx {
    client: kube::Client,
    pods: Store<Pod>,
    recorder: Recorder,
}

pub fn run(
    client: kube::Client,
    sets: &Informer<StatefulSet>,
    pods: &Informer<Pod>,
) -> impl std::future::Future<Output = Result<(), Error>> {
    // kube-runtime's applier waits for its store with a wait that wakes one waiter only;
    // waiting here first makes that wait return at once.
    let main_ready = sets.ready();
    let pods_ready = pods.ready();
    let store = sets.store();
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), NAME),
        client,
        pods: pods.store(),
    });
    let controller = Controller::for_stream(sets.triggers(), store.clone()).reconcile_on(
        pods.related(move |pod: &Pod| {
            if controller_of(&pod.metadata).is_none() {
                return Vec::new();
            }
            owners_of(
                pod,
                &store,
                "StatefulSet",
                |_: &StatefulSet| None::<Selector>,
            )
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

fn error_policy(_: Arc<StatefulSet>, e: &ReconcileError, _: Arc<Ctx>) -> Action {
    tracing::debug!(controller = NAME, error = %e, "retrying");
    Action::requeue(Duration::from_secs(1))
}

/// An API error as upstream's events print it: the Status message alone.
fn error_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// The ordinal of a pod named `<set>-<n>`.
pub fn ordinal(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

fn running_and_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && ready_since(p).is_some()
}

fn owner(sts: &StatefulSet, controller: bool) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        name: sts.metadata.name.clone().unwrap_or_default(),
        uid: sts.metadata.uid.clone().unwrap_or_default(),
        controller: Some(controller),
        block_owner_deletion: Some(true),
    }
}

fn retention(sts: &StatefulSet) -> (bool, bool) {
    let p = sts.spec.persistent_volume_claim_retention_policy.as_ref();
    (
        p.and_then(|p| p.when_deleted.as_deref()) == Some("Delete"),
        p.and_then(|p| p.when_scaled.as_deref()) == Some("Delete"),
    )
}

fn new_pod(sts: &StatefulSet, n: i32, hash: &str) -> Pod {
    let set = sts.metadata.name.clone().unwrap_or_default();
    let spec = sts.spec.clone();
    let tm = spec.template.metadata.clone().unwrap_or_default();
    let name = format!("{set}-{n}");
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), hash.into());
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), n.to_string());
    let mut pod_spec = spec.template.spec.clone().unwrap_or_default();
    pod_spec.hostname = Some(name.clone());
    if !spec.service_name.as_deref().unwrap_or_default().is_empty() {
        pod_spec.subdomain = spec.service_name.clone();
    }
    for claim in spec.volume_claim_templates.iter().flatten() {
        let cname = claim.metadata.name.clone().unwrap_or_default();
        let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
        volumes.retain(|v| v.name != cname);
        volumes.push(Volume {
            name: cname.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: format!("{cname}-{name}"),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: sts.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tm.annotations,
            owner_references: Some(vec![owner(sts, true)]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

/// Create the claims of ordinal `n` that do not exist yet.
async fn ensure_claims(
    ctx: &Ctx,
    sts: &StatefulSet,
    ns: &str,
    n: i32,
) -> Result<(), ReconcileError> {
    let set = sts.metadata.name.clone().unwrap_or_default();
    let spec = sts.spec.clone();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let (when_deleted, _) = retention(sts);
    let selector_labels: BTreeMap<String, String> =
        spec.selector.match_labels.clone().unwrap_or_default();
    for claim in spec.volume_claim_templates.iter().flatten() {
        let cname = format!(
            "{}-{set}-{n}",
            claim.metadata.name.clone().unwrap_or_default()
        );
        if api.get_opt(&cname).await?.is_some() {
            continue;
        }
        let mut pvc = claim.clone();
        let mut labels = pvc.metadata.labels.clone().unwrap_or_default();
        labels.extend(selector_labels.clone());
        pvc.metadata = ObjectMeta {
            name: Some(cname.clone()),
            namespace: Some(ns.into()),
            labels: Some(labels),
            annotations: claim.metadata.annotations.clone(),
            owner_references: when_deleted.then(|| vec![owner(sts, false)]),
            ..Default::default()
        };
        pvc.status = None;
        match api.create(&PostParams::default(), &pvc).await {
            Ok(_) => ctx.recorder.record(
                sts,
                Kind::Normal,
                "SuccessfulCreate",
                format!("create Claim {cname} Pod {set}-{n} in StatefulSet {set} success"),
            ),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                ctx.recorder.record(sts, Kind::Warning, "FailedCreate", format!("create Claim {cname} for Pod {set}-{n} in StatefulSet {set} failed error: {}", error_message(&e)));
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// whenScaled: Delete — the condemned pod owns its claims, so they go with it.
async fn hand_claims_to_pod(
    ctx: &Ctx,
    sts: &StatefulSet,
    ns: &str,
    pod: &Pod,
) -> Result<(), ReconcileError> {
    let spec = sts.spec.clone();
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    for claim in spec.volume_claim_templates.iter().flatten() {
        let cname = format!(
            "{}-{pod_name}",
            claim.metadata.name.clone().unwrap_or_default()
        );
        let Some(pvc) = api.get_opt(&cname).await? else {
            continue;
        };
        let mut refs = pvc.metadata.owner_references.clone().unwrap_or_default();
        if refs
            .iter()
            .any(|r| Some(&r.uid) == pod.metadata.uid.as_ref())
        {
            continue;
        }
        refs.push(OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: pod_name.clone(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            controller: Some(false),
            block_owner_deletion: Some(true),
        });
        let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": pvc.metadata.resource_version}});
        api.patch(&cname, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let (Some(ns), Some(set), Some(uid), Some(spec)) = (
        sts.metadata.namespace.clone(),
        sts.metadata.name.clone(),
        sts.metadata.uid.clone(),
        Some(&sts.spec),
    ) else {
        return Ok(Action::await_change());
    };
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let hash = template_hash(
        &spec.template,
        sts.status.as_ref().and_then(|s| s.collision_count),
    );
    ensure_revision(
        &ctx.client,
        "StatefulSet",
        &sts.metadata,
        &hash,
        &spec.template,
    )
    .await?;
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut pods: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
    for p in ctx.pods.state() {
        if p.metadata.namespace.as_deref() != Some(ns.as_str())
            || controller_of(&p.metadata).is_none_or(|c| c.uid != uid)
        {
            continue;
        }
        if let Some(n) = p.metadata.name.as_deref().and_then(|pn| ordinal(&set, pn)) {
            pods.insert(n, p);
        }
    }
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let wanted = start..start + replicas;
    let (_, when_scaled) = retention(&sts);
    let mut acted = false;

    // Failed pods are deleted and re-created (upstream).
    for p in pods.values() {
        if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
            && p.metadata.deletion_timestamp.is_none()
        {
            let pn = p.metadata.name.clone().unwrap_or_default();
            let _ = pod_api.delete(&pn, &DeleteParams::default()).await;
            acted = true;
        }
    }

    // Create missing pods in order (all at once for Parallel).
    if !acted {
        for n in wanted.clone() {
            match pods.get(&n) {
                Some(p) if p.metadata.deletion_timestamp.is_some() => {
                    // Wait for it to go before re-creating the same name.
                    if !parallel {
                        break;
                    }
                }
                Some(p) => {
                    if !parallel && !running_and_ready(p) {
                        break;
                    }
                }
                None => {
                    ensure_claims(&ctx, &sts, &ns, n).await?;
                    match pod_api
                        .create(&PostParams::default(), &new_pod(&sts, n, &hash))
                        .await
                    {
                        Ok(_) => ctx.recorder.record(
                            &*sts,
                            Kind::Normal,
                            "SuccessfulCreate",
                            format!("create Pod {set}-{n} in StatefulSet {set} successful"),
                        ),
                        Err(kube::Error::Api(s)) if s.code == 409 => {}
                        Err(e) => {
                            ctx.recorder.record(
                                &*sts,
                                Kind::Warning,
                                "FailedCreate",
                                format!(
                                    "create Pod {set}-{n} in StatefulSet {set} failed error: {}",
                                    error_message(&e)
                                ),
                            );
                            return Err(e.into());
                        }
                    }
                    acted = true;
                    if !parallel {
                        break;
                    }
                }
            }
        }
    }

    // Scale down: condemned ordinals, highest first (all at once for Parallel).
    if !acted {
        let condemned: Vec<&Arc<Pod>> = pods
            .iter()
            .rev()
            .filter(|(n, _)| !wanted.contains(*n))
            .map(|(_, p)| p)
            .collect();
        let all_healthy = pods
            .iter()
            .filter(|(n, _)| wanted.contains(*n))
            .all(|(_, p)| running_and_ready(p));
        for p in condemned {
            if p.metadata.deletion_timestamp.is_some() {
                if !parallel {
                    break;
                }
                continue;
            }
            if !parallel && !all_healthy {
                break;
            }
            if when_scaled {
                hand_claims_to_pod(&ctx, &sts, &ns, p).await?;
            }
            let pn = p.metadata.name.clone().unwrap_or_default();
            match pod_api.delete(&pn, &DeleteParams::default()).await {
                Ok(_) => ctx.recorder.record(
                    &*sts,
                    Kind::Normal,
                    "SuccessfulDelete",
                    format!("delete Pod {pn} in StatefulSet {set} successful"),
                ),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            acted = true;
            if !parallel {
                break;
            }
        }
    }

    // Rolling update from the highest ordinal down to the partition, one at a time.
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        != Some("OnDelete");
    if !acted && rolling {
        let partition = spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0);
        let live: Vec<(&i32, &Arc<Pod>)> =
            pods.iter().filter(|(n, _)| wanted.contains(*n)).collect();
        let all_healthy = live
            .iter()
            .all(|(_, p)| running_and_ready(p) && p.metadata.deletion_timestamp.is_none());
        if all_healthy {
            if let Some((_, p)) = live.iter().rev().find(|(n, p)| {
                **n - start >= partition
                    && p.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(REVISION_LABEL))
                        != Some(&hash)
            }) {
                let pn = p.metadata.name.clone().unwrap_or_default();
                match pod_api.delete(&pn, &DeleteParams::default()).await {
                    Ok(_) => ctx.recorder.record(
                        &*sts,
                        Kind::Normal,
                        "SuccessfulDelete",
                        format!("delete Pod {pn} in StatefulSet {set} successful"),
                    ),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }

    // Status.
    let mut next_check: Option<Duration> = None;
    let live: Vec<&Arc<Pod>> = pods.values().filter(|p| is_active(p)).collect();
    let ready = live.iter().filter(|p| ready_since(p).is_some()).count() as i32;
    let mut avail = 0;
    for p in &live {
        match available(p, min_ready) {
            Ok(()) => avail += 1,
            Err(Some(w)) => next_check = Some(next_check.map_or(w, |n: Duration| n.min(w))),
            Err(None) => {}
        }
    }
    let updated = live
        .iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_LABEL))
                == Some(&hash)
        })
        .count() as i32;
    let prev = sts.status.clone().unwrap_or_default();
    let mut current_revision = prev
        .current_revision
        .clone()
        .unwrap_or_else(|| hash.clone());
    let mut current = live
        .iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_LABEL))
                == Some(&current_revision)
        })
        .count() as i32;
    if updated == replicas && live.len() as i32 == replicas {
        current_revision = hash.clone();
        current = updated;
    }
    let status = json!({
        "replicas": live.len(),
        "readyReplicas": ready,
        "availableReplicas": avail,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": hash,
        "observedGeneration": sts.metadata.generation,
    });
    let prev_v = serde_json::to_value(&prev).unwrap_or_default();
    let changed = [
        "replicas",
        "readyReplicas",
        "availableReplicas",
        "currentReplicas",
        "updatedReplicas",
        "currentRevision",
        "updateRevision",
        "observedGeneration",
    ]
    .iter()
    .any(|k| prev_v.get(*k).cloned().unwrap_or(json!(0)) != status[*k]);
    if changed {
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
        match api
            .patch_status(
                &set,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(match next_check {
        Some(d) => Action::requeue(d + Duration::from_millis(100)),
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_parse_only_own_pods() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "webx-1"), None);
        assert_eq!(ordinal("web", "web-a"), None);
    }

    #[test]
    fn pods_get_identity_and_claims() {
        let sts: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "n", "uid": "u"},
            "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]},
        }))
        .unwrap_or_default();
        let pod = new_pod(&sts, 2, "h");
        assert_eq!(pod.metadata.name.as_deref(), Some("db-2"));
        let spec = pod.spec.unwrap_or_default();
        assert_eq!(spec.hostname.as_deref(), Some("db-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("db"));
        let vols = spec.volumes.unwrap_or_default();
        assert_eq!(
            vols[0]
                .persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str()),
            Some("data-db-2")
        );
        let labels = pod.metadata.labels.unwrap_or_default();
        assert_eq!(labels.get(POD_INDEX_LABEL).map(String::as_str), Some("2"));
    }
}
