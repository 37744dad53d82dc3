//! autoscaling/v1 HorizontalPodAutoscalers, served as a view of the stored autoscaling/v2
//! object as upstream does (`pkg/apis/autoscaling/v1/conversion.go`): discovery lists both
//! versions (v2 preferred); a v1 `targetCPUUtilizationPercentage` is a v2 `Resource` cpu
//! `Utilization` metric and back; what v1 cannot say (other metrics, behavior, conditions,
//! current metrics) travels in the `autoscaling.alpha.kubernetes.io/*` annotations, so a
//! write through v1 keeps it; the controller's v2 status shows through v1; `kubectl get
//! hpa.v1.autoscaling` prints a table. No metrics needed: the targets do not exist, so the
//! controller reports `FailedGetScale`, which is status enough to convert.

mod harness;

use std::time::Duration;

use harness::{eventually, Server};
use serde_json::Value;

const V1: &str = r#"apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata: {name: old, namespace: default}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: missing-a}
  minReplicas: 2
  maxReplicas: 5
  targetCPUUtilizationPercentage: 60
"#;

const V2: &str = r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: new, namespace: default}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: missing-b}
  maxReplicas: 4
  behavior:
    scaleDown: {stabilizationWindowSeconds: 30}
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
  - type: Pods
    pods:
      metric: {name: requests_per_second}
      target: {type: AverageValue, averageValue: "10"}
"#;

fn annotation(obj: &Value, key: &str) -> Value {
    obj["metadata"]["annotations"][key]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}

#[test]
fn autoscaling_v1_is_a_view_of_v2() {
    let s = Server::start_with(&["--horizontal-pod-autoscaler-sync-period", "1s"]);
    s.settle();
    let versions = s.ok(&["api-versions"]);
    assert!(
        versions.contains("autoscaling/v1") && versions.contains("autoscaling/v2"),
        "{versions}"
    );
    let group: Value =
        serde_json::from_str(&s.ok(&["get", "--raw", "/apis/autoscaling"])).unwrap_or_default();
    assert_eq!(group["preferredVersion"]["version"], "v2", "{group:#}");

    // v1 → v2: the CPU target becomes a Resource metric.
    s.ok_in(&["apply", "-f", "-"], V1);
    let v2 = s.json(&["get", "hpa.v2.autoscaling", "old", "-o", "json"]);
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    let m = &v2["spec"]["metrics"][0];
    assert_eq!(m["type"], "Resource", "{v2:#}");
    assert_eq!(m["resource"]["name"], "cpu", "{v2:#}");
    assert_eq!(m["resource"]["target"]["type"], "Utilization", "{v2:#}");
    assert_eq!(m["resource"]["target"]["averageUtilization"], 60, "{v2:#}");
    assert_eq!(v2["spec"]["minReplicas"], 2, "{v2:#}");
    let v1 = s.json(&["get", "hpa.v1.autoscaling", "old", "-o", "json"]);
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60, "{v1:#}");
    assert!(v1["spec"].get("metrics").is_none(), "{v1:#}");

    // v2 → v1: CPU as the percentage, the rest in upstream's annotations.
    s.ok_in(&["apply", "-f", "-"], V2);
    let v1 = s.json(&["get", "hpa.v1.autoscaling", "new", "-o", "json"]);
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50, "{v1:#}");
    let other = annotation(&v1, "autoscaling.alpha.kubernetes.io/metrics");
    assert_eq!(other[0]["type"], "Pods", "{v1:#}");
    assert_eq!(
        other[0]["pods"]["metricName"], "requests_per_second",
        "{v1:#}"
    );
    assert_eq!(other[0]["pods"]["targetAverageValue"], "10", "{v1:#}");
    let behavior = annotation(&v1, "autoscaling.alpha.kubernetes.io/behavior");
    assert_eq!(
        behavior["scaleDown"]["stabilizationWindowSeconds"], 30,
        "{v1:#}"
    );

    // A write through v1 keeps what only v2 can say.
    s.ok(&[
        "patch",
        "hpa.v1.autoscaling",
        "new",
        "--type=merge",
        "-p",
        r#"{"spec":{"maxReplicas":7,"targetCPUUtilizationPercentage":70}}"#,
    ]);
    let v2 = s.json(&["get", "hpa.v2.autoscaling", "new", "-o", "json"]);
    assert_eq!(v2["spec"]["maxReplicas"], 7, "{v2:#}");
    let metrics = v2["spec"]["metrics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(metrics.len(), 2, "{v2:#}");
    assert_eq!(
        metrics[0]["resource"]["target"]["averageUtilization"], 70,
        "{v2:#}"
    );
    assert_eq!(
        metrics[1]["pods"]["metric"]["name"], "requests_per_second",
        "{v2:#}"
    );
    assert_eq!(
        v2["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 30,
        "{v2:#}"
    );
    assert!(
        v2["metadata"]["annotations"].is_null()
            || v2["metadata"]["annotations"]
                .as_object()
                .is_some_and(|a| !a.keys().any(|k| k.starts_with("autoscaling.alpha"))),
        "round-trip annotations stored: {v2:#}"
    );

    // The controller's status (v2 conditions) shows through v1's conditions annotation.
    let reported = eventually(Duration::from_secs(30), || {
        let v1 = s.json(&["get", "hpa.v1.autoscaling", "old", "-o", "json"]);
        annotation(&v1, "autoscaling.alpha.kubernetes.io/conditions")
            .as_array()
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "AbleToScale" && c["reason"] == "FailedGetScale")
            })
    });
    let v1 = s.json(&["get", "hpa.v1.autoscaling", "old", "-o", "json"]);
    assert!(reported, "{v1:#}");

    // Tables through both versions.
    let table = s.ok(&["get", "hpa.v1.autoscaling"]);
    assert!(
        table.contains("old") && table.contains("new") && table.contains("REFERENCE"),
        "{table}"
    );
    assert!(s.ok(&["get", "hpa"]).contains("Deployment/missing-b"));

    // Deleting through v1 deletes the one object.
    s.ok(&["delete", "hpa.v1.autoscaling", "new"]);
    s.fails(&["get", "hpa.v2.autoscaling", "new"]);
}
