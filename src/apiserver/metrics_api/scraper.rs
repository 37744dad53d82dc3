//! The background follower behind `metrics.k8s.io`: every `SCRAPE_INTERVAL` it lists the
//! Nodes in the store and reads each kubelet's `/stats/summary?only_cpu_and_memory=true`
//! (as the apiserver's kubelet client, over the same mTLS path as `nodes/proxy`), at most
//! `PARALLEL` at once, each bounded by a timeout and a body cap. CPU rates come from the
//! cumulative `usageCoreNanoSeconds` of this scrape and the previous one (metrics-server's
//! method), measured between the kubelet's own reading times. A container seen for the first
//! time that started less than two intervals ago (and at least `FRESH_MIN` ago) is measured
//! from its start with zero usage, as metrics-server's "fresh container" rule does, so a new
//! pod is reported after one scrape instead of two. A node that cannot be read drops out of
//! the cache until it answers again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::Value;

use super::{PodPoint, Point, Points, Usage, SCRAPE_INTERVAL};
use crate::apiserver::storage::Builtin;
use crate::apiserver::State;
use crate::store::RangeRequest;

const PARALLEL: usize = 16;
const TIMEOUT: Duration = Duration::from_secs(8);
/// The shortest life a fresh container is measured over (metrics-server: 10 s against its
/// 15 s resolution; ours is the kubelet's own shortest CPU-rate window).
const FRESH_MIN: Duration = Duration::from_secs(1);
/// A summary of 110 pods is well under 1 MiB.
const MAX_BODY: usize = 8 << 20;

/// A cumulative reading: (kubelet's reading time, CPU core-nanoseconds, working set), and
/// when the container started, if the kubelet said.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Raw {
    pub time: jiff::Timestamp,
    pub cpu_ns: u64,
    pub memory: u64,
    pub start: Option<jiff::Timestamp>,
}

/// A pod's (namespace, name) and its containers' readings.
pub type PodRaw = ((String, String), Vec<(String, Raw)>);

/// One node's summary, reduced to cumulative readings.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct NodeRaw {
    pub node: Option<Raw>,
    /// (namespace, pod) → containers' readings.
    pub pods: Vec<PodRaw>,
}

fn raw(v: &Value) -> Option<Raw> {
    let time = v["cpu"]["time"]
        .as_str()
        .or_else(|| v["memory"]["time"].as_str())?
        .parse()
        .ok()?;
    Some(Raw {
        time,
        cpu_ns: v["cpu"]["usageCoreNanoSeconds"].as_u64()?,
        memory: v["memory"]["workingSetBytes"].as_u64()?,
        start: v["startTime"].as_str().and_then(|t| t.parse().ok()),
    })
}

/// A container that started recently enough to be measured from its start: a reading at
/// its start time with zero CPU (metrics-server's `freshContainerMinMetricsResolution`).
fn fresh_start(cur: &Raw) -> Option<Raw> {
    let start = cur.start?;
    let age = cur.time.duration_since(start);
    let age = Duration::try_from(age).ok()?;
    (age >= FRESH_MIN && age < 2 * SCRAPE_INTERVAL).then_some(Raw {
        time: start,
        cpu_ns: 0,
        ..*cur
    })
}

/// The readings of a `/stats/summary` document (what is missing is skipped).
pub fn parse_summary(v: &Value) -> NodeRaw {
    let pods = v["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let ns = p["podRef"]["namespace"].as_str()?.to_string();
            let name = p["podRef"]["name"].as_str()?.to_string();
            let containers: Vec<(String, Raw)> = p["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| Some((c["name"].as_str()?.to_string(), raw(c)?)))
                .collect();
            // metrics-server: a pod without any container readings is not reported.
            (!containers.is_empty()).then_some(((ns, name), containers))
        })
        .collect();
    NodeRaw {
        node: raw(&v["node"]),
        pods,
    }
}

