//! `metrics.k8s.io/v1beta1` served in-process (what k3s bundles metrics-server for):
//! `NodeMetrics` (`nodes`, cluster-scoped) and `PodMetrics` (`pods`, namespaced), get and
//! list with label and field (`metadata.name`, `metadata.namespace`) selectors, shaped as
//! metrics-server answers them: `timestamp`, `window`, `usage.cpu` in nanocores, `usage.memory`
//! (the working set) in KiB, and the object's labels.
//!
//! Figures come from `scraper`, a background follower that reads every node's kubelet
//! `/stats/summary` as the apiserver's kubelet client every `SCRAPE_INTERVAL` and keeps the
//! last points in a `Cache`; a request never reaches a kubelet (no fan-out per request).
//! CPU is the rate between two scrapes of the cumulative counter (metrics-server's own
//! method), so an object has metrics from its second scrape on. A pod is reported only when
//! every container it runs has a point, as metrics-server does, so an autoscaler never
//! averages a half-measured pod.
//!
//! Invariants: the cache holds only nodes and pods seen in the last scrape (bounded by the
//! cluster); the objects are built at request time from the store (names, labels), so a
//! deleted pod is not reported even before the next scrape.

pub mod scraper;

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use http::Response;
use serde_json::{json, Value};

use super::context::Ctx;
use super::edge::body::{json_response, Body};
use super::status::{ApiError, ApiResult};
use super::storage;
use crate::api::selectors::{FieldSelector, LabelSelector};
use crate::store::RangeRequest;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";

/// How often every kubelet is read (metrics-server's `--metric-resolution` is 15 s in k3s;
/// it recommends no less than 10 s because the kubelet's cAdvisor caches its readings, while
/// our kubelet reads the cgroup files on each request). 5 s lets a pod that just started
/// show up in `kubectl top` (and the HPA) within seconds: the official Python client's e2e
/// suite reads PodMetrics 10 s after a pod turns Running.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(5);

/// One object's usage at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub nano_cores: u64,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// When the kubelet read the counters.
    pub timestamp: jiff::Timestamp,
    /// The interval the CPU rate was measured over.
    pub window: Duration,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodPoint {
    pub timestamp: jiff::Timestamp,
    pub window: Duration,
    pub containers: Vec<(String, Usage)>,
}

/// The last scrape's points, by node name and by (namespace, pod name).
#[derive(Default)]
pub struct Cache {
    inner: RwLock<Points>,
}

#[derive(Default, Clone)]
pub struct Points {
    pub nodes: HashMap<String, Point>,
    pub pods: HashMap<(String, String), PodPoint>,
}

