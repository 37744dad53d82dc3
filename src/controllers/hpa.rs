//! The HorizontalPodAutoscaler controller, as upstream's `podautoscaler.HorizontalController`
//! for `autoscaling/v2` HPAs with `Resource` metrics (CPU and memory, `Utilization` or
//! `AverageValue`) read from `metrics.k8s.io` (served in-process by the apiserver).
//!
//! Every `sync_period` (`--horizontal-pod-autoscaler-sync-period`, 15 s) each HPA is
//! reconciled: read the target's `scale` subresource (Deployment, ReplicaSet, StatefulSet,
//! ReplicationController), list its pods by the scale's selector and their PodMetrics, ask
//! `hpa_replicas` for a proposal per metric (the largest wins), normalize it with
//! `hpa_behavior` (stabilization windows, rate policies, min/max), write the scale when it
//! changes (event `SuccessfulRescale`), and write `status` (`currentReplicas`,
//! `desiredReplicas`, `currentMetrics`, `lastScaleTime`, conditions `AbleToScale`,
//! `ScalingActive`, `ScalingLimited` with upstream's reasons) only when it differs.
//!
//! Upstream's guards: a target scaled to 0 disables autoscaling (`ScalingDisabled`); a count
//! outside `[minReplicas, maxReplicas]` is brought back without metrics; when some metrics
//! cannot be computed, the HPA never scales *down* on the others.
//! `Pods`, `Object` and `External` metrics come from the aggregated custom and external
//! metrics APIs (`hpa_custom`); `ContainerResource` is reported invalid.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscaler, MetricSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{json, Value};

use super::events::{Kind, Recorder};
use super::hpa_behavior::History;
use super::hpa_replicas::{resource_replicas, Sample, Target};

#[derive(Debug, Clone)]
pub struct Config {
    pub sync_period: Duration,
}

/// The scalable kinds: (apiVersion, kind) → plural.
fn scale_resource(api_version: &str, kind: &str) -> Option<ApiResource> {
    let plural = match (api_version, kind) {
        ("apps/v1", "Deployment") => "deployments",
        ("apps/v1", "ReplicaSet") => "replicasets",
        ("apps/v1", "StatefulSet") => "statefulsets",
        ("v1", "ReplicationController") => "replicationcontrollers",
        _ => return None,
    };
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    Some(ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural.into(),
    })
}

fn pod_metrics_resource() -> ApiResource {
    ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    }
}

/// Go's duration string as metrics-server writes `window` ("10.5s", "1m0s").
fn go_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut num = String::new();
    for c in s.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'h' | 'm' | 's' => {
                let v: f64 = num.parse().ok()?;
                total += v * match c {
                    'h' => 3600.0,
                    'm' => 60.0,
                    _ => 1.0,
                };
                num.clear();
            }
            _ => return None,
        }
    }
    (num.is_empty() && total.is_finite()).then(|| Duration::from_secs_f64(total.max(0.0)))
}

/// Each pod's summed usage of `resource` from a PodMetricsList.
fn samples(list: &[DynamicObject], resource: &str) -> BTreeMap<String, Sample> {
    list.iter()
        .filter_map(|pm| {
            let name = pm.metadata.name.clone()?;
            let timestamp = pm.data["timestamp"].as_str()?.parse().ok()?;
            let window = go_duration(pm.data["window"].as_str()?)?;
            let mut milli: i64 = 0;
            for c in pm.data["containers"].as_array()? {
                let q = Quantity(c["usage"][resource].as_str()?.to_string());
                let m = crate::api::quantity::Milli::parse(&q.0)?.0;
                milli = milli.saturating_add(i64::try_from(m).ok()?);
            }
            Some((
                name,
                Sample {
                    milli,
                    timestamp,
                    window,
                },
            ))
        })
        .collect()
}

/// A quantity of milli-units as upstream's `NewMilliQuantity(..).String()` for whole values.
fn milli_quantity(m: i64) -> String {
    if m % 1000 == 0 {
        (m / 1000).to_string()
    } else {
        format!("{m}m")
    }
}

