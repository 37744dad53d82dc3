//! The HorizontalPodAutoscaler's replica calculator for `Resource` metrics, as upstream's
//! `ReplicaCalculator.GetResourceReplicas` / `GetRawResourceReplicas`: the ratio of the pods'
//! usage to the target (utilization of the summed requests, or the average value), the
//! proposal `ceil(ratio × ready pods)`, nothing within the 0.1 tolerance, and upstream's
//! conservative treatment of pods it cannot trust:
//!
//! - deleted or Failed pods are ignored;
//! - Pending pods, and for CPU pods not (yet) Ready or whose sample predates a full window
//!   since they became Ready during the first 5 minutes, are *unready*: left out, and counted
//!   as using nothing when the others would scale up;
//! - pods without a sample are *missing*: counted at 100 % of the target when scaling down
//!   and at 0 when scaling up, so a missing sample never pushes further;
//! - if that rebalancing flips the direction or lands within tolerance, nothing changes.
//!
//! All quantities are integers in milli-units (CPU millicores, memory milli-bytes), as
//! upstream's `MilliValue()`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

/// Upstream's `--horizontal-pod-autoscaler-tolerance`.
pub const TOLERANCE: f64 = 0.1;
/// Upstream's `--horizontal-pod-autoscaler-cpu-initialization-period`.
const CPU_INITIALIZATION: Duration = Duration::from_secs(300);
/// Upstream's `--horizontal-pod-autoscaler-initial-readiness-delay`.
const INITIAL_READINESS_DELAY: Duration = Duration::from_secs(30);

/// One pod's usage of the resource (the sum of its containers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub milli: i64,
    pub timestamp: jiff::Timestamp,
    pub window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i32),
    /// Per-pod average, milli-units.
    AverageValue(i64),
}

/// A proposal and what it was computed from (for `status.currentMetrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    pub replicas: i32,
    /// Current utilization in percent (for `Utilization` targets).
    pub utilization: Option<i32>,
    /// Current per-pod average, milli-units.
    pub average_milli: i64,
}

/// The pods' requests of `resource` in milli-units; an error names the container without one
/// (upstream refuses a utilization it cannot compute for every container).
fn requests(pod: &Pod, resource: &str) -> Result<i64, String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let mut total: i64 = 0;
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        let q = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(resource));
        let m = q
            .and_then(|q| crate::api::quantity::Milli::parse(&q.0))
            .map(|m| m.0)
            .and_then(|m| i64::try_from(m).ok())
            .ok_or_else(|| {
                format!(
                    "missing request for {resource} in container {} of Pod {name}",
                    c.name
                )
            })?;
        total = total.saturating_add(m);
    }
    Ok(total)
}

/// Upstream's `groupPods`: (ready count, unready, missing, ignored).
fn group_pods(
    pods: &[Pod],
    metrics: &BTreeMap<String, Sample>,
    resource: &str,
    now: jiff::Timestamp,
) -> (usize, BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let (mut ready, mut unready, mut missing, mut ignored) =
        (0, BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() || phase == "Failed" {
            ignored.insert(name);
            continue;
        }
        if phase == "Pending" {
            unready.insert(name);
            continue;
        }
        let Some(sample) = metrics.get(&name) else {
            missing.insert(name);
            continue;
        };
        if resource == "cpu" {
            let cond = status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
            let start = status.and_then(|s| s.start_time.as_ref()).map(|t| t.0);
            let is_unready = match (cond, start) {
                (Some(cond), Some(start)) => {
                    let changed = cond.last_transition_time.as_ref().map_or(start, |t| t.0);
                    if start + CPU_INITIALIZATION > now {
                        // Within initialization: not ready, or no full window since it was.
                        cond.status == "False" || sample.timestamp < changed + sample.window
                    } else {
                        // Later: unready only if it never became ready.
                        cond.status == "False" && start + INITIAL_READINESS_DELAY > changed
                    }
                }
                _ => true,
            };
            if is_unready {
                unready.insert(name);
                continue;
            }
        }
        ready += 1;
    }
    (ready, unready, missing, ignored)
}

