//! Node lifecycle, as upstream's `node-lifecycle-controller` and its taint-eviction
//! controller:
//!
//! - a node whose Lease (`kube-node-lease/<node>`) and Ready heartbeat have not moved for
//!   `--node-monitor-grace-period` (40 s) gets `Ready=Unknown` ("Kubelet stopped posting node
//!   status."), as upstream's `monitorNodeHealth`;
//! - taints follow the Ready condition (TaintNodesByCondition + taint-based eviction):
//!   `node.kubernetes.io/unreachable` NoSchedule + NoExecute for Unknown, `not-ready` for
//!   False, none for True — so the node heals when the kubelet reports again; the
//!   `memory-pressure`/`disk-pressure`/`pid-pressure`/`network-unavailable` NoSchedule taints
//!   follow the kubelet's conditions and `unschedulable` follows `spec.unschedulable`;
//! - pods on a node with NoExecute taints are deleted (gracefully) once a taint is not
//!   tolerated, or when the shortest matching `tolerationSeconds` since the taint's
//!   `timeAdded` has passed (the default 300 s tolerations come from admission);
//! - pods bound to a Node that no longer exists are left to pod GC (`pod_gc.rs`), which
//!   deletes them after upstream's quarantine.
//!
//! Staleness is judged on the local clock from when this controller last *saw* the lease or
//! heartbeat change (upstream's probe timestamps), never by comparing the kubelet's
//! timestamps with ours. Work runs on the informer caches every `grace/8` (at most 5 s, as
//! upstream's `nodeMonitorPeriod`); API calls are only the resulting writes.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

use super::Error;

const NAME: &str = "node-lifecycle";
const LEASE_NS: &str = "kube-node-lease";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";

#[derive(Debug, Clone)]
pub struct Config {
    pub grace_period: Duration,
}

/// The watch tasks feeding the caches, stopped when the controller stops (also when its task
/// is aborted on a lost leadership).
#[derive(Default)]
struct Watches(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Watches {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn follow<K>(api: Api<K>, watches: &mut Watches) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    watches
        .0
        .push(tokio::spawn(stream.for_each(|_| std::future::ready(()))));
    reader
}

/// The Ready condition's status ("True", "False", "Unknown") if present.
fn ready_status(n: &Node) -> Option<String> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

/// The lifecycle taints a node with this Ready status should carry.
pub fn desired_taints(ready: Option<&str>) -> Vec<(&'static str, &'static str)> {
    let key = match ready {
        Some("True") => return Vec::new(),
        Some("Unknown") => TAINT_UNREACHABLE,
        _ => TAINT_NOT_READY,
    };
    vec![(key, "NoSchedule"), (key, "NoExecute")]
}

/// Node conditions whose `True` status gets a NoSchedule taint (upstream's
/// `nodeConditionToTaintKeyStatusMap`, TaintNodesByCondition). The kubelet reports the
/// conditions but may not write taints (NodeRestriction), so this controller does.
pub const CONDITION_TAINTS: [(&str, &str); 4] = [
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
    (
        "NetworkUnavailable",
        "node.kubernetes.io/network-unavailable",
    ),
];
/// `spec.unschedulable` (kubectl cordon) as a taint, as upstream.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// The NoSchedule taints for the node's pressure conditions and cordon. A node whose Ready
/// is `Unknown` has all its conditions Unknown (this controller set them), so none apply.
pub fn condition_taints(node: &Node, ready: Option<&str>) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if ready != Some("Unknown") {
        let conditions = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default();
        for (cond, key) in CONDITION_TAINTS {
            if conditions
                .iter()
                .any(|c| c.type_ == cond && c.status == "True")
            {
                out.push((key, "NoSchedule"));
            }
        }
    }
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        out.push((TAINT_UNSCHEDULABLE, "NoSchedule"));
    }
    out
}

fn is_lifecycle_taint(t: &Taint) -> bool {
    ((t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE)
        && (t.effect == "NoSchedule" || t.effect == "NoExecute"))
        || (t.effect == "NoSchedule"
            && (t.key == TAINT_UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, k)| t.key == *k)))
}

