//! The HorizontalPodAutoscaler's `Pods`, `Object` and `External` metrics, as upstream's
//! `ReplicaCalculator` (`GetMetricReplicas`, `GetObjectMetricReplicas`,
//! `GetObjectPerPodMetricReplicas`, `GetExternalMetricReplicas`,
//! `GetExternalPerPodMetricReplicas`), read from the aggregated metrics APIs an adapter
//! serves (the controller asks the apiserver, which proxies to the APIService):
//!
//! - `Pods`: `custom.metrics.k8s.io/v1beta2` `namespaces/<ns>/pods/*/<metric>` for the
//!   target's pods; an `AverageValue` target, with the same ready/unready/missing pod
//!   treatment as a non-CPU resource metric;
//! - `Object`: `custom.metrics.k8s.io/v1beta2` `namespaces/<ns>/<resource>/<name>/<metric>`;
//!   `Value` → `ceil(value / target × ready pods)`, `AverageValue` →
//!   `ceil(value / target)`;
//! - `External`: `external.metrics.k8s.io/v1beta1` `namespaces/<ns>/<metric>`, the values
//!   summed; `Value` and `AverageValue` as for `Object`.
//!
//! Nothing changes within the 0.1 tolerance. Values are milli-units, as upstream's
//! `MilliValue()`. The described object's resource is its kind's plural (lower case, `s`,
//! `es` after `s`/`x`/`ch`/`sh`, `ies` after a consonant + `y`) with the group appended:
//! upstream asks its REST mapper, which gives the same for every built-in kind.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::{MetricIdentifier, MetricSpec, MetricTarget};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams};
use serde_json::{json, Value};

use super::hpa_replicas::{resource_replicas, Sample, Target, TOLERANCE};

/// A proposal: (replicas, the metric's name for messages, its `currentMetrics` entry).
pub type Proposal = (i32, String, Value);

fn milli(q: &str) -> Option<i64> {
    crate::api::quantity::Milli::parse(q)
        .map(|m| m.0)
        .and_then(|m| i64::try_from(m).ok())
}

fn quantity(m: i64) -> String {
    if m % 1000 == 0 {
        (m / 1000).to_string()
    } else {
        format!("{m}m")
    }
}

/// A label selector as a query string (`a=b,c in (d,e),!f`).
pub fn selector_string(s: &LabelSelector) -> String {
    let mut parts: Vec<String> = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The plural of a kind, as the REST mapper names built-in resources.
fn plural(kind: &str) -> String {
    let k = kind.to_ascii_lowercase();
    if k.ends_with('s') || k.ends_with('x') || k.ends_with("ch") || k.ends_with("sh") {
        format!("{k}es")
    } else if k.ends_with('y') && !k.ends_with("ay") && !k.ends_with("ey") && !k.ends_with("oy") {
        format!("{}ies", &k[..k.len() - 1])
    } else {
        format!("{k}s")
    }
}

/// Upstream's `getUsageRatioReplicaCount`.
pub fn usage_ratio_replicas(current: i32, ratio: f64, ready_pods: usize) -> i32 {
    if current == 0 {
        return ceil(ratio);
    }
    if (1.0 - ratio).abs() <= TOLERANCE {
        return current;
    }
    ceil(ratio * ready_pods as f64)
}

/// Upstream's per-pod variants: the total over `target` per pod.
pub fn per_pod_replicas(current: i32, total: i64, target: i64) -> i32 {
    let ratio = total as f64 / (target.max(1) as f64 * f64::from(current.max(1)));
    if (1.0 - ratio).abs() <= TOLERANCE {
        return current;
    }
    ceil(total as f64 / target.max(1) as f64)
}

fn ceil(v: f64) -> i32 {
    let v = v.ceil();
    if v >= f64::from(i32::MAX) {
        i32::MAX
    } else if v <= 0.0 {
        0
    } else {
        v as i32
    }
}

/// Running, Ready and not being deleted (upstream's `getReadyPodsCount`).
fn ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// (value, average value) targets in milli-units; which one the target type names.
fn target_values(t: &MetricTarget) -> Result<(Option<i64>, Option<i64>), String> {
    let parse = |q: &Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>, what| {
        q.as_ref()
            .map(|q| milli(&q.0).ok_or_else(|| format!("invalid {what} {}", q.0)))
            .transpose()
    };
    match t.type_.as_str() {
        "Value" => Ok((
            Some(parse(&t.value, "value")?.ok_or("value is required for a Value target")?),
            None,
        )),
        "AverageValue" => Ok((
            None,
            Some(
                parse(&t.average_value, "averageValue")?
                    .ok_or("averageValue is required for an AverageValue target")?,
            ),
        )),
        other => Err(format!(
            "the target type {other} is not supported for this metric"
        )),
    }
}

fn metric_query(m: &MetricIdentifier, key: &str) -> String {
    m.selector
        .as_ref()
        .map(selector_string)
        .filter(|s| !s.is_empty())
        .map(|s| format!("{key}={}", encode(&s)))
        .unwrap_or_default()
}

async fn get(client: &kube::Client, path: &str) -> Result<Value, String> {
    let req = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client
        .request::<Value>(req)
        .await
        .map_err(|e| format!("unable to fetch metrics from {path}: {e}"))
}

async fn pods(client: &kube::Client, ns: &str, selector: &str) -> Result<Vec<Pod>, String> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .map_err(|e| e.to_string())
}