/// (usage ratio, utilization percent, per-pod average) of `metrics` against `target`.
fn ratio(
    metrics: &BTreeMap<String, i64>,
    reqs: &BTreeMap<String, i64>,
    target: Target,
) -> Result<(f64, Option<i32>, i64), String> {
    match target {
        Target::Utilization(t) => {
            let (mut used, mut requested, mut n) = (0i64, 0i64, 0i64);
            for (pod, m) in metrics {
                if let Some(r) = reqs.get(pod) {
                    used = used.saturating_add(*m);
                    requested = requested.saturating_add(*r);
                    n += 1;
                }
            }
            if n == 0 || requested == 0 {
                return Err("no metrics returned matched known pods".into());
            }
            let util = i32::try_from(used.saturating_mul(100) / requested).unwrap_or(i32::MAX);
            Ok((f64::from(util) / f64::from(t.max(1)), Some(util), used / n))
        }
        Target::AverageValue(t) => {
            let n = i64::try_from(metrics.len()).unwrap_or(i64::MAX).max(1);
            let avg = metrics.values().fold(0i64, |a, m| a.saturating_add(*m)) / n;
            Ok((avg as f64 / t.max(1) as f64, None, avg))
        }
    }
}

fn ceil_replicas(ratio: f64, pods: usize) -> i32 {
    let v = (ratio * pods as f64).ceil();
    if v >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        v as i32
    }
}

