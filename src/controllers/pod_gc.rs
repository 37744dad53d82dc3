//! Pod garbage collection, as upstream's `pod-garbage-collector` (`pkg/controller/podgc`).
//! Every pass (20 s upstream; shorter when the node monitor grace period is shorter) works on
//! the shared pod and node caches:
//!
//! - **terminated pods over the threshold**: when more pods than
//!   `--terminated-pod-gc-threshold` (12,500 by default; 0 turns this off) are `Succeeded` or
//!   `Failed`, the surplus is deleted, evicted pods first, then oldest first (upstream's
//!   `byEvictionAndCreationTimestamp`);
//! - **orphaned pods**: a pod bound to a node that is missing from the cache is deleted only
//!   once the node has stayed missing for the quarantine (upstream's `quarantineTime`, 40 s;
//!   here the node monitor grace period, 40 s by default, so tests can shorten both) *and* a
//!   live GET of the node answers 404 — a node whose watch event is merely late is never
//!   mistaken for a deleted one. The pod is first marked `Failed` with the
//!   `DisruptionTarget` condition (reason `DeletionByPodGC`, "PodGC: node no longer exists"),
//!   then deleted with grace period 0;
//! - **unscheduled terminating pods**: a pod being deleted that was never bound has no
//!   kubelet to finish its deletion: it is marked `Failed` and deleted with grace period 0.
//!
//! Invariants: deletions carry the pod's uid as precondition (a recreated pod of the same
//! name is never touched); a pod already handled is not handled again until the cache shows
//! a newer version of it; the API is only called for the resulting writes and the one node
//! GET that confirms a deletion.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::Store;
use serde_json::json;

use super::informers::Informer;
use super::Error;

const NAME: &str = "pod-garbage-collector";
/// Upstream's `gcCheckPeriod`.
const PERIOD: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct Config {
    /// Terminated pods kept before the oldest are deleted; 0 disables that part.
    pub terminated_pod_gc_threshold: usize,
    /// How long a node must be missing before its pods are treated as orphans.
    pub quarantine: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            terminated_pod_gc_threshold: 12_500,
            quarantine: Duration::from_secs(40),
        }
    }
}

/// Succeeded or Failed.
pub fn terminated(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

fn node_of(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

/// The terminated pods to delete so that at most `threshold` remain: evicted ones first,
/// then the oldest (by creation time, then name for a stable order).
pub fn over_threshold(pods: &[std::sync::Arc<Pod>], threshold: usize) -> Vec<&Pod> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut done: Vec<&Pod> = pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| terminated(p))
        .collect();
    let Some(surplus) = done.len().checked_sub(threshold).filter(|n| *n > 0) else {
        return Vec::new();
    };
    let evicted = |p: &Pod| p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted");
    done.sort_by(|a, b| {
        evicted(b)
            .cmp(&evicted(a))
            .then_with(|| {
                let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
                t(a).cmp(&t(b))
            })
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    done.truncate(surplus);
    done
}

struct Gc {
    client: kube::Client,
    cfg: Config,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// Node name → when this controller first found it missing from the cache.
    missing: HashMap<String, Instant>,
    /// (uid, resourceVersion) of pods already handled.
    handled: HashSet<(String, String)>,
}

/// Run until the process stops (the caller aborts the task).
pub fn run(
    client: kube::Client,
    cfg: Config,
    pods: &Informer<Pod>,
    nodes: &Informer<Node>,
) -> impl std::future::Future<Output = Result<(), Error>> {
    let ready = (pods.ready(), nodes.ready());
    let period = (cfg.quarantine / 2).clamp(Duration::from_millis(500), PERIOD);
    let mut gc = Gc {
        client,
        cfg,
        pods: pods.store(),
        nodes: nodes.store(),
        missing: HashMap::new(),
        handled: HashSet::new(),
    };
    async move {
        ready.0.await;
        ready.1.await;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            gc.pass().await;
        }
    }
}

/// Why a pod is collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Terminated,
    Orphaned,
    UnscheduledTerminating,
}