/// The proposal of one `Pods`, `Object` or `External` metric of an HPA in `ns` whose
/// target has `current` replicas and whose pods match `selector`.
pub async fn proposal(
    client: &kube::Client,
    ns: &str,
    spec: &MetricSpec,
    current: i32,
    selector: &str,
) -> Result<Proposal, String> {
    match spec.type_.as_str() {
        "Pods" => {
            let src = spec
                .pods
                .as_ref()
                .ok_or("pods is required for a Pods metric")?;
            let (_, avg) = target_values(&src.target)?;
            let target = avg.ok_or("a Pods metric takes an AverageValue target")?;
            let mut query = format!("labelSelector={}", encode(selector));
            let extra = metric_query(&src.metric, "metricLabelSelector");
            if !extra.is_empty() {
                query = format!("{query}&{extra}");
            }
            let list = get(
                client,
                &format!(
                    "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/pods/*/{}?{query}",
                    src.metric.name
                ),
            )
            .await?;
            let samples = pod_samples(&list);
            if samples.is_empty() {
                return Err(format!(
                    "no metrics returned from custom metrics API for {}",
                    src.metric.name
                ));
            }
            let pods = pods(client, ns, selector).await?;
            let p = resource_replicas(
                current,
                Target::AverageValue(target),
                "",
                &pods,
                &samples,
                jiff::Timestamp::now(),
            )?;
            Ok((
                p.replicas,
                format!("pods metric {}", src.metric.name),
                json!({"type": "Pods", "pods": {"metric": src.metric,
                    "current": {"averageValue": quantity(p.average_milli)}}}),
            ))
        }
        "Object" => {
            let src = spec
                .object
                .as_ref()
                .ok_or("object is required for an Object metric")?;
            let (value, avg) = target_values(&src.target)?;
            let obj = &src.described_object;
            let group = obj
                .api_version
                .as_deref()
                .and_then(|v| v.split_once('/'))
                .map(|(g, _)| g)
                .unwrap_or_default();
            let resource = if group.is_empty() {
                plural(&obj.kind)
            } else {
                format!("{}.{group}", plural(&obj.kind))
            };
            let query = metric_query(&src.metric, "metricLabelSelector");
            let got = get(
                client,
                &format!(
                    "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/{resource}/{}/{}?{query}",
                    obj.name, src.metric.name
                ),
            )
            .await?;
            let usage = got["items"]
                .as_array()
                .and_then(|i| i.first())
                .and_then(|i| i["value"].as_str())
                .and_then(milli)
                .ok_or_else(|| {
                    format!(
                        "no value returned for {} of {} {}",
                        src.metric.name, obj.kind, obj.name
                    )
                })?;
            let (replicas, cur) =
                one_value_replicas(client, ns, selector, current, usage, value, avg).await?;
            Ok((
                replicas,
                format!("{} metric {}", obj.kind, src.metric.name),
                json!({"type": "Object", "object": {"describedObject": obj,
                    "metric": src.metric, "current": cur}}),
            ))
        }
        "External" => {
            let src = spec
                .external
                .as_ref()
                .ok_or("external is required for an External metric")?;
            let (value, avg) = target_values(&src.target)?;
            let query = metric_query(&src.metric, "labelSelector");
            let got = get(
                client,
                &format!(
                    "/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{}?{query}",
                    src.metric.name
                ),
            )
            .await?;
            let items = got["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                return Err(format!(
                    "no metrics returned from external metrics API for {}",
                    src.metric.name
                ));
            }
            let mut usage: i64 = 0;
            for i in &items {
                let v = i["value"]
                    .as_str()
                    .and_then(milli)
                    .ok_or_else(|| format!("invalid external metric value {}", i["value"]))?;
                usage = usage.saturating_add(v);
            }
            let (replicas, cur) =
                one_value_replicas(client, ns, selector, current, usage, value, avg).await?;
            Ok((
                replicas,
                format!("external metric {}", src.metric.name),
                json!({"type": "External", "external": {"metric": src.metric, "current": cur}}),
            ))
        }
        other => Err(format!("the metric type {other} is not supported")),
    }
}