/// The rate between two readings (`None` if time did not advance or the counter reset).
fn rate(prev: &Raw, cur: &Raw) -> Option<(Usage, Duration)> {
    let dt = cur.time.duration_since(prev.time);
    let nanos = u128::try_from(dt.as_nanos()).ok().filter(|n| *n > 0)?;
    let used = u128::from(cur.cpu_ns.checked_sub(prev.cpu_ns)?);
    let nano_cores = u64::try_from(used.checked_mul(1_000_000_000)? / nanos).ok()?;
    Some((
        Usage {
            nano_cores,
            memory_bytes: cur.memory,
        },
        Duration::from_nanos(u64::try_from(nanos).ok()?),
    ))
}

/// Readings of the previous scrape, keyed by node, by (ns, pod, container).
#[derive(Default)]
pub struct Previous {
    nodes: HashMap<String, Raw>,
    containers: HashMap<(String, String, String), Raw>,
}

/// Fold this scrape's readings into points, and remember them for the next scrape.
pub fn points(prev: &mut Previous, scraped: Vec<(String, NodeRaw)>) -> Points {
    let mut out = Points::default();
    let mut next = Previous::default();
    for (node, r) in scraped {
        if let Some(cur) = r.node {
            if let Some((usage, window)) = prev.nodes.get(&node).and_then(|p| rate(p, &cur)) {
                out.nodes.insert(
                    node.clone(),
                    Point {
                        timestamp: cur.time,
                        window,
                        usage,
                    },
                );
            }
            next.nodes.insert(node.clone(), cur);
        }
        for ((ns, pod), containers) in r.pods {
            let mut measured = Vec::new();
            let mut complete = true;
            let (mut timestamp, mut window) = (None, Duration::ZERO);
            for (c, cur) in containers {
                let key = (ns.clone(), pod.clone(), c.clone());
                let measured_from = prev
                    .containers
                    .get(&key)
                    .copied()
                    .or_else(|| fresh_start(&cur));
                match measured_from.and_then(|p| rate(&p, &cur)) {
                    Some((usage, w)) => {
                        timestamp = Some(cur.time);
                        window = window.max(w);
                        measured.push((c, usage));
                    }
                    None => complete = false,
                }
                next.containers.insert(key, cur);
            }
            if let (true, Some(timestamp)) = (complete, timestamp) {
                out.pods.insert(
                    (ns, pod),
                    PodPoint {
                        timestamp,
                        window,
                        containers: measured,
                    },
                );
            }
        }
    }
    *prev = next;
    out
}

/// Names of the Nodes in the store.
async fn node_names(state: &State) -> Vec<String> {
    let range = state
        .store
        .range(RangeRequest {
            prefix: Builtin::Nodes.prefix().to_string(),
            start_after: None,
            limit: 0,
            revision: None,
        })
        .await;
    match range {
        Ok(r) => r
            .items
            .iter()
            .filter_map(|kv| kv.key.strip_prefix(Builtin::Nodes.prefix()))
            .map(str::to_string)
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, "metrics: cannot list nodes");
            Vec::new()
        }
    }
}