/// The node's taints with the lifecycle ones replaced by `want` (keeping `timeAdded` of
/// those already present). `None` when nothing changes.
fn retaint(current: &[Taint], want: &[(&str, &str)], now: &Time) -> Option<Vec<Taint>> {
    let have: HashSet<(&str, &str)> = current
        .iter()
        .filter(|t| is_lifecycle_taint(t))
        .map(|t| (t.key.as_str(), t.effect.as_str()))
        .collect();
    let want_set: HashSet<(&str, &str)> = want.iter().copied().collect();
    if have == want_set {
        return None;
    }
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| {
            !is_lifecycle_taint(t) || want_set.contains(&(t.key.as_str(), t.effect.as_str()))
        })
        .cloned()
        .collect();
    for (k, e) in want {
        if !have.contains(&(*k, *e)) {
            out.push(Taint {
                key: (*k).into(),
                effect: (*e).into(),
                value: None,
                time_added: Some(now.clone()),
            });
        }
    }
    Some(out)
}

/// When must `pod` leave a node with these NoExecute taints? `Some(None)` = now,
/// `Some(Some(t))` = at t, `None` = never.
pub fn eviction_deadline(pod: &Pod, taints: &[Taint]) -> Option<Option<jiff::Timestamp>> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let mut earliest: Option<jiff::Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<_> = tolerations
            .iter()
            .filter(|t| crate::api::matching::tolerates(t, taint))
            .collect();
        if matching.is_empty() {
            return Some(None);
        }
        // The shortest bounded toleration wins; unbounded ones tolerate forever.
        let Some(secs) = matching.iter().filter_map(|t| t.toleration_seconds).min() else {
            continue;
        };
        let added = taint
            .time_added
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_else(jiff::Timestamp::now);
        let at = added + jiff::SignedDuration::from_secs(secs.max(0));
        earliest = Some(earliest.map_or(at, |e| e.min(at)));
    }
    earliest.map(Some)
}

struct Monitor {
    client: kube::Client,
    grace: Duration,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    /// node → (what we last saw of its lease renewal and Ready heartbeat, when we saw it change).
    probes: HashMap<String, (String, Instant)>,
    /// Pods already deleted by us (until the cache catches up).
    evicted: HashSet<String>,
}

/// Run until the process stops (the caller aborts the task).
pub async fn run(client: kube::Client, cfg: Config) -> Result<(), Error> {
    let mut watches = Watches::default();
    let nodes = follow(Api::<Node>::all(client.clone()), &mut watches);
    let leases = follow(
        Api::<Lease>::namespaced(client.clone(), LEASE_NS),
        &mut watches,
    );
    let pods = follow(Api::<Pod>::all(client.clone()), &mut watches);
    for ready in [
        nodes.wait_until_ready().await.is_ok(),
        leases.wait_until_ready().await.is_ok(),
        pods.wait_until_ready().await.is_ok(),
    ] {
        if !ready {
            return Err(Error::Controller {
                name: NAME,
                detail: "a watch ended before its first list".into(),
            });
        }
    }
    let period = (cfg.grace_period / 8).clamp(Duration::from_millis(200), Duration::from_secs(5));
    let mut m = Monitor {
        client,
        grace: cfg.grace_period,
        nodes,
        leases,
        pods,
        probes: HashMap::new(),
        evicted: HashSet::new(),
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        m.pass().await;
    }
}