impl Gc {
    async fn pass(&mut self) {
        let pods = self.pods.state();
        let live: HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        self.handled.retain(|(u, _)| live.contains(u.as_str()));
        let mut work: Vec<(&Pod, Cause)> =
            over_threshold(&pods, self.cfg.terminated_pod_gc_threshold)
                .into_iter()
                .map(|p| (p, Cause::Terminated))
                .collect();
        let gone = self.deleted_nodes(&pods).await;
        for p in &pods {
            let node = node_of(p);
            if !node.is_empty() && gone.contains(node) {
                work.push((p, Cause::Orphaned));
            } else if node.is_empty() && p.metadata.deletion_timestamp.is_some() {
                work.push((p, Cause::UnscheduledTerminating));
            }
        }
        for (p, cause) in work {
            let key = (
                p.metadata.uid.clone().unwrap_or_default(),
                p.metadata.resource_version.clone().unwrap_or_default(),
            );
            if key.0.is_empty() || self.handled.contains(&key) {
                continue;
            }
            if self.collect(p, cause).await {
                self.handled.insert(key);
            }
        }
    }

    /// Nodes pods are bound to that have been missing for the quarantine and that the API
    /// confirms are gone.
    async fn deleted_nodes(&mut self, pods: &[std::sync::Arc<Pod>]) -> HashSet<String> {
        let now = Instant::now();
        let wanted: HashSet<&str> = pods
            .iter()
            .map(|p| node_of(p))
            .filter(|n| !n.is_empty())
            .collect();
        let absent: HashSet<&str> = wanted
            .into_iter()
            .filter(|n| {
                self.nodes
                    .get(&kube::runtime::reflector::ObjectRef::new(n))
                    .is_none()
            })
            .collect();
        self.missing.retain(|n, _| absent.contains(n.as_str()));
        let mut gone = HashSet::new();
        let api: Api<Node> = Api::all(self.client.clone());
        for n in absent {
            let since = *self.missing.entry(n.to_string()).or_insert(now);
            if now.duration_since(since) < self.cfg.quarantine {
                continue;
            }
            match api.get_opt(n).await {
                Ok(None) => {
                    gone.insert(n.to_string());
                }
                // The cache was late: the node exists.
                Ok(Some(_)) => {
                    self.missing.remove(n);
                }
                Err(e) => {
                    tracing::debug!(controller = NAME, node = %n, error = %e, "cannot check the node");
                }
            }
        }
        gone
    }

    /// Mark the pod Failed where upstream does, then delete it with grace period 0.
    /// True when the pod is dealt with (deleted now or already gone).
    async fn collect(&self, p: &Pod, cause: Cause) -> bool {
        let (Some(ns), Some(name), Some(uid)) = (
            p.metadata.namespace.as_deref(),
            p.metadata.name.as_deref(),
            p.metadata.uid.as_deref(),
        ) else {
            return true;
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        if !terminated(p) {
            let mut status = json!({"phase": "Failed"});
            if cause == Cause::Orphaned {
                status["conditions"] = json!([{
                    "type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                    "message": "PodGC: node no longer exists",
                    "lastTransitionTime": jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
                        .unwrap_or_else(|_| jiff::Timestamp::now()),
                }]);
            }
            let patch = json!({"status": status});
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => return true,
                Err(e) => {
                    tracing::warn!(controller = NAME, pod = %format!("{ns}/{name}"), error = %e, "cannot mark the pod Failed");
                    return false;
                }
            }
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {
                tracing::info!(controller = NAME, pod = %format!("{ns}/{name}"), cause = ?cause, "garbage collected the pod");
                true
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => true,
            Err(e) => {
                tracing::warn!(controller = NAME, pod = %format!("{ns}/{name}"), error = %e, "cannot delete the pod");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn pod(name: &str, created: i64, phase: &str, reason: Option<&str>) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "creationTimestamp":
                    jiff::Timestamp::from_second(created).unwrap().to_string()},
                "status": {"phase": phase, "reason": reason},
            }))
            .unwrap(),
        )
    }

    fn names(v: Vec<&Pod>) -> Vec<String> {
        v.iter().filter_map(|p| p.metadata.name.clone()).collect()
    }

    #[test]
    fn surplus_of_terminated_pods_oldest_and_evicted_first() {
        let pods = vec![
            pod("running-old", 1, "Running", None),
            pod("done-3", 30, "Succeeded", None),
            pod("done-1", 10, "Failed", None),
            pod("evicted-new", 50, "Failed", Some("Evicted")),
            pod("done-2", 20, "Succeeded", None),
        ];
        assert_eq!(names(over_threshold(&pods, 2)), ["evicted-new", "done-1"]);
        assert_eq!(names(over_threshold(&pods, 4)), Vec::<String>::new());
        assert_eq!(names(over_threshold(&pods, 0)), Vec::<String>::new());
        assert_eq!(
            names(over_threshold(&pods, 1)),
            ["evicted-new", "done-1", "done-2"]
        );
    }
}
