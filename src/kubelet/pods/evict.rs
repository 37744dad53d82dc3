//! Choosing the pod to evict under node pressure, as upstream's eviction manager: one pod
//! per round, ranked by `eviction::rank` (exceeding its requests first, BestEffort first,
//! then priority, then usage above requests); memory usage is the pod cgroup's
//! `memory.usage_in_bytes` (cgroup v1). The chosen pod's worker kills it at once (hard
//! eviction: no grace period) and reports phase `Failed`, reason `Evicted`, with upstream's
//! message, and a `DisruptionTarget` condition.

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::Api;

use super::resources::{self, Qos};
use super::Shared;
use crate::kubelet::eviction::{rank, Candidate, Signal};

fn memory_usage(shared: &Shared, pod: &Pod, qos: Qos) -> u64 {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let path = format!(
        "/sys/fs/cgroup/memory/{}/memory.usage_in_bytes",
        resources::pod_cgroup(&shared.cgroup_root, qos, uid)
    );
    std::fs::read_to_string(path)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn memory_request(pod: &Pod) -> u64 {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .filter_map(|c| {
            c.resources
                .as_ref()?
                .requests
                .as_ref()?
                .get("memory")
                .cloned()
        })
        .filter_map(|q| resources::milli(&q))
        .map(|m| u64::try_from(m / 1000).unwrap_or(0))
        .sum()
}

/// Picks a pod to evict for `signal` and hands it to its worker; returns its name.
pub async fn evict_one(
    shared: &Shared,
    signal: Signal,
    threshold: &str,
    available: &str,
) -> Option<String> {
    if shared
        .evictions
        .lock()
        .map(|e| !e.is_empty())
        .unwrap_or(true)
    {
        return None; // the previous eviction is still in progress
    }
    let client = shared.clients.borrow().clone();
    let api: Api<Pod> = Api::all(client);
    let lp = ListParams::default().fields(&format!("spec.nodeName={}", shared.node_name));
    let pods = api.list(&lp).await.ok()?;
    let mut candidates = Vec::new();
    let mut by_key = std::collections::HashMap::new();
    for p in pods.items {
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("");
        if phase == "Succeeded" || phase == "Failed" || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(uid) = p.metadata.uid.clone() else {
            continue;
        };
        let qos = resources::qos(&p);
        let usage = if signal == Signal::MemoryAvailable {
            memory_usage(shared, &p, qos)
        } else {
            0
        };
        candidates.push(Candidate {
            key: uid.clone(),
            qos: match qos {
                Qos::BestEffort => 0,
                Qos::Burstable => 1,
                Qos::Guaranteed => 2,
            },
            priority: p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
            usage,
            request: memory_request(&p),
        });
        by_key.insert(uid, p);
    }
    let victim = rank(candidates).into_iter().next()?;
    let pod = by_key.get(&victim.key)?;
    let resource = signal.resource();
    let message = format!(
        "The node was low on resource: {resource}. Threshold quantity: {threshold}, available: {available}. "
    );
    let name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    if let Ok(mut e) = shared.evictions.lock() {
        e.insert(victim.key, message);
    }
    Some(name)
}