impl Monitor {
    async fn pass(&mut self) {
        let now = Instant::now();
        let now_time = Time(jiff::Timestamp::now());
        let nodes = self.nodes.state();
        let names: HashSet<String> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        self.probes.retain(|n, _| names.contains(n));
        let mut taints_by_node: HashMap<String, Vec<Taint>> = HashMap::new();
        for node in &nodes {
            let Some(name) = node.metadata.name.clone() else {
                continue;
            };
            let lease = self
                .leases
                .get(&ObjectRef::new(&name).within(LEASE_NS))
                .and_then(|l| l.spec.clone())
                .and_then(|s| s.renew_time)
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            let heartbeat = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .and_then(|c| c.last_heartbeat_time.as_ref())
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            let probe = format!("{lease}|{heartbeat}");
            let seen = self
                .probes
                .entry(name.clone())
                .or_insert((probe.clone(), now));
            if seen.0 != probe {
                *seen = (probe, now);
            }
            let stale = now.duration_since(seen.1) > self.grace;
            let mut ready = ready_status(node);
            if stale && ready.as_deref() != Some("Unknown") && self.mark_unknown(&name, node).await
            {
                ready = Some("Unknown".into());
            }
            let current = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            let mut want = desired_taints(ready.as_deref());
            want.extend(condition_taints(node, ready.as_deref()));
            let taints = match retaint(&current, &want, &now_time) {
                Some(next) => {
                    let patch = json!({
                        "metadata": {"resourceVersion": node.metadata.resource_version},
                        "spec": {"taints": next},
                    });
                    match Api::<Node>::all(self.client.clone())
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(controller = NAME, node = %name, ready = ?ready, "node taints updated");
                            next
                        }
                        Err(e) => {
                            tracing::debug!(controller = NAME, node = %name, error = %e, "cannot update taints");
                            current
                        }
                    }
                }
                None => current,
            };
            taints_by_node.insert(name, taints);
        }
        self.evict(&taints_by_node).await;
    }

    /// Ready (and the pressure conditions the kubelet reported) → Unknown.
    async fn mark_unknown(&self, name: &str, node: &Node) -> bool {
        let now = Time(jiff::Timestamp::now());
        let conditions: Vec<serde_json::Value> = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .iter()
            .filter(|c| c.status != "Unknown")
            .map(|c| {
                json!({"type": c.type_, "status": "Unknown", "reason": "NodeStatusUnknown",
                       "message": "Kubelet stopped posting node status.", "lastTransitionTime": now})
            })
            .chain(
                ready_status(node)
                    .is_none()
                    .then(|| json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                                    "message": "Kubelet never posted node status.", "lastTransitionTime": now})),
            )
            .collect();
        let patch = json!({"status": {"conditions": conditions}});
        match Api::<Node>::all(self.client.clone())
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(controller = NAME, node = %name, "node stopped renewing its lease: Ready=Unknown");
                true
            }
            Err(e) => {
                tracing::warn!(controller = NAME, node = %name, error = %e, "cannot mark the node Unknown");
                false
            }
        }
    }

    async fn evict(&mut self, taints_by_node: &HashMap<String, Vec<Taint>>) {
        let pods = self.pods.state();
        let live: HashSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        self.evicted.retain(|u| live.contains(u));
        let now = jiff::Timestamp::now();
        for pod in pods {
            let (Some(ns), Some(name), Some(uid)) = (
                pod.metadata.namespace.clone(),
                pod.metadata.name.clone(),
                pod.metadata.uid.clone(),
            ) else {
                continue;
            };
            let Some(node) = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty())
            else {
                continue;
            };
            if self.evicted.contains(&uid) {
                continue;
            }
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            // Bound to a node we do not know: pod GC removes it after its quarantine.
            let Some(taints) = taints_by_node.get(&node) else {
                continue;
            };
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let due = match eviction_deadline(&pod, taints) {
                Some(None) => true,
                Some(Some(at)) => at <= now,
                None => false,
            };
            if due && self.delete(&api, &name, &uid, None).await {
                tracing::info!(controller = NAME, pod = %format!("{ns}/{name}"), node = %node, "evicted by NoExecute taint");
                self.event(&ns, &name, &uid).await;
            }
        }
    }

    async fn delete(&mut self, api: &Api<Pod>, name: &str, uid: &str, grace: Option<u32>) -> bool {
        let dp = DeleteParams {
            grace_period_seconds: grace,
            preconditions: Some(kube::api::Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {
                self.evicted.insert(uid.to_string());
                true
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                self.evicted.insert(uid.to_string());
                false
            }
            Err(e) => {
                tracing::warn!(controller = NAME, pod = %name, error = %e, "cannot delete pod");
                false
            }
        }
    }

    async fn event(&self, ns: &str, name: &str, uid: &str) {
        let now = Time(jiff::Timestamp::now());
        let ev = json!({
            "metadata": {"name": format!("{name}.{:x}", rand::random::<u64>()), "namespace": ns},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": name, "uid": uid},
            "reason": "TaintManagerEviction",
            "message": format!("Marking for deletion Pod {ns}/{name}"),
            "type": "Normal",
            "source": {"component": "taint-eviction-controller"},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        });
        let Ok(ev) = serde_json::from_value::<k8s_openapi::api::core::v1::Event>(ev) else {
            return;
        };
        let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.client.clone(), ns);
        let _ = api.create(&PostParams::default(), &ev).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, Toleration};

    fn taint(key: &str, effect: &str, added: jiff::Timestamp) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: Some(Time(added)),
        }
    }

    #[test]
    fn taints_follow_ready() {
        let now = Time(jiff::Timestamp::now());
        let other = taint("dedicated", "NoSchedule", now.0);
        assert_eq!(
            retaint(
                std::slice::from_ref(&other),
                &desired_taints(Some("True")),
                &now
            ),
            None
        );
        let t = retaint(
            std::slice::from_ref(&other),
            &desired_taints(Some("Unknown")),
            &now,
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        assert!(t
            .iter()
            .any(|t| t.key == TAINT_UNREACHABLE && t.effect == "NoExecute"));
        let back = retaint(&t, &desired_taints(Some("True")), &now).unwrap();
        assert_eq!(back, vec![other]);
        assert!(desired_taints(Some("False"))
            .iter()
            .all(|(k, _)| *k == TAINT_NOT_READY));
    }

    #[test]
    fn pressure_conditions_and_cordon_become_taints() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n"},
            "spec": {"unschedulable": true},
            "status": {"conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "MemoryPressure", "status": "True"},
                {"type": "DiskPressure", "status": "False"},
                {"type": "PIDPressure", "status": "True"}]}}))
        .unwrap();
        let mut keys: Vec<&str> = condition_taints(&node, Some("True"))
            .iter()
            .map(|(k, _)| *k)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "node.kubernetes.io/memory-pressure",
                "node.kubernetes.io/pid-pressure",
                TAINT_UNSCHEDULABLE
            ]
        );
        // Unknown: the kubelet's last report no longer counts.
        assert_eq!(
            condition_taints(&node, Some("Unknown")),
            vec![(TAINT_UNSCHEDULABLE, "NoSchedule")]
        );
        let now = Time(jiff::Timestamp::now());
        let t = retaint(&[], &condition_taints(&node, Some("True")), &now).unwrap();
        assert_eq!(t.len(), 3);
        // Pressure relieved: its taint goes, a user's NoSchedule taint of another key stays.
        let user = taint("example.com/x", "NoSchedule", jiff::Timestamp::now());
        let mut with_user = t.clone();
        with_user.push(user.clone());
        let after = retaint(&with_user, &[(TAINT_UNSCHEDULABLE, "NoSchedule")], &now).unwrap();
        assert_eq!(after.len(), 2);
        assert!(after.contains(&user));
    }

    #[test]
    fn eviction_deadlines() {
        let t0 = jiff::Timestamp::from_second(1_000_000).unwrap();
        let taints = [taint(TAINT_UNREACHABLE, "NoExecute", t0)];
        let pod = |tols: Vec<Toleration>| Pod {
            spec: Some(PodSpec {
                tolerations: Some(tols),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(eviction_deadline(&pod(vec![]), &taints), Some(None));
        let tol = |secs: Option<i64>| Toleration {
            key: Some(TAINT_UNREACHABLE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: secs,
            value: None,
        };
        assert_eq!(eviction_deadline(&pod(vec![tol(None)]), &taints), None);
        assert_eq!(
            eviction_deadline(&pod(vec![tol(Some(300)), tol(Some(5))]), &taints),
            Some(Some(t0 + jiff::SignedDuration::from_secs(5)))
        );
    }
}
