//! The autoscaling `HorizontalPodAutoscaler` printer.
//!
//! Copies upstream `printHorizontalPodAutoscaler` and `formatHPAMetrics`:
//! TARGETS shows at most two metrics as `current/target` (`cpu: 45%/80%`,
//! `<unknown>/500m (avg)`, ...) followed by `+ N more...`.
//!
//! Invariants: both stored shapes print the same. autoscaling/v2 objects
//! are read directly; autoscaling/v1 objects (`targetCPUUtilizationPercentage`)
//! are read as the v1→internal conversion sees them, a single CPU
//! utilisation metric. An unset `minReplicas` prints the API default `1`.
//! A status entry is used only when it sits at the same index as its spec
//! and carries the same source, as upstream checks.

use jiff::Timestamp;
use serde_json::{json, Value};

use super::column::{self, string, ColumnDefinition};
use super::object::{as_int, at, int_at, items, name, opt_int, str_at};
use super::{age, Printer};

pub(super) fn printer(kind: &str) -> Option<Printer> {
    (kind == "HorizontalPodAutoscaler").then_some(Printer { columns, cells })
}

fn columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string("Reference", "part of HorizontalPodAutoscalerSpec, see comments for the field"),
        string("Targets", "the metrics used to calculate the desired replica count"),
        string("MinPods", "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.  It defaults to 1 pod.  minReplicas is allowed to be 0 if the alpha feature gate HPAScaleToZero is enabled and at least one Object or External metric is configured.  Scaling is active as long as at least one metric value is available."),
        string("MaxPods", "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up. It cannot be less that minReplicas."),
        string("Replicas", "currentReplicas is current number of replicas of pods managed by this autoscaler."),
        column::age(),
    ]
}

/// `(*Quantity).String()`: a missing quantity pointer prints `<nil>`.
fn quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "<nil>".to_string(),
    }
}

/// The spec metrics and current metrics, in the internal (v2) shape.
fn metrics(hpa: &Value) -> (Vec<Value>, Vec<Value>) {
    if at(hpa, &["spec", "metrics"]).is_some() {
        return (
            items(hpa, &["spec", "metrics"]).to_vec(),
            items(hpa, &["status", "currentMetrics"]).to_vec(),
        );
    }
    // autoscaling/v1: one CPU utilisation target.
    let Some(target) = opt_int(hpa, &["spec", "targetCPUUtilizationPercentage"]) else {
        return (Vec::new(), Vec::new());
    };
    let spec = vec![json!({"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": target}}})];
    let status = match opt_int(hpa, &["status", "currentCPUUtilizationPercentage"]) {
        Some(current) => vec![json!({"type": "Resource", "resource": {"name": "cpu",
            "current": {"averageUtilization": current}}})],
        None => Vec::new(),
    };
    (spec, status)
}

/// The status block for metric `i` of `source`, if upstream would use it.
fn status_for<'a>(statuses: &'a [Value], i: usize, source: &str) -> Option<&'a Value> {
    statuses
        .get(i)
        .and_then(|s| s.get(source))
        .filter(|s| s.is_object())
}

fn percent(v: Option<i64>) -> Option<String> {
    v.map(|p| format!("{p}%"))
}

