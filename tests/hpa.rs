//! The HorizontalPodAutoscaler end to end on real metrics: a real `rampart server` with its
//! embedded agent runs a Deployment whose pod burns CPU at its 200m limit against a 100m
//! request (≈200 % utilization). `kubectl autoscale --cpu=50% --max=3` must scale it to 3
//! (capped by maxReplicas: `ScalingLimited` `TooManyReplicas`), with `status`,
//! conditions, a `SuccessfulRescale` event and `kubectl get hpa`'s TARGETS column as upstream
//! prints them; raising the target with a zero scale-down stabilization window (`behavior`)
//! must bring it back to 1; an HPA whose target does not exist reports `FailedGetScale`.
//! Metrics come from the apiserver's `metrics.k8s.io` (scraped from the kubelet), the HPA
//! controller syncs every 2 s (`--horizontal-pod-autoscaler-sync-period`).
//! Root only (skipped with a reason otherwise; `RAMPART_REQUIRE_PRIVILEGED=1` fails instead).

mod harness;
mod kubelet_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use harness::{eventually, Server};
use kubelet_support::*;
use serde_json::Value;

fn start() -> (Server, tempfile::TempDir, Cleanup) {
    let logs_dir = tempfile::tempdir().unwrap();
    let name = format!("hpa-{}", std::process::id());
    let cleanup_root = format!("rampart-test-{}", std::process::id());
    let server = Server::start_with_agent(&[
        "--node-name",
        &name,
        "--pod-log-dir",
        logs_dir.path().to_str().unwrap(),
        "--kubelet-cgroup-root",
        &cleanup_root,
        "--kubelet-port",
        "0",
        "--horizontal-pod-autoscaler-sync-period",
        "2s",
    ]);
    let cleanup = Cleanup {
        cgroup_root: cleanup_root,
        data_dir: server.data_dir().to_path_buf(),
    };
    let tar = write(
        logs_dir.path().parent().unwrap_or(Path::new("/tmp")),
        &format!("busybox-hpa-{}.tar", std::process::id()),
        &docker_archive("busybox:test", &[busybox_layer()]),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["images", "import", "--data-dir"])
        .arg(server.data_dir().join("agent"))
        .arg(&tar)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&tar);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (server, logs_dir, cleanup)
}

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: burn, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: hpa-burn}}
  template:
    metadata: {labels: {app: hpa-burn}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 1
      containers:
      - name: burn
        image: busybox:test
        imagePullPolicy: Never
        command: ["sh", "-c", "while :; do :; done"]
        resources: {requests: {cpu: 100m}, limits: {cpu: 200m}}
"#;

fn replicas(s: &Server) -> i64 {
    s.json(&["get", "deployment", "burn"])["spec"]["replicas"]
        .as_i64()
        .unwrap_or(-1)
}

fn condition<'a>(hpa: &'a Value, type_: &str) -> &'a Value {
    hpa["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

#[test]
fn hpa_scales_a_burning_deployment_on_real_metrics() {
    require_privileged!();
    let (s, _logs, _cleanup) = start();
    let applied = eventually(Duration::from_secs(60), || {
        s.kubectl_in(&["apply", "-f", "-"], Some(DEPLOYMENT))
            .status
            .success()
    });
    assert!(applied, "the deployment was never accepted");
    s.ok(&[
        "autoscale",
        "deployment",
        "burn",
        "--cpu=50%",
        "--min=1",
        "--max=3",
    ]);
    let hpa = s.json(&["get", "hpa", "burn"]);
    assert_eq!(hpa["apiVersion"], "autoscaling/v2", "{hpa:#}");

    // ≈200 % of the request against 50 %: ceil(4 × 1) = 4, capped at 3.
    let scaled = eventually(Duration::from_secs(90), || replicas(&s) == 3);
    let hpa = s.json(&["get", "hpa", "burn"]);
    assert!(scaled, "never scaled to 3: {hpa:#}");
    let hpa_done = eventually(Duration::from_secs(20), || {
        let h = s.json(&["get", "hpa", "burn"]);
        // currentReplicas is the count before a rescale (upstream): 3 from the next sync on.
        h["status"]["currentReplicas"] == 3
            && h["status"]["desiredReplicas"] == 3
            && condition(&h, "ScalingLimited")["status"] == "True"
    });
    let hpa = s.json(&["get", "hpa", "burn"]);
    assert!(hpa_done, "{hpa:#}");
    let st = &hpa["status"];
    assert!(st["lastScaleTime"].is_string(), "{hpa:#}");
    assert_eq!(condition(&hpa, "AbleToScale")["status"], "True", "{hpa:#}");
    assert_eq!(
        condition(&hpa, "ScalingActive")["reason"],
        "ValidMetricFound",
        "{hpa:#}"
    );
    assert_eq!(
        condition(&hpa, "ScalingLimited")["reason"],
        "TooManyReplicas",
        "{hpa:#}"
    );
    let cur = &st["currentMetrics"][0]["resource"];
    assert_eq!(cur["name"], "cpu", "{hpa:#}");
    let util = cur["current"]["averageUtilization"].as_i64().unwrap_or(0);
    assert!((100..=260).contains(&util), "utilization {util}: {hpa:#}");
    assert!(cur["current"]["averageValue"].is_string(), "{hpa:#}");
    // kubectl get hpa: TARGETS as upstream prints it.
    let out = s.ok(&["get", "hpa", "burn", "--no-headers"]);
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(f[1], "Deployment/burn", "{out}");
    assert_eq!(f[2], "cpu:", "{out}");
    assert!(
        f[3].ends_with("%/50%") && !f[3].starts_with("<unknown>"),
        "{out}"
    );
    assert_eq!(&f[4..7], ["1", "3", "3"], "{out}");
    let events = s.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=HorizontalPodAutoscaler,involvedObject.name=burn",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains("SuccessfulRescale: New size: 3; reason: cpu resource utilization (percentage of request) above target"),
        "{events}"
    );

    // A target ten times the usage, no scale-down window: back to minReplicas.
    s.ok(&[
        "patch",
        "hpa",
        "burn",
        "--type=merge",
        "-p",
        r#"{"spec":{"metrics":[{"type":"Resource","resource":{"name":"cpu","target":{"type":"Utilization","averageUtilization":1000}}}],
            "behavior":{"scaleDown":{"stabilizationWindowSeconds":0}}}}"#,
    ]);
    let down = eventually(Duration::from_secs(60), || replicas(&s) == 1);
    let hpa = s.json(&["get", "hpa", "burn"]);
    assert!(down, "never scaled back to 1: {hpa:#}");

    // A target that does not exist.
    s.ok_in(
        &["apply", "-f", "-"],
        r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: ghost, namespace: default}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: ghost}
  maxReplicas: 2
"#,
    );
    let failed = eventually(Duration::from_secs(20), || {
        let h = s.json(&["get", "hpa", "ghost"]);
        condition(&h, "AbleToScale")["reason"] == "FailedGetScale"
            && condition(&h, "AbleToScale")["status"] == "False"
    });
    let hpa = s.json(&["get", "hpa", "ghost"]);
    assert!(failed, "{hpa:#}");
}
