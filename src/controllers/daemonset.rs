//! The DaemonSet controller, as upstream's `daemonset` controller: one pod per eligible node,
//! following nodes as they join, change and leave.
//!
//! - Eligible: the template's `nodeSelector` and required node affinity match the node, and
//!   every `NoSchedule`/`NoExecute` taint is tolerated (upstream's `NodeShouldRunDaemonPod`).
//!   Daemon pods get upstream's automatic tolerations (not-ready and unreachable `NoExecute`;
//!   disk/memory/pid pressure and unschedulable `NoSchedule`; network-unavailable with host
//!   networking), so cordoned or pressured nodes keep their daemons.
//! - Pods are not bound by the controller: as upstream since 1.12, each pod carries a required
//!   node affinity `matchFields metadata.name In [<node>]` and the scheduler binds it. Pods for
//!   nodes that are gone or no longer eligible are deleted, as are duplicates and failed pods
//!   (re-created on the next sync).
//! - Updates: the template hash labels pods `controller-revision-hash` and names a
//!   ControllerRevision (`<ds>-<hash>`, revision numbers increasing, as `kubectl rollout
//!   history` reads them). `RollingUpdate` replaces old pods while at most `maxUnavailable`
//!   (default 1) are unavailable; `OnDelete` only gives deleted pods the new template.
//! - Status: desired/current/misscheduled/ready/available/unavailable/updated counts and
//!   `observedGeneration`, which `kubectl rollout status ds` reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::Selector;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use super::deployment::template_hash;
use super::events::{Kind, Recorder};
use super::informers::Informer;
use super::replicaset::{
    available, controller_of, is_active, owners_of, ready_since, Expectations,
};
use super::Error;

const NAME: &str = "daemonset-controller";
pub const REVISION_LABEL: &str = "controller-revision-hash";

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
    nodes: Store<Node>,
    expectations: Expectations,
    recorder: Recorder,
}