/// The replica proposal for one `Resource` metric over the target's pods.
pub fn resource_replicas(
    current: i32,
    target: Target,
    resource: &str,
    pods: &[Pod],
    samples: &BTreeMap<String, Sample>,
    now: jiff::Timestamp,
) -> Result<Proposal, String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let (ready, unready, missing, ignored) = group_pods(pods, samples, resource, now);
    let mut metrics: BTreeMap<String, i64> = samples
        .iter()
        .filter(|(p, _)| !unready.contains(*p) && !ignored.contains(*p))
        .filter(|(p, _)| {
            pods.iter()
                .any(|pod| pod.metadata.name.as_ref() == Some(*p))
        })
        .map(|(p, s)| (p.clone(), s.milli))
        .collect();
    let mut reqs = BTreeMap::new();
    if matches!(target, Target::Utilization(_)) {
        for pod in pods {
            reqs.insert(
                pod.metadata.name.clone().unwrap_or_default(),
                requests(pod, resource)?,
            );
        }
    }
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let (usage_ratio, utilization, average_milli) = ratio(&metrics, &reqs, target)?;
    let proposal = |replicas| Proposal {
        replicas,
        utilization,
        average_milli,
    };
    let rebalance_unready = !unready.is_empty() && usage_ratio > 1.0;
    if !rebalance_unready && missing.is_empty() {
        if (1.0 - usage_ratio).abs() <= TOLERANCE {
            return Ok(proposal(current));
        }
        return Ok(proposal(ceil_replicas(usage_ratio, ready)));
    }
    for pod in &missing {
        let fill = if usage_ratio < 1.0 {
            match target {
                Target::Utilization(_) => reqs.get(pod).copied().unwrap_or(0),
                Target::AverageValue(t) => t,
            }
        } else {
            0
        };
        metrics.insert(pod.clone(), fill);
    }
    if rebalance_unready {
        for pod in &unready {
            metrics.insert(pod.clone(), 0);
        }
    }
    let (new_ratio, _, _) = ratio(&metrics, &reqs, target)?;
    if (1.0 - new_ratio).abs() <= TOLERANCE
        || (usage_ratio < 1.0 && new_ratio > 1.0)
        || (usage_ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(proposal(current));
    }
    let replicas = ceil_replicas(new_ratio, metrics.len());
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(replicas))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> jiff::Timestamp {
        "2026-01-01T01:00:00Z".parse().unwrap()
    }

    /// A Running, Ready pod started long ago requesting 100m.
    fn pod(name: &str, phase: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}}}]},
            "status": {"phase": phase, "startTime": "2026-01-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
                                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap()
    }

    fn samples(v: &[(&str, i64)]) -> BTreeMap<String, Sample> {
        v.iter()
            .map(|(n, m)| {
                (
                    n.to_string(),
                    Sample {
                        milli: *m,
                        timestamp: now(),
                        window: Duration::from_secs(10),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn ceil_of_ratio_times_ready_pods() {
        let pods = [pod("a", "Running", true), pod("b", "Running", true)];
        // 90m + 110m of 200m requested = 100 %; target 50 % → ratio 2 → 4 replicas.
        let p = resource_replicas(
            2,
            Target::Utilization(50),
            "cpu",
            &pods,
            &samples(&[("a", 90), ("b", 110)]),
            now(),
        )
        .unwrap();
        assert_eq!(
            (p.replicas, p.utilization, p.average_milli),
            (4, Some(100), 100)
        );
        // Within tolerance (95 % of 100 %): unchanged.
        let p = resource_replicas(
            2,
            Target::Utilization(100),
            "cpu",
            &pods,
            &samples(&[("a", 95), ("b", 95)]),
            now(),
        )
        .unwrap();
        assert_eq!(p.replicas, 2);
        // AverageValue: 300m average against 100m → 6.
        let p = resource_replicas(
            2,
            Target::AverageValue(100),
            "cpu",
            &pods,
            &samples(&[("a", 300), ("b", 300)]),
            now(),
        )
        .unwrap();
        assert_eq!(p.replicas, 6);
    }

    #[test]
    fn missing_and_unready_pods_are_conservative() {
        // Scale up: the missing pod counts as 0 → (200+0)/200 = 100 % of 50 % → 4, not 6.
        let pods = [
            pod("a", "Running", true),
            pod("b", "Running", true),
            pod("m", "Running", true),
        ];
        let p = resource_replicas(
            3,
            Target::Utilization(50),
            "cpu",
            &pods,
            &samples(&[("a", 100), ("b", 100)]),
            now(),
        )
        .unwrap();
        assert_eq!(p.replicas, 4);
        // Scale down: the missing pod counts at 100 % of its request: (10+10+100)/300 = 40 %
        // of 50 % → 0.8 → ceil(2.4) = 3: no change.
        let p = resource_replicas(
            3,
            Target::Utilization(50),
            "cpu",
            &pods,
            &samples(&[("a", 10), ("b", 10)]),
            now(),
        )
        .unwrap();
        assert_eq!(p.replicas, 3);
        // An unready pod and a Pending one count as 0 when scaling up.
        let pods = [
            pod("a", "Running", true),
            pod("u", "Running", false),
            pod("p", "Pending", false),
        ];
        let p = resource_replicas(
            3,
            Target::Utilization(50),
            "cpu",
            &pods,
            &samples(&[("a", 100), ("u", 500)]),
            now(),
        )
        .unwrap();
        // (100 + 0 + 0) / 300 = 33 % of 50 %: a direction flip → unchanged.
        assert_eq!(p.replicas, 3);
        // Failed pods are ignored; no samples at all is an error.
        let pods = [pod("f", "Failed", false)];
        assert!(resource_replicas(
            1,
            Target::Utilization(50),
            "cpu",
            &pods,
            &samples(&[]),
            now()
        )
        .is_err());
        // A container without a request cannot give a utilization.
        let mut bare = pod("a", "Running", true);
        if let Some(s) = bare.spec.as_mut() {
            s.containers[0].resources = None;
        }
        let err = resource_replicas(
            1,
            Target::Utilization(50),
            "cpu",
            &[bare],
            &samples(&[("a", 1)]),
            now(),
        )
        .unwrap_err();
        assert!(err.contains("missing request for cpu"), "{err}");
    }
}