impl Cache {
    pub fn replace(&self, points: Points) {
        match self.inner.write() {
            Ok(mut g) => *g = points,
            Err(p) => *p.into_inner() = points,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Points> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Go's `time.Duration` string as metrics-server prints `window` ("10.003s").
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        let s = format!("{}.{:03}", ms / 1000, ms % 1000);
        format!("{}s", s.trim_end_matches('0'))
    }
}

/// metrics-server's quantities: CPU in nanocores ("1234n"), memory in KiB ("5678Ki").
fn usage_json(u: &Usage) -> Value {
    json!({"cpu": format!("{}n", u.nano_cores), "memory": format!("{}Ki", u.memory_bytes / 1024)})
}

fn metadata(obj: &Value, now: &str) -> Value {
    let mut m = json!({"name": obj["metadata"]["name"], "creationTimestamp": now});
    if let Some(ns) = obj["metadata"]["namespace"].as_str() {
        m["namespace"] = json!(ns);
    }
    if let Some(l) = obj["metadata"]["labels"].as_object() {
        m["labels"] = Value::Object(l.clone());
    }
    m
}

fn node_metrics(node: &Value, p: &Point, now: &str) -> Value {
    json!({
        "kind": "NodeMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": metadata(node, now),
        "timestamp": p.timestamp.to_string(),
        "window": go_duration(p.window),
        "usage": usage_json(&p.usage),
    })
}

fn pod_metrics(pod: &Value, p: &PodPoint, now: &str) -> Value {
    let containers: Vec<Value> = p
        .containers
        .iter()
        .map(|(name, u)| json!({"name": name, "usage": usage_json(u)}))
        .collect();
    json!({
        "kind": "PodMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": metadata(pod, now),
        "timestamp": p.timestamp.to_string(),
        "window": go_duration(p.window),
        "containers": containers,
    })
}

/// The metrics object for a stored node or pod, if the last scrape measured it.
fn metrics_for(cache: &Points, pods: bool, obj: &Value, now: &str) -> Option<Value> {
    let name = obj["metadata"]["name"].as_str()?;
    if pods {
        let ns = obj["metadata"]["namespace"].as_str()?;
        let p = cache.pods.get(&(ns.to_string(), name.to_string()))?;
        Some(pod_metrics(obj, p, now))
    } else {
        let p = cache.nodes.get(name)?;
        Some(node_metrics(obj, p, now))
    }
}

/// GET and LIST of `nodes` and `pods` in `metrics.k8s.io` (the request was authorized).
pub(super) async fn serve(ctx: &Ctx) -> ApiResult<Response<Body>> {
    let pods = ctx.ri.plural == "pods";
    let source = ctx
        .state
        .registry
        .lookup("", "v1", if pods { "pods" } else { "nodes" })
        .ok_or_else(|| ApiError::internal("pods and nodes are not served"))?;
    let now = super::now_rfc3339();
    match ctx.info.verb.as_str() {
        "get" => {
            let name = &ctx.info.name;
            let ns = if pods {
                ctx.info.namespace.as_str()
            } else {
                ""
            };
            let kv = ctx
                .state
                .store
                .get(&storage::key(&source, ns, name), None)
                .await
                .map_err(|e| ApiError::from_store(e, &ctx.ri, name))?;
            let obj = match kv {
                Some(kv) => Some(storage::decode(&kv, &source)?),
                None => None,
            };
            let cache = ctx.state.resource_metrics.read();
            let found = obj.and_then(|o| metrics_for(&cache, pods, &o, &now));
            // metrics-server names a pod `namespace/name` in its NotFound.
            let shown = if pods {
                format!("{ns}/{name}")
            } else {
                name.clone()
            };
            found
                .map(|m| json_response(200, &m))
                .ok_or_else(|| ApiError::not_found(&ctx.ri, &shown))
        }
        "list" => {
            let labels = LabelSelector::parse(ctx.query.get("labelSelector").unwrap_or(""))
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let fields = FieldSelector::parse(ctx.query.get("fieldSelector").unwrap_or(""))
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            for req in &fields.0 {
                let f = req.field();
                if f != "metadata.name" && f != "metadata.namespace" {
                    return Err(ApiError::bad_request(format!(
                        "field label not supported: {f}"
                    )));
                }
            }
            let ns =
                (pods && !ctx.info.namespace.is_empty()).then_some(ctx.info.namespace.as_str());
            let prefix = storage::prefix(&source, ns);
            let range = ctx
                .state
                .store
                .range(RangeRequest {
                    prefix,
                    start_after: None,
                    limit: 0,
                    revision: None,
                })
                .await
                .map_err(|e| ApiError::from_store(e, &ctx.ri, ""))?;
            let cache = ctx.state.resource_metrics.read().clone();
            let mut items = Vec::new();
            for kv in &range.items {
                let Ok(obj) = storage::decode(kv, &source) else {
                    continue;
                };
                let obj_labels: std::collections::BTreeMap<String, String> = obj["metadata"]
                    ["labels"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let field = |f: &str| match f {
                    "metadata.name" => obj["metadata"]["name"].as_str().map(str::to_string),
                    "metadata.namespace" => Some(
                        obj["metadata"]["namespace"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    ),
                    _ => None,
                };
                if !labels.matches(&obj_labels) || !fields.matches(field) {
                    continue;
                }
                if let Some(m) = metrics_for(&cache, pods, &obj, &now) {
                    items.push(m);
                }
            }
            let kind = if pods {
                "PodMetricsList"
            } else {
                "NodeMetricsList"
            };
            Ok(json_response(
                200,
                &json!({
                    "kind": kind,
                    "apiVersion": format!("{GROUP}/{VERSION}"),
                    "metadata": {},
                    "items": items,
                }),
            ))
        }
        verb => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({verb})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_as_metrics_server() {
        assert_eq!(go_duration(Duration::from_millis(10_000)), "10s");
        assert_eq!(go_duration(Duration::from_millis(10_250)), "10.25s");
        assert_eq!(go_duration(Duration::from_millis(9_005)), "9.005s");
        let pod = json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "a"}, "uid": "x"}});
        let p = PodPoint {
            timestamp: "2026-01-01T00:00:00Z".parse().unwrap(),
            window: Duration::from_secs(10),
            containers: vec![(
                "c".into(),
                Usage {
                    nano_cores: 200_000_000,
                    memory_bytes: 4 * 1024 * 1024,
                },
            )],
        };
        let mut cache = Points::default();
        cache.pods.insert(("ns".into(), "p".into()), p);
        let m = metrics_for(&cache, true, &pod, "2026-01-01T00:00:05Z").unwrap();
        assert_eq!(m["kind"], "PodMetrics");
        assert_eq!(m["metadata"]["labels"]["app"], "a");
        assert_eq!(m["metadata"]["namespace"], "ns");
        assert_eq!(m["timestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(m["window"], "10s");
        assert_eq!(m["containers"][0]["usage"]["cpu"], "200000000n");
        assert_eq!(m["containers"][0]["usage"]["memory"], "4096Ki");
        assert!(metrics_for(&cache, false, &pod, "").is_none());
    }
}