/// Object and External metrics: one value for the whole target. A `Value` target scales by
/// the ratio of usage to target over the ready pods; an `AverageValue` target divides it by
/// the current replicas (upstream's `GetObjectMetricReplicas`/`GetExternalMetricReplicas` and
/// their per-pod variants). Returns the replicas and the `current` entry of the status.
async fn one_value_replicas(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    current: i32,
    usage: i64,
    value: Option<i64>,
    avg: Option<i64>,
) -> Result<(i32, Value), String> {
    match (value, avg) {
        (Some(t), _) => {
            let ready = if current == 0 {
                0
            } else {
                pods(client, ns, selector)
                    .await?
                    .iter()
                    .filter(|p| ready(p))
                    .count()
            };
            let r = usage_ratio_replicas(current, usage as f64 / t.max(1) as f64, ready);
            Ok((r, json!({"value": quantity(usage)})))
        }
        (None, Some(t)) => Ok((
            per_pod_replicas(current, usage, t),
            json!({"averageValue": quantity(usage / i64::from(current.max(1)))}),
        )),
        _ => Err("no target value".into()),
    }
}

/// A custom metrics `MetricValueList` of pods as samples by pod name.
fn pod_samples(list: &Value) -> BTreeMap<String, Sample> {
    let mut out = BTreeMap::new();
    for i in list["items"].as_array().into_iter().flatten() {
        let (Some(name), Some(m)) = (
            i["describedObject"]["name"].as_str(),
            i["value"].as_str().and_then(milli),
        ) else {
            continue;
        };
        let timestamp = i["timestamp"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .unwrap_or_else(jiff::Timestamp::now);
        let window = Duration::from_secs(i["windowSeconds"].as_u64().unwrap_or(60));
        out.insert(
            name.to_string(),
            Sample {
                milli: m,
                timestamp,
                window,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_ratio_rules() {
        // Object Value: 300 against 100 with 2 ready pods → ceil(3 × 2) = 6.
        assert_eq!(usage_ratio_replicas(2, 3.0, 2), 6);
        // Within tolerance: unchanged.
        assert_eq!(usage_ratio_replicas(4, 1.05, 4), 4);
        // From zero replicas: the ratio alone.
        assert_eq!(usage_ratio_replicas(0, 2.5, 0), 3);
        // AverageValue: total 900 over target 200 per pod → ceil(4.5) = 5.
        assert_eq!(per_pod_replicas(3, 900, 200), 5);
        assert_eq!(per_pod_replicas(3, 610, 200), 3);
    }

    #[test]
    fn names_and_selectors() {
        assert_eq!(plural("Service"), "services");
        assert_eq!(plural("Ingress"), "ingresses");
        assert_eq!(plural("NetworkPolicy"), "networkpolicies");
        assert_eq!(plural("Deployment"), "deployments");
        let s: LabelSelector = serde_json::from_value(json!({"matchLabels": {"a": "b"},
            "matchExpressions": [{"key": "c", "operator": "In", "values": ["d", "e"]},
                                 {"key": "f", "operator": "DoesNotExist"}]}))
        .unwrap();
        assert_eq!(selector_string(&s), "a=b,c in (d,e),!f");
    }

    #[test]
    fn reads_metric_value_lists() {
        let list = json!({"items": [
            {"describedObject": {"kind": "Pod", "name": "a"}, "value": "1500m", "timestamp": "2026-01-01T00:00:00Z"},
            {"describedObject": {"kind": "Pod", "name": "b"}, "value": "2"},
            {"describedObject": {"kind": "Pod"}, "value": "2"},
            {"describedObject": {"kind": "Pod", "name": "c"}, "value": "nonsense"}]});
        let s = pod_samples(&list);
        assert_eq!(s.len(), 2);
        assert_eq!(s["a"].milli, 1500);
        assert_eq!(s["b"].milli, 2000);
    }
}