/// The resource metric of a spec: (resource name, target), or why it is not supported.
fn resource_target(m: &MetricSpec) -> Result<(String, Target), String> {
    let Some(r) = m.resource.as_ref().filter(|_| m.type_ == "Resource") else {
        return Err(format!(
            "the metric type {} is not supported (only Resource metrics are served)",
            m.type_
        ));
    };
    let t = &r.target;
    let target = match t.type_.as_str() {
        "Utilization" => Target::Utilization(
            t.average_utilization
                .ok_or("averageUtilization is required for a Utilization target")?,
        ),
        "AverageValue" => {
            let q = t
                .average_value
                .as_ref()
                .ok_or("averageValue is required for an AverageValue target")?;
            let m = crate::api::quantity::Milli::parse(&q.0)
                .map(|m| m.0)
                .and_then(|m| i64::try_from(m).ok())
                .ok_or_else(|| format!("invalid averageValue {}", q.0))?;
            Target::AverageValue(m)
        }
        other => return Err(format!("the target type {other} is not supported")),
    };
    Ok((r.name.clone(), target))
}

/// A condition, keeping its transition time when its status did not change.
fn condition(old: &[Value], type_: &str, status: bool, reason: &str, message: &str) -> Value {
    let status = if status { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == status)
        .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
        .unwrap_or_else(|| {
            jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or_default()
                .to_string()
        });
    json!({"type": type_, "status": status, "lastTransitionTime": since,
           "reason": reason, "message": message})
}

struct Controller {
    client: kube::Client,
    events: Recorder,
    history: HashMap<(String, String), History>,
}

/// What `compute` found: the winning (replicas, metric name), the metric statuses, the error
/// message if some metric was invalid, and how many were.
type Computed = (Option<(i32, String)>, Vec<Value>, Option<String>, usize);