pub fn run(
    client: kube::Client,
    sets: &Informer<DaemonSet>,
    pods: &Informer<Pod>,
    nodes: &Informer<Node>,
) -> impl std::future::Future<Output = Result<(), Error>> {
    // kube-runtime's applier waits for its store with a wait that wakes one waiter only;
    // waiting here first makes that wait return at once.
    let main_ready = sets.ready();
    let pods_ready = pods.ready();
    let nodes_ready = nodes.ready();
    let store = sets.store();
    let node_store = store.clone();
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), NAME),
        client,
        pods: pods.store(),
        nodes: nodes.store(),
        expectations: Expectations::default(),
    });
    let controller = Controller::for_stream(sets.triggers(), store.clone())
        .reconcile_on(pods.related(move |pod: &Pod| {
            if controller_of(&pod.metadata).is_none() {
                return Vec::new();
            }
            owners_of(pod, &store, "DaemonSet", |_: &DaemonSet| None::<Selector>)
        }))
        // Any node change may change where daemons should run: every set looks again.
        .reconcile_on(nodes.related(move |_node: &Node| {
            node_store
                .state()
                .iter()
                .map(|ds| ObjectRef::from_obj(ds.as_ref()))
                .collect::<Vec<_>>()
        }));
    async move {
        // Decide nothing before the caches hold a full list: a half-filled cache would look
        // like missing objects.
        pods_ready.await;
        nodes_ready.await;
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

fn error_policy(_: Arc<DaemonSet>, e: &ReconcileError, _: Arc<Ctx>) -> Action {
    tracing::debug!(controller = NAME, error = %e, "retrying");
    Action::requeue(Duration::from_secs(1))
}

/// Upstream's toleration match (`Toleration.ToleratesTaint`).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key_ok = t.key.as_deref().is_none_or(|k| k.is_empty())
        || t.key.as_deref() == Some(taint.key.as_str());
    match t.operator.as_deref() {
        Some("Exists") => key_ok,
        _ => {
            t.key.as_deref() == Some(taint.key.as_str())
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.clone().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Required node affinity terms (ORed; each term's requirements ANDed).
pub fn affinity_matches(selector: &NodeSelector, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.as_deref();
    selector.node_selector_terms.iter().any(|term| {
        let exprs: Vec<&NodeSelectorRequirement> =
            term.match_expressions.iter().flatten().collect();
        let fields: Vec<&NodeSelectorRequirement> = term.match_fields.iter().flatten().collect();
        // An empty term matches nothing, as upstream.
        if exprs.is_empty() && fields.is_empty() {
            return false;
        }
        exprs
            .iter()
            .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
            && fields.iter().all(|r| {
                requirement_matches(r, (r.key == "metadata.name").then_some(name).flatten())
            })
    })
}

/// Upstream's automatic tolerations for daemon pods.
fn daemon_tolerations(template: &PodTemplateSpec) -> Vec<Toleration> {
    let spec = template.spec.clone().unwrap_or_default();
    let mut out = spec.tolerations.unwrap_or_default();
    let mut add = |key: &str, effect: &str| {
        if !out
            .iter()
            .any(|t| t.key.as_deref() == Some(key) && t.effect.as_deref() == Some(effect))
        {
            out.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some(effect.into()),
                ..Default::default()
            });
        }
    };
    add("node.kubernetes.io/not-ready", "NoExecute");
    add("node.kubernetes.io/unreachable", "NoExecute");
    add("node.kubernetes.io/disk-pressure", "NoSchedule");
    add("node.kubernetes.io/memory-pressure", "NoSchedule");
    add("node.kubernetes.io/pid-pressure", "NoSchedule");
    add("node.kubernetes.io/unschedulable", "NoSchedule");
    if spec.host_network == Some(true) {
        add("node.kubernetes.io/network-unavailable", "NoSchedule");
    }
    out
}

/// Should a daemon pod of this template run on `node`?
pub fn should_run(template: &PodTemplateSpec, node: &Node) -> bool {
    let spec = template.spec.clone().unwrap_or_default();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if let Some(sel) = &spec.node_selector {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    if let Some(req) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    {
        if !affinity_matches(req, node) {
            return false;
        }
    }
    let tolerations = daemon_tolerations(template);
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|taint| tolerations.iter().any(|t| tolerates(t, taint)))
}

/// The node a daemon pod is for: its binding, or its `metadata.name` affinity.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

fn new_pod(ds: &DaemonSet, template: &PodTemplateSpec, hash: &str, node: &str) -> Pod {
    let name = ds.metadata.name.clone().unwrap_or_default();
    let tm = template.metadata.clone().unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), hash.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.tolerations = Some(daemon_tolerations(template));
    let pin = NodeSelectorRequirement {
        key: "metadata.name".into(),
        operator: "In".into(),
        values: Some(vec![node.into()]),
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    let req = na
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector {
            node_selector_terms: vec![],
        });
    if req.node_selector_terms.is_empty() {
        req.node_selector_terms.push(NodeSelectorTerm::default());
    }
    for term in req.node_selector_terms.iter_mut() {
        term.match_fields = Some(vec![pin.clone()]);
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tm.annotations,
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "DaemonSet".into(),
                name,
                uid: ds.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Make sure the ControllerRevision for `hash` exists (named `<owner>-<hash>`, revision one
/// above the owner's highest), as upstream's history for DaemonSets and StatefulSets.
pub async fn ensure_revision(
    client: &kube::Client,
    owner_kind: &str,
    owner: &ObjectMeta,
    hash: &str,
    template: &PodTemplateSpec,
) -> Result<(), kube::Error> {
    let name = owner.name.clone().unwrap_or_default();
    let ns = owner.namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let rev_name = format!("{name}-{hash}");
    if api.get_opt(&rev_name).await?.is_some() {
        return Ok(());
    }
    let existing = api.list(&Default::default()).await?;
    let uid = owner.uid.clone().unwrap_or_default();
    let revision = existing
        .items
        .iter()
        .filter(|r| controller_of(&r.metadata).is_some_and(|c| c.uid == uid))
        .filter_map(|r| r.revision)
        .max()
        .unwrap_or(0)
        + 1;
    let mut tmpl = serde_json::to_value(template).unwrap_or_default();
    tmpl["$patch"] = json!("replace");
    let labels: BTreeMap<String, String> = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
        .into_iter()
        .chain([(REVISION_LABEL.to_string(), hash.to_string())])
        .collect();
    let cr = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(rev_name),
            namespace: Some(ns),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: owner_kind.into(),
                name,
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        data: RawExtension(json!({"spec": {"template": tmpl}})),
        revision: Some(revision),
    };
    match api.create(&PostParams::default(), &cr).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let (Some(ns), Some(name), Some(uid), Some(spec)) = (
        ds.metadata.namespace.clone(),
        ds.metadata.name.clone(),
        ds.metadata.uid.clone(),
        Some(&ds.spec),
    ) else {
        return Ok(Action::await_change());
    };
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let template = spec.template.clone();
    let hash = template_hash(
        &template,
        ds.status.as_ref().and_then(|s| s.collision_count),
    );
    ensure_revision(&ctx.client, "DaemonSet", &ds.metadata, &hash, &template).await?;
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|p| controller_of(&p.metadata).is_some_and(|c| c.uid == uid))
        .collect();
    let nodes = ctx.nodes.state();
    let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    let mut orphaned: Vec<Arc<Pod>> = Vec::new();
    for p in &pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match target_node(p) {
            Some(n) => by_node.entry(n).or_default().push(p.clone()),
            None => orphaned.push(p.clone()),
        }
    }
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let on_delete = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        == Some("OnDelete");
    let mut to_create: Vec<String> = Vec::new();
    let mut to_delete: Vec<Arc<Pod>> = orphaned;
    let (mut desired, mut current, mut misscheduled, mut ready, mut avail, mut updated) =
        (0, 0, 0, 0, 0, 0);
    let mut old_available: Vec<Arc<Pod>> = Vec::new();
    let mut unavailable_now = 0;
    let mut next_check: Option<Duration> = None;
    for node in &nodes {
        let Some(node_name) = node.metadata.name.clone() else {
            continue;
        };
        let here = by_node.remove(&node_name).unwrap_or_default();
        if should_run(&template, node) {
            desired += 1;
            let (failed, mut alive): (Vec<_>, Vec<_>) = here.into_iter().partition(|p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
            });
            to_delete.extend(failed);
            alive.retain(|p| is_active(p));
            if alive.is_empty() {
                to_create.push(node_name);
                unavailable_now += 1;
                continue;
            }
            // Keep the oldest, delete duplicates.
            alive.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let keep = alive.remove(0);
            to_delete.extend(alive);
            current += 1;
            let is_new = keep
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_LABEL))
                == Some(&hash);
            if is_new {
                updated += 1;
            }
            if ready_since(&keep).is_some() {
                ready += 1;
            }
            match available(&keep, min_ready) {
                Ok(()) => {
                    avail += 1;
                    if !is_new {
                        old_available.push(keep);
                    }
                }
                Err(wait) => {
                    unavailable_now += 1;
                    if let Some(w) = wait {
                        next_check = Some(next_check.map_or(w, |n: Duration| n.min(w)));
                    }
                    if !is_new && !on_delete {
                        // An unavailable old pod can be replaced at once.
                        to_delete.push(keep);
                    }
                }
            }
        } else if !here.is_empty() {
            misscheduled += here
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
                .count() as i32;
            to_delete.extend(here);
        }
    }
    // Pods for nodes that no longer exist.
    for (_, rest) in by_node {
        to_delete.extend(rest);
    }
    // Rolling update: replace available old pods within maxUnavailable.
    if !on_delete {
        let max_unavailable = match spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.clone())
        {
            Some(IntOrString::Int(i)) => i,
            Some(IntOrString::String(s)) => {
                let pct: i32 = s.trim_end_matches('%').parse().unwrap_or(0);
                (pct * desired / 100).max(if pct > 0 { 1 } else { 0 })
            }
            None => 1,
        };
        let budget = (max_unavailable - unavailable_now).max(0) as usize;
        to_delete.extend(old_available.into_iter().take(budget));
    }
    if ctx.expectations.satisfied(&uid, &pods) {
        let mut created = Vec::new();
        for node in &to_create {
            match pod_api
                .create(
                    &PostParams::default(),
                    &new_pod(&ds, &template, &hash, node),
                )
                .await
            {
                Ok(p) => {
                    let pn = p.metadata.name.clone().unwrap_or_default();
                    ctx.recorder.record(
                        &*ds,
                        Kind::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {pn}"),
                    );
                    created.push(pn);
                }
                Err(e) => {
                    let msg = match &e {
                        kube::Error::Api(s) => s.message.clone(),
                        other => other.to_string(),
                    };
                    ctx.recorder.record(
                        &*ds,
                        Kind::Warning,
                        "FailedCreate",
                        format!("Error creating: {msg}"),
                    );
                    ctx.expectations.expect_creates(&uid, created);
                    return Err(ReconcileError(msg));
                }
            }
        }
        ctx.expectations.expect_creates(&uid, created);
        for p in &to_delete {
            let Some(pn) = p.metadata.name.as_deref() else {
                continue;
            };
            match pod_api.delete(pn, &DeleteParams::default()).await {
                Ok(_) => ctx.recorder.record(
                    &*ds,
                    Kind::Normal,
                    "SuccessfulDelete",
                    format!("Deleted pod: {pn}"),
                ),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let status = json!({
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": current,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "numberAvailable": avail,
        "numberUnavailable": (desired - avail).max(0),
        "updatedNumberScheduled": updated,
        "observedGeneration": ds.metadata.generation,
    });
    let prev = serde_json::to_value(ds.status.clone().unwrap_or_default()).unwrap_or_default();
    let changed = [
        "desiredNumberScheduled",
        "currentNumberScheduled",
        "numberMisscheduled",
        "numberReady",
        "numberAvailable",
        "numberUnavailable",
        "updatedNumberScheduled",
        "observedGeneration",
    ]
    .iter()
    .any(|k| prev.get(*k).cloned().unwrap_or(json!(0)) != status[*k]);
    if changed {
        let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
        match api
            .patch_status(
                &name,
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

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}),
        )
        .unwrap_or_default()
    }

    fn template(spec: serde_json::Value) -> PodTemplateSpec {
        serde_json::from_value(json!({"spec": spec})).unwrap_or_default()
    }

    #[test]
    fn eligibility_follows_selectors_affinity_and_taints() {
        let plain = template(json!({"containers": [{"name": "c"}]}));
        let gpu = node("g", json!({"gpu": "yes"}), json!([]));
        let tainted = node(
            "t",
            json!({}),
            json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        );
        let cordoned = node(
            "c",
            json!({}),
            json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
        );
        assert!(should_run(&plain, &gpu));
        assert!(!should_run(&plain, &tainted), "untolerated taint");
        assert!(
            should_run(&plain, &cordoned),
            "daemons tolerate unschedulable"
        );
        let tolerant = template(
            json!({"containers": [{"name": "c"}], "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db"}]}),
        );
        assert!(should_run(&tolerant, &tainted));
        let selective =
            template(json!({"containers": [{"name": "c"}], "nodeSelector": {"gpu": "yes"}}));
        assert!(should_run(&selective, &gpu) && !should_run(&selective, &tainted));
        let affine = template(
            json!({"containers": [{"name": "c"}], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}]}}}}),
        );
        assert!(!should_run(&affine, &gpu) && !should_run(&affine, &tainted));
        assert!(should_run(&affine, &cordoned));
    }

    #[test]
    fn daemon_pods_are_pinned_by_affinity() {
        let ds: DaemonSet = serde_json::from_value(
            json!({"metadata": {"name": "d", "namespace": "n", "uid": "u"}}),
        )
        .unwrap_or_default();
        let t = template(json!({"containers": [{"name": "c"}]}));
        let pod = new_pod(&ds, &t, "h", "node-1");
        assert_eq!(target_node(&pod).as_deref(), Some("node-1"));
        assert!(pod
            .spec
            .and_then(|s| s.tolerations)
            .is_some_and(|t| t.len() >= 6));
    }
}