async fn scrape_node(state: &State, node: &str) -> Result<NodeRaw, String> {
    let read = async {
        let resp = crate::apiserver::node_proxy::kubelet_get(
            state,
            node,
            "/stats/summary?only_cpu_and_memory=true",
        )
        .await
        .map_err(|e| e.message.clone())?;
        if !resp.status().is_success() {
            return Err(format!("the kubelet answered {}", resp.status()));
        }
        let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Ok(parse_summary(&v))
    };
    tokio::time::timeout(TIMEOUT, read)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// Scrape forever (the task ends with the server).
pub async fn run(state: Arc<State>) {
    let mut prev = Previous::default();
    let mut tick = tokio::time::interval(SCRAPE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let nodes = node_names(&state).await;
        let state_ref = &state;
        let scraped: Vec<(String, NodeRaw)> = futures::stream::iter(nodes)
            .map(|node| async move {
                match scrape_node(state_ref, &node).await {
                    Ok(r) => Some((node, r)),
                    Err(e) => {
                        tracing::debug!(%node, error = %e, "metrics: cannot scrape the kubelet");
                        None
                    }
                }
            })
            .buffer_unordered(PARALLEL)
            .filter_map(|x| async move { x })
            .collect()
            .await;
        let pts = points(&mut prev, scraped);
        state.resource_metrics.replace(pts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn summary(t: &str, node_cpu: u64, c_cpu: u64) -> Value {
        json!({
            "node": {"nodeName": "n", "cpu": {"time": t, "usageCoreNanoSeconds": node_cpu},
                     "memory": {"time": t, "workingSetBytes": 1000}},
            "pods": [
                {"podRef": {"name": "p", "namespace": "ns"},
                 "containers": [{"name": "c", "cpu": {"time": t, "usageCoreNanoSeconds": c_cpu},
                                 "memory": {"time": t, "workingSetBytes": 2048}}]},
                {"podRef": {"name": "empty", "namespace": "ns"}, "containers": []}
            ]
        })
    }

    #[test]
    fn rates_between_scrapes_as_metrics_server() {
        let mut prev = Previous::default();
        let first = parse_summary(&summary("2026-01-01T00:00:00Z", 1_000, 0));
        assert_eq!(
            first.pods.len(),
            1,
            "a pod without containers is not reported"
        );
        let p = points(&mut prev, vec![("n".into(), first)]);
        assert!(
            p.nodes.is_empty() && p.pods.is_empty(),
            "no rate from one scrape"
        );
        // 10 s later: the container used 2 CPU-seconds → 200m; the node 5 s → 500m.
        let second = parse_summary(&summary(
            "2026-01-01T00:00:10Z",
            5_000_001_000,
            2_000_000_000,
        ));
        let p = points(&mut prev, vec![("n".into(), second)]);
        assert_eq!(p.nodes["n"].usage.nano_cores, 500_000_000);
        assert_eq!(p.nodes["n"].window, Duration::from_secs(10));
        let pod = &p.pods[&("ns".to_string(), "p".to_string())];
        assert_eq!(pod.containers[0].1.nano_cores, 200_000_000);
        assert_eq!(pod.containers[0].1.memory_bytes, 2048);
        // A node that drops out of a scrape drops out of the cache.
        let p = points(&mut prev, vec![]);
        assert!(p.nodes.is_empty());
    }

    #[test]
    fn malformed_summaries_give_nothing() {
        for bad in [
            json!(null),
            json!({"pods": "x"}),
            json!({"node": {"cpu": {"time": "nope"}}}),
            json!({"pods": [{"podRef": {}}]}),
        ] {
            let r = parse_summary(&bad);
            assert!(r.node.is_none() && r.pods.is_empty(), "{bad}");
        }
        // A counter that went back (a restarted container) gives no rate.
        let a = Raw {
            time: "2026-01-01T00:00:00Z".parse().unwrap(),
            cpu_ns: 10,
            memory: 1,
            start: None,
        };
        let b = Raw {
            time: "2026-01-01T00:00:10Z".parse().unwrap(),
            cpu_ns: 5,
            memory: 1,
            start: None,
        };
        assert!(rate(&a, &b).is_none());
        assert!(rate(&b, &a).is_none());
    }

    fn with_start(start: &str, at: &str, cpu: u64) -> NodeRaw {
        parse_summary(&json!({
            "pods": [{"podRef": {"name": "p", "namespace": "ns"},
                      "containers": [{"name": "c", "startTime": start,
                                      "cpu": {"time": at, "usageCoreNanoSeconds": cpu},
                                      "memory": {"time": at, "workingSetBytes": 1}}]}]
        }))
    }

    #[test]
    fn a_fresh_container_is_measured_from_its_start() {
        let key = ("ns".to_string(), "p".to_string());
        // Started 4 s before the first scrape that sees it, 1 CPU-second used: 250m at once.
        let mut prev = Previous::default();
        let first = with_start(
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:04Z",
            1_000_000_000,
        );
        let p = points(&mut prev, vec![("n".into(), first)]);
        assert_eq!(p.pods[&key].containers[0].1.nano_cores, 250_000_000);
        assert_eq!(p.pods[&key].window, Duration::from_secs(4));
        // Younger than FRESH_MIN: too short a window, wait for the next scrape.
        let mut prev = Previous::default();
        let young = with_start("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5Z", 10);
        assert!(points(&mut prev, vec![("n".into(), young)]).pods.is_empty());
        // Long-running (the server just started): no lifetime average, two scrapes needed.
        let mut prev = Previous::default();
        let old = with_start("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z", 10);
        assert!(points(&mut prev, vec![("n".into(), old)]).pods.is_empty());
    }
}