/// One metric as `formatHPAMetrics` prints it.
fn format_metric(spec: &Value, statuses: &[Value], i: usize) -> String {
    let unknown = || "<unknown>".to_string();
    match str_at(spec, &["type"]) {
        source_type @ ("External" | "Object") => {
            let source = if source_type == "External" {
                "external"
            } else {
                "object"
            };
            let target = at(spec, &[source, "target"]);
            let status = status_for(statuses, i, source);
            if let Some(avg) = target
                .and_then(|t| t.get("averageValue"))
                .filter(|v| !v.is_null())
            {
                let current = status
                    .and_then(|s| at(s, &["current", "averageValue"]))
                    .filter(|v| !v.is_null())
                    .map_or_else(unknown, |v| quantity(Some(v)));
                format!("{current}/{} (avg)", quantity(Some(avg)))
            } else {
                let current =
                    status.map_or_else(unknown, |s| quantity(at(s, &["current", "value"])));
                format!(
                    "{current}/{}",
                    quantity(target.and_then(|t| t.get("value")))
                )
            }
        }
        "Pods" => {
            let current = status_for(statuses, i, "pods")
                .map_or_else(unknown, |s| quantity(at(s, &["current", "averageValue"])));
            format!(
                "{current}/{}",
                quantity(at(spec, &["pods", "target", "averageValue"]))
            )
        }
        source_type @ ("Resource" | "ContainerResource") => {
            let source = if source_type == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let resource = str_at(spec, &[source, "name"]);
            let target = at(spec, &[source, "target"]);
            let status = status_for(statuses, i, source);
            if let Some(avg) = target
                .and_then(|t| t.get("averageValue"))
                .filter(|v| !v.is_null())
            {
                let current =
                    status.map_or_else(unknown, |s| quantity(at(s, &["current", "averageValue"])));
                format!("{resource}: {current}/{}", quantity(Some(avg)))
            } else {
                let current = status
                    .and_then(|s| {
                        percent(at(s, &["current", "averageUtilization"]).and_then(as_int))
                    })
                    .unwrap_or_else(unknown);
                let target = percent(
                    target
                        .and_then(|t| t.get("averageUtilization"))
                        .and_then(as_int),
                )
                .unwrap_or_else(|| "<auto>".to_string());
                format!("{resource}: {current}/{target}")
            }
        }
        _ => "<unknown type>".to_string(),
    }
}

/// `formatHPAMetrics`: first two metrics, then `+ N more...`.
fn format_metrics(hpa: &Value) -> String {
    let (specs, statuses) = metrics(hpa);
    if specs.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 2;
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| format_metric(spec, &statuses, i))
        .collect();
    let shown = list[..list.len().min(MAX)].join(", ");
    if list.len() > MAX {
        format!("{shown} + {} more...", list.len() - MAX)
    } else {
        shown
    }
}

fn cells(hpa: &Value, now: Timestamp) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        str_at(hpa, &["spec", "scaleTargetRef", "kind"]),
        str_at(hpa, &["spec", "scaleTargetRef", "name"])
    );
    let min_pods = opt_int(hpa, &["spec", "minReplicas"]).unwrap_or(1);
    vec![
        name(hpa).into(),
        reference.into(),
        format_metrics(hpa).into(),
        min_pods.to_string().into(),
        int_at(hpa, &["spec", "maxReplicas"]).into(),
        int_at(hpa, &["status", "currentReplicas"]).into(),
        age::of_object(hpa, now).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn v2_hpa_with_mixed_metrics() {
        let hpa = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 2, "maxReplicas": 10,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80}}},
                    {"type": "Pods", "pods": {"metric": {"name": "rps"},
                        "target": {"type": "AverageValue", "averageValue": "1k"}}},
                    {"type": "External", "external": {"metric": {"name": "queue"},
                        "target": {"type": "AverageValue", "averageValue": "30"}}}
                ]
            },
            "status": {"currentReplicas": 3, "currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu",
                    "current": {"averageUtilization": 45, "averageValue": "120m"}}}
            ]}
        });
        assert_eq!(
            cells(&hpa, now()),
            vec![
                json!("web"),
                json!("Deployment/web"),
                json!("cpu: 45%/80%, <unknown>/1k + 1 more..."),
                json!("2"),
                json!(10),
                json!(3),
                json!("60m"),
            ]
        );
    }

    #[test]
    fn v1_hpa_and_edge_metrics() {
        let v1 = json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "api"},
            "maxReplicas": 5, "targetCPUUtilizationPercentage": 70},
            "status": {"currentCPUUtilizationPercentage": 12, "currentReplicas": 1}});
        let c = cells(&v1, now());
        assert_eq!(c[2], json!("cpu: 12%/70%"));
        assert_eq!(c[3], json!("1"));
        assert_eq!(cells(&json!({}), now())[2], json!("<none>"));
        let odd = json!({"spec": {"metrics": [
            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "500Mi"}}},
            {"type": "Object", "object": {"target": {"type": "Value", "value": "10"}}}]},
            "status": {"currentMetrics": [
                {"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "200Mi"}}},
                {"type": "Object", "object": {"current": {"value": "7"}}}]}});
        assert_eq!(cells(&odd, now())[2], json!("memory: 200Mi/500Mi, 7/10"));
        let unknown = json!({"spec": {"metrics": [{"type": "Weird"},
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}}]}});
        assert_eq!(
            cells(&unknown, now())[2],
            json!("<unknown type>, cpu: <unknown>/<auto>")
        );
    }
}
