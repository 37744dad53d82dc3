//! `autoscaling/v1` ↔ `autoscaling/v2` HorizontalPodAutoscaler, upstream's
//! `pkg/apis/autoscaling/v1/conversion.go`: v1 says one thing, a CPU utilization target
//! (`spec.targetCPUUtilizationPercentage`, `status.currentCPUUtilizationPercentage`); it is
//! the `Resource` cpu metric with an `averageUtilization` target. What v1 cannot say travels
//! in annotations as upstream writes them: `autoscaling.alpha.kubernetes.io/metrics` (the
//! other metrics, in v1's `MetricSpec` shape: `targetAverageValue`, `metricName`, ...),
//! `.../current-metrics` (every current metric, v1's `MetricStatus` shape), `.../conditions`
//! and `.../behavior`. The stored v2 object never carries those annotations; a v1 object
//! with no metric at all gets upstream's default, cpu at 80 %.

use serde_json::{json, Map, Value};

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
const DEFAULT_CPU_UTILIZATION: i64 = 80;

/// Copy the non-null members of `pairs` (name, value) into a new JSON object.
fn object(pairs: &[(&str, Option<&Value>)]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        if let Some(v) = v.filter(|v| !v.is_null()) {
            m.insert((*k).to_string(), v.clone());
        }
    }
    Value::Object(m)
}

fn is_cpu_utilization(metric: &Value) -> bool {
    metric["type"] == "Resource"
        && metric["resource"]["name"] == "cpu"
        && metric["resource"]["target"]["averageUtilization"].is_i64()
}

/// v2 `MetricTarget` from v1's flattened fields.
fn target(utilization: Option<&Value>, average: Option<&Value>, value: Option<&Value>) -> Value {
    let kind = if utilization.is_some_and(|v| !v.is_null()) {
        "Utilization"
    } else if average.is_some_and(|v| !v.is_null()) {
        "AverageValue"
    } else {
        "Value"
    };
    let mut t = object(&[
        ("averageUtilization", utilization),
        ("averageValue", average),
        ("value", value),
    ]);
    t["type"] = kind.into();
    t
}

/// A v2 `MetricSpec` (or `MetricStatus` when `status`) in v1's annotation shape.
fn metric_to_v1(m: &Value, status: bool) -> Value {
    let ty = m["type"].as_str().unwrap_or_default();
    let (t, prefix) = if status {
        (&m[field(ty)]["current"], "current")
    } else {
        (&m[field(ty)]["target"], "target")
    };
    let src = &m[field(ty)];
    let inner = match ty {
        "Resource" | "ContainerResource" => object(&[
            ("name", src.get("name")),
            ("container", src.get("container")),
            (
                if status {
                    "currentAverageUtilization"
                } else {
                    "targetAverageUtilization"
                },
                t.get("averageUtilization"),
            ),
            (
                if status {
                    "currentAverageValue"
                } else {
                    "targetAverageValue"
                },
                t.get("averageValue"),
            ),
        ]),
        "Pods" => object(&[
            ("metricName", src["metric"].get("name")),
            ("selector", src["metric"].get("selector")),
            (&format!("{prefix}AverageValue"), t.get("averageValue")),
        ]),
        "Object" => object(&[
            ("target", src.get("describedObject")),
            ("metricName", src["metric"].get("name")),
            ("selector", src["metric"].get("selector")),
            (&format!("{prefix}Value"), t.get("value")),
            ("averageValue", t.get("averageValue")),
        ]),
        "External" => object(&[
            ("metricName", src["metric"].get("name")),
            ("metricSelector", src["metric"].get("selector")),
            (&format!("{prefix}Value"), t.get("value")),
            (&format!("{prefix}AverageValue"), t.get("averageValue")),
        ]),
        _ => return m.clone(),
    };
    json!({"type": ty, field(ty): inner})
}

/// A v1 annotation metric back in v2's shape.
fn metric_to_v2(m: &Value, status: bool) -> Value {
    let ty = m["type"].as_str().unwrap_or_default();
    let src = &m[field(ty)];
    let p = if status { "current" } else { "target" };
    let value_of = |u: &str, a: &str, v: &str| {
        if status {
            object(&[
                ("averageUtilization", src.get(u)),
                ("averageValue", src.get(a)),
                ("value", src.get(v)),
            ])
        } else {
            target(src.get(u), src.get(a), src.get(v))
        }
    };
    let metric = object(&[
        ("name", src.get("metricName")),
        ("selector", src.get("selector")),
    ]);
    let inner = match ty {
        "Resource" | "ContainerResource" => {
            let mut o = object(&[
                ("name", src.get("name")),
                ("container", src.get("container")),
            ]);
            o[p] = value_of(
                &format!("{p}AverageUtilization"),
                &format!("{p}AverageValue"),
                "-",
            );
            o
        }
        "Pods" => json!({"metric": metric, p: value_of("-", &format!("{p}AverageValue"), "-")}),
        "Object" => json!({
            "describedObject": src.get("target").cloned().unwrap_or(Value::Null),
            "metric": metric,
            p: value_of("-", "averageValue", &format!("{p}Value")),
        }),
        "External" => json!({
            "metric": object(&[("name", src.get("metricName")), ("selector", src.get("metricSelector"))]),
            p: value_of("-", &format!("{p}AverageValue"), &format!("{p}Value")),
        }),
        _ => return m.clone(),
    };
    json!({"type": ty, field(ty): inner})
}