/// What one reconcile decided, before the status is written.
struct Outcome {
    current: i32,
    desired: i32,
    metrics: Vec<Value>,
    conditions: Vec<(&'static str, bool, String, String)>,
    scaled: bool,
}

impl Controller {
    async fn pods_and_metrics(
        &self,
        ns: &str,
        selector: &str,
    ) -> Result<(Vec<Pod>, Vec<DynamicObject>), String> {
        let lp = ListParams::default().labels(selector);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let pods = pods.list(&lp).await.map_err(|e| e.to_string())?.items;
        let pm: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), ns, &pod_metrics_resource());
        let metrics = pm
            .list(&lp)
            .await
            .map_err(|e| format!("unable to get metrics for resource: {e}"))?
            .items;
        Ok((pods, metrics))
    }

    /// Proposals of every metric: (replicas, metric name, statuses), or the error message.
    async fn compute(
        &self,
        hpa: &HorizontalPodAutoscaler,
        ns: &str,
        current: i32,
        selector: &str,
    ) -> Computed {
        let specs = hpa.spec.metrics.clone().unwrap_or_default();
        // autoscaling/v2 defaults an empty list to 80 % CPU.
        let specs = if specs.is_empty() {
            vec![
                serde_json::from_value::<MetricSpec>(json!({"type": "Resource", "resource":
                {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}))
                .unwrap_or_default(),
            ]
        } else {
            specs
        };
        let fetched = self.pods_and_metrics(ns, selector).await;
        let now = jiff::Timestamp::now();
        let (mut best, mut statuses, mut first_err, mut invalid) =
            (None::<(i32, String)>, Vec::new(), None, 0);
        for spec in &specs {
            let result = if matches!(spec.type_.as_str(), "Pods" | "Object" | "External") {
                super::hpa_custom::proposal(&self.client, ns, spec, current, selector).await
            } else {
                resource_target(spec).and_then(|(resource, target)| {
                    let (pods, list) = fetched.as_ref().map_err(Clone::clone)?;
                    if list.is_empty() {
                        return Err("no metrics returned from resource metrics API".into());
                    }
                    let p = resource_replicas(
                        current,
                        target,
                        &resource,
                        pods,
                        &samples(list, &resource),
                        now,
                    )?;
                    let name = match target {
                        Target::Utilization(_) => {
                            format!("{resource} resource utilization (percentage of request)")
                        }
                        Target::AverageValue(_) => format!("{resource} resource"),
                    };
                    let mut cur = json!({"averageValue": milli_quantity(p.average_milli)});
                    if let Some(u) = p.utilization {
                        cur["averageUtilization"] = json!(u);
                    }
                    Ok((
                        p.replicas,
                        name,
                        json!({"type": "Resource",
                    "resource": {"name": resource, "current": cur}}),
                    ))
                })
            };
            match result {
                Ok((replicas, name, status)) => {
                    statuses.push(status);
                    if best.as_ref().is_none_or(|(r, _)| replicas > *r) {
                        best = Some((replicas, name));
                    }
                }
                Err(e) => {
                    invalid += 1;
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        // Never scale down while some metric is unknown (upstream).
        if invalid > 0 && best.as_ref().is_some_and(|(r, _)| *r < current) {
            best = None;
        }
        let err = first_err.map(|e| {
            format!(
                "invalid metrics ({invalid} invalid out of {}), first error is: {e}",
                specs.len()
            )
        });
        (best, statuses, err, invalid)
    }

    async fn reconcile(&mut self, hpa: &HorizontalPodAutoscaler) -> Option<Outcome> {
        let ns = hpa.metadata.namespace.clone()?;
        let name = hpa.metadata.name.clone()?;
        let spec = &hpa.spec;
        let target = &spec.scale_target_ref;
        let api_version = target.api_version.clone().unwrap_or_default();
        let mut conditions = Vec::new();
        let scale = match scale_resource(&api_version, &target.kind) {
            Some(ar) => Api::<DynamicObject>::namespaced_with(self.client.clone(), &ns, &ar)
                .get_scale(&target.name)
                .await
                .map_err(|e| e.to_string()),
            None => Err(format!(
                "the kind {api_version}/{} has no scale subresource here",
                target.kind
            )),
        };
        let scale = match scale {
            Ok(s) => s,
            Err(e) => {
                let msg =
                    format!("the HPA controller was unable to get the target's current scale: {e}");
                self.events.record(hpa, Kind::Warning, "FailedGetScale", e);
                conditions.push(("AbleToScale", false, "FailedGetScale".into(), msg));
                let current = hpa
                    .status
                    .as_ref()
                    .and_then(|s| s.current_replicas)
                    .unwrap_or(0);
                return Some(Outcome {
                    current,
                    desired: current,
                    metrics: Vec::new(),
                    conditions,
                    scaled: false,
                });
            }
        };
        let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let selector = scale
            .status
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        conditions.push((
            "AbleToScale",
            true,
            "SucceededGetScale".into(),
            "the HPA controller was able to get the target's current scale".into(),
        ));
        let (min, max) = (spec.min_replicas.unwrap_or(1), spec.max_replicas);
        let key = (ns.clone(), name.clone());
        let (desired, reason, metrics) = if current == 0 && min != 0 {
            conditions.push((
                "ScalingActive",
                false,
                "ScalingDisabled".into(),
                "scaling is disabled since the replica count of the target is zero".into(),
            ));
            (0, String::new(), Vec::new())
        } else if current > max {
            (
                max,
                "Current number of replicas above Spec.MaxReplicas".to_string(),
                Vec::new(),
            )
        } else if current < min {
            (
                min,
                "Current number of replicas below Spec.MinReplicas".to_string(),
                Vec::new(),
            )
        } else if selector.is_empty() {
            let msg = "the HPA target's scale is missing a selector".to_string();
            self.events
                .record(hpa, Kind::Warning, "SelectorRequired", msg.clone());
            conditions.push(("ScalingActive", false, "InvalidSelector".into(), msg));
            (current, String::new(), Vec::new())
        } else {
            let (best, statuses, err, _) = self.compute(hpa, &ns, current, &selector).await;
            let Some((proposal, metric)) = best else {
                let msg = err.unwrap_or_else(|| "no metrics".into());
                self.events
                    .record(hpa, Kind::Warning, "FailedGetResourceMetric", msg.clone());
                self.events.record(
                    hpa,
                    Kind::Warning,
                    "FailedComputeMetricsReplicas",
                    msg.clone(),
                );
                conditions.push((
                    "ScalingActive",
                    false,
                    "FailedGetResourceMetric".into(),
                    format!("the HPA was unable to compute the replica count: {msg}"),
                ));
                return Some(Outcome {
                    current,
                    desired: current,
                    metrics: statuses,
                    conditions,
                    scaled: false,
                });
            };
            conditions.push((
                "ScalingActive",
                true,
                "ValidMetricFound".into(),
                format!("the HPA was able to successfully calculate a replica count from {metric}"),
            ));
            let n = self.history.entry(key.clone()).or_default().normalize(
                spec.behavior.as_ref(),
                current,
                proposal,
                min,
                max,
                jiff::Timestamp::now(),
            );
            conditions[0] = ("AbleToScale", true, n.able.0.into(), n.able.1.into());
            conditions.push((
                "ScalingLimited",
                n.limited.0,
                n.limited.1.into(),
                n.limited.2.into(),
            ));
            let reason = if n.replicas > current {
                format!("{metric} above target")
            } else {
                "All metrics below target".to_string()
            };
            (n.replicas, reason, statuses)
        };
        let mut scaled = false;
        if desired != current {
            let ar = scale_resource(&api_version, &target.kind)?;
            let api = Api::<DynamicObject>::namespaced_with(self.client.clone(), &ns, &ar);
            let patch = Patch::Merge(json!({"spec": {"replicas": desired}}));
            match api
                .patch_scale(&target.name, &PatchParams::default(), &patch)
                .await
            {
                Ok(_) => {
                    scaled = true;
                    conditions[0] = (
                        "AbleToScale",
                        true,
                        "SucceededRescale".into(),
                        format!(
                            "the HPA controller was able to update the target scale to {desired}"
                        ),
                    );
                    self.events.record(
                        hpa,
                        Kind::Normal,
                        "SuccessfulRescale",
                        format!("New size: {desired}; reason: {reason}"),
                    );
                    self.history.entry(key).or_default().scaled(
                        current,
                        desired,
                        jiff::Timestamp::now(),
                    );
                }
                Err(e) => {
                    self.events.record(
                        hpa,
                        Kind::Warning,
                        "FailedRescale",
                        format!("New size: {desired}; reason: {reason}; error: {e}"),
                    );
                    conditions[0] = (
                        "AbleToScale",
                        false,
                        "FailedUpdateScale".into(),
                        format!("the HPA controller was unable to update the target scale: {e}"),
                    );
                }
            }
        }
        Some(Outcome {
            current,
            desired,
            metrics,
            conditions,
            scaled,
        })
    }

    /// Write `status` if it changed.
    async fn write_status(&self, hpa: &HorizontalPodAutoscaler, o: Outcome) {
        let (Some(ns), Some(name)) = (&hpa.metadata.namespace, &hpa.metadata.name) else {
            return;
        };
        let old = serde_json::to_value(&hpa.status).unwrap_or(Value::Null);
        let old_conditions = old["conditions"].as_array().cloned().unwrap_or_default();
        let mut conditions: Vec<Value> = old_conditions
            .iter()
            .filter(|c| !o.conditions.iter().any(|(t, ..)| c["type"] == *t))
            .cloned()
            .collect();
        for (t, s, r, m) in &o.conditions {
            conditions.push(condition(&old_conditions, t, *s, r, m));
        }
        conditions.sort_by_key(|c| match c["type"].as_str() {
            Some("AbleToScale") => 0,
            Some("ScalingActive") => 1,
            _ => 2,
        });
        let mut status = json!({
            "currentReplicas": o.current,
            "desiredReplicas": o.desired,
            "currentMetrics": o.metrics,
            "conditions": conditions,
        });
        if let Some(g) = hpa.metadata.generation {
            status["observedGeneration"] = json!(g);
        }
        if o.scaled {
            status["lastScaleTime"] = json!(jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or_default()
                .to_string());
        } else if !old["lastScaleTime"].is_null() {
            status["lastScaleTime"] = old["lastScaleTime"].clone();
        }
        let same = [
            "currentReplicas",
            "desiredReplicas",
            "currentMetrics",
            "conditions",
            "observedGeneration",
            "lastScaleTime",
        ]
        .iter()
        .all(|f| old[f] == status[f] || (old[f].is_null() && status[f] == json!([])));
        if same {
            return;
        }
        let api: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), ns);
        let patch = Patch::Merge(json!({"status": status}));
        if let Err(e) = api
            .patch_status(name, &PatchParams::default(), &patch)
            .await
        {
            tracing::debug!(%ns, %name, error = %e, "hpa: cannot write status");
        }
    }
}

/// Reconcile every HPA each `sync_period` until the task is aborted.
pub async fn run(client: kube::Client, cfg: Config) -> Result<(), super::Error> {
    let hpas: Api<HorizontalPodAutoscaler> = Api::all(client.clone());
    let mut c = Controller {
        events: Recorder::new(client.clone(), "horizontal-pod-autoscaler"),
        client,
        history: HashMap::new(),
    };
    let mut tick = tokio::time::interval(cfg.sync_period.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let list = match hpas.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::debug!(error = %e, "hpa: cannot list HorizontalPodAutoscalers");
                continue;
            }
        };
        // Forget the windows of deleted HPAs.
        c.history.retain(|(ns, name), _| {
            list.iter().any(|h| {
                h.metadata.namespace.as_deref() == Some(ns)
                    && h.metadata.name.as_deref() == Some(name)
            })
        });
        for hpa in &list {
            if let Some(o) = c.reconcile(hpa).await {
                c.write_status(hpa, o).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pod_metrics_as_metrics_server_writes_them() {
        assert_eq!(go_duration("10.5s"), Some(Duration::from_millis(10_500)));
        assert_eq!(go_duration("1m0s"), Some(Duration::from_secs(60)));
        assert_eq!(go_duration("10"), None);
        assert_eq!(go_duration("x"), None);
        let pm: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
            "metadata": {"name": "p", "namespace": "ns"},
            "timestamp": "2026-01-01T00:00:00Z", "window": "10s",
            "containers": [
                {"name": "a", "usage": {"cpu": "150000000n", "memory": "1024Ki"}},
                {"name": "b", "usage": {"cpu": "50000000n", "memory": "1024Ki"}}
            ]
        }))
        .unwrap();
        let s = samples(std::slice::from_ref(&pm), "cpu");
        assert_eq!(s["p"].milli, 200);
        assert_eq!(s["p"].window, Duration::from_secs(10));
        assert_eq!(samples(&[pm], "memory")["p"].milli, 2 * 1024 * 1024 * 1000);
        assert_eq!(milli_quantity(250), "250m");
        assert_eq!(milli_quantity(3000), "3");
        let m: MetricSpec = serde_json::from_value(json!({"type": "Pods", "pods": {
            "metric": {"name": "x"}, "target": {"type": "AverageValue", "averageValue": "1"}}}))
        .unwrap();
        assert!(resource_target(&m).is_err());
        let m: MetricSpec = serde_json::from_value(json!({"type": "Resource", "resource": {
            "name": "memory", "target": {"type": "AverageValue", "averageValue": "64Mi"}}}))
        .unwrap();
        assert_eq!(
            resource_target(&m).unwrap(),
            (
                "memory".into(),
                Target::AverageValue(64 * 1024 * 1024 * 1000)
            )
        );
    }
}