/// The member of a metric holding its source: `Resource` → `resource`, ...
fn field(ty: &str) -> &'static str {
    match ty {
        "Resource" => "resource",
        "ContainerResource" => "containerResource",
        "Pods" => "pods",
        "Object" => "object",
        "External" => "external",
        _ => "-",
    }
}

fn annotations(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let meta = obj.get_mut("metadata")?.as_object_mut()?;
    meta.entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
}

/// A stored v2 HPA as `autoscaling/v1` serves it.
pub fn v2_to_v1(obj: Value) -> Value {
    let Value::Object(mut src) = obj else {
        return obj;
    };
    let spec = src.remove("spec").unwrap_or(Value::Null);
    let status = src.remove("status").unwrap_or(Value::Null);
    let mut out = Value::Object(src);
    out["apiVersion"] = "autoscaling/v1".into();
    out["kind"] = "HorizontalPodAutoscaler".into();
    let empty = Vec::new();
    let metrics = spec["metrics"].as_array().unwrap_or(&empty);
    let cpu = metrics.iter().find(|m| is_cpu_utilization(m));
    out["spec"] = object(&[
        ("scaleTargetRef", spec.get("scaleTargetRef")),
        ("minReplicas", spec.get("minReplicas")),
        ("maxReplicas", spec.get("maxReplicas")),
        (
            "targetCPUUtilizationPercentage",
            cpu.map(|m| &m["resource"]["target"]["averageUtilization"]),
        ),
    ]);
    let other: Vec<Value> = metrics
        .iter()
        .filter(|m| !is_cpu_utilization(m))
        .map(|m| metric_to_v1(m, false))
        .collect();
    let current = status["currentMetrics"].as_array().unwrap_or(&empty);
    let current_cpu = current.iter().find(|m| {
        m["type"] == "Resource"
            && m["resource"]["name"] == "cpu"
            && m["resource"]["current"]["averageUtilization"].is_i64()
    });
    if status.is_object() {
        out["status"] = object(&[
            ("observedGeneration", status.get("observedGeneration")),
            ("lastScaleTime", status.get("lastScaleTime")),
            ("currentReplicas", status.get("currentReplicas")),
            ("desiredReplicas", status.get("desiredReplicas")),
            (
                "currentCPUUtilizationPercentage",
                current_cpu.map(|m| &m["resource"]["current"]["averageUtilization"]),
            ),
        ]);
    }
    let mut notes: Vec<(&str, String)> = Vec::new();
    if !other.is_empty() {
        notes.push((METRICS, Value::Array(other).to_string()));
    }
    if !current.is_empty() {
        let v1: Vec<Value> = current.iter().map(|m| metric_to_v1(m, true)).collect();
        notes.push((CURRENT_METRICS, Value::Array(v1).to_string()));
    }
    if let Some(c) = status["conditions"].as_array().filter(|c| !c.is_empty()) {
        notes.push((CONDITIONS, Value::Array(c.clone()).to_string()));
    }
    if let Some(b) = spec.get("behavior").filter(|b| !b.is_null()) {
        notes.push((BEHAVIOR, b.to_string()));
    }
    if !notes.is_empty() {
        if let Some(a) = annotations(&mut out) {
            for (k, v) in notes {
                a.insert(k.into(), v.into());
            }
        }
    }
    out
}

/// Take annotation `key` out of `obj` and parse it; an unparsable one stays where it was.
fn take_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    let a = obj
        .get_mut("metadata")?
        .get_mut("annotations")?
        .as_object_mut()?;
    let parsed: Value = serde_json::from_str(a.get(key)?.as_str()?).ok()?;
    a.remove(key);
    if a.is_empty() {
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("annotations");
        }
    }
    Some(parsed)
}

/// An `autoscaling/v1` HPA as it is stored (v2).
pub fn v1_to_v2(obj: Value) -> Value {
    if !obj.is_object() {
        return obj;
    }
    let mut obj = obj;
    let other = take_annotation(&mut obj, METRICS);
    let current = take_annotation(&mut obj, CURRENT_METRICS);
    let conditions = take_annotation(&mut obj, CONDITIONS);
    let behavior = take_annotation(&mut obj, BEHAVIOR);
    let Value::Object(mut src) = obj else {
        return Value::Null;
    };
    let spec = src.remove("spec").unwrap_or(Value::Null);
    let status = src.remove("status").unwrap_or(Value::Null);
    let mut out = Value::Object(src);
    out["apiVersion"] = "autoscaling/v2".into();
    out["kind"] = "HorizontalPodAutoscaler".into();
    let cpu = |u: &Value| {
        json!({"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": u}}})
    };
    let mut metrics = Vec::new();
    if let Some(u) = spec
        .get("targetCPUUtilizationPercentage")
        .filter(|v| !v.is_null())
    {
        metrics.push(cpu(u));
    }
    if let Some(Value::Array(other)) = &other {
        metrics.extend(other.iter().map(|m| metric_to_v2(m, false)));
    }
    if metrics.is_empty() {
        metrics.push(cpu(&json!(DEFAULT_CPU_UTILIZATION)));
    }
    let mut new_spec = object(&[
        ("scaleTargetRef", spec.get("scaleTargetRef")),
        ("minReplicas", spec.get("minReplicas")),
        ("maxReplicas", spec.get("maxReplicas")),
        ("behavior", behavior.as_ref()),
    ]);
    new_spec["metrics"] = Value::Array(metrics);
    out["spec"] = new_spec;
    if status.is_object() {
        let mut st = object(&[
            ("observedGeneration", status.get("observedGeneration")),
            ("lastScaleTime", status.get("lastScaleTime")),
            ("currentReplicas", status.get("currentReplicas")),
            ("desiredReplicas", status.get("desiredReplicas")),
            ("conditions", conditions.as_ref()),
        ]);
        // The annotation has more than the percentage (raw values), so it wins.
        let current = match current {
            Some(Value::Array(c)) => c.iter().map(|m| metric_to_v2(m, true)).collect(),
            _ => match status.get("currentCPUUtilizationPercentage") {
                Some(u) if !u.is_null() => vec![json!({"type": "Resource", "resource": {
                    "name": "cpu", "current": {"averageUtilization": u}}})],
                _ => Vec::new(),
            },
        };
        if !current.is_empty() {
            st["currentMetrics"] = Value::Array(current);
        }
        out["status"] = st;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2() -> Value {
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "h", "namespace": "d"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 10,
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}},
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
                    {"type": "Object", "object": {"describedObject": {"apiVersion": "v1", "kind": "Service", "name": "s"},
                        "metric": {"name": "rps", "selector": {"matchLabels": {"a": "b"}}}, "target": {"type": "Value", "value": "100"}}},
                    {"type": "External", "external": {"metric": {"name": "queue"}, "target": {"type": "AverageValue", "averageValue": "30"}}}]},
            "status": {"currentReplicas": 2, "desiredReplicas": 3,
                "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 40, "averageValue": "200m"}}},
                    {"type": "Pods", "pods": {"metric": {"name": "qps"}, "current": {"averageValue": "7"}}}],
                "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"}]}})
    }

    #[test]
    fn v2_to_v1_keeps_everything_in_annotations() {
        let v1 = v2_to_v1(v2());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 40);
        let other: Value =
            serde_json::from_str(v1["metadata"]["annotations"][METRICS].as_str().unwrap()).unwrap();
        assert_eq!(other[0]["pods"]["metricName"], "qps");
        assert_eq!(other[0]["pods"]["targetAverageValue"], "10");
        assert_eq!(other[1]["object"]["targetValue"], "100");
        assert_eq!(other[1]["object"]["target"]["kind"], "Service");
        assert_eq!(other[2]["external"]["targetAverageValue"], "30");
        // And back: the stored object again, without the annotations.
        assert_eq!(v1_to_v2(v1), v2());
    }

    #[test]
    fn v1_cpu_only_and_default() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "h"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "w"},
            "maxReplicas": 3, "targetCPUUtilizationPercentage": 70}});
        let s = v1_to_v2(v1.clone());
        assert_eq!(
            s["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            70
        );
        assert_eq!(v2_to_v1(s), v1);
        let mut bare = v1;
        bare["spec"]
            .as_object_mut()
            .unwrap()
            .remove("targetCPUUtilizationPercentage");
        let s = v1_to_v2(bare);
        assert_eq!(
            s["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
    }

    #[test]
    fn odd_shapes_do_not_panic() {
        for v in [
            json!(null),
            json!([]),
            json!({"spec": 5, "status": "x", "metadata": {"annotations": {METRICS: "not json", CURRENT_METRICS: "[1,{}]"}}}),
            json!({"spec": {"metrics": [1, {"type": "Pods"}, {"type": "Nope"}]}, "status": {"currentMetrics": "x"}}),
        ] {
            let _ = v1_to_v2(v2_to_v1(v.clone()));
            let _ = v2_to_v1(v1_to_v2(v));
        }
    }
}
