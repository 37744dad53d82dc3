//! The StatefulSet controller end to end: OrderedReady creates `<set>-0`, `-1`, `-2` one at a
//! time (each only once the previous is Running and Ready) and scales down from the highest
//! ordinal; Parallel creates them all at once; claims from volumeClaimTemplates exist per
//! ordinal; a rolling update with a partition only replaces the ordinals at or above it.
//!
//! No kubelet runs: the test marks pods Running and Ready through the `status` subresource.

mod harness;

use std::time::Duration;

use harness::{eventually, Raw, Server};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn pods(s: &Server, app: &str) -> Vec<Value> {
    let mut v: Vec<Value> = s.json(&["get", "pods", "-l", &format!("app={app}")])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    v.sort_by_key(|p| {
        p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    v
}

fn names(s: &Server, app: &str) -> Vec<String> {
    pods(s, app)
        .iter()
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn ready(s: &Server, pod: &str) {
    let body = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    .to_string();
    let path = format!("/api/v1/namespaces/default/pods/{pod}/status");
    let r = s.raw(Raw::send(
        "PATCH",
        &path,
        "application/merge-patch+json",
        body.as_bytes(),
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

fn sts(name: &str, policy: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: {name}}}\nspec:\n  serviceName: {name}\n  replicas: {replicas}\n  podManagementPolicy: {policy}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: c, image: busybox:1}}]}}\n  volumeClaimTemplates:\n  - metadata: {{name: data}}\n    spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
    )
}

/// Barrier: the controller has processed the set's latest state (status written with the
/// current pods), so a pod that is absent now would have been created already.
fn observed(s: &Server, name: &str, replicas: usize) -> bool {
    let st = s.json(&["get", "sts", name]);
    st["status"]["observedGeneration"] == st["metadata"]["generation"]
        && st["status"]["replicas"] == replicas
}

#[test]
fn ordered_ready_scales_in_order() {
    let s = Server::start();
    s.settle();
    s.ok_in(&["apply", "-f", "-"], &sts("web", "OrderedReady", 3));
    for n in 0..3 {
        let want: Vec<String> = (0..=n).map(|i| format!("web-{i}")).collect();
        assert!(
            eventually(WAIT, || names(&s, "web") == want),
            "{:?}",
            names(&s, "web")
        );
        // Not ready yet: the next ordinal must not appear.
        assert!(eventually(WAIT, || observed(&s, "web", n + 1)));
        assert_eq!(names(&s, "web"), want, "created out of order");
        let all = pods(&s, "web");
        let p = &all[n];
        assert_eq!(p["spec"]["hostname"], format!("web-{n}"));
        assert_eq!(p["spec"]["subdomain"], "web");
        ready(&s, &format!("web-{n}"));
    }
    let claims: Vec<String> = s.json(&["get", "pvc"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(claims, ["data-web-0", "data-web-1", "data-web-2"]);
    assert!(eventually(WAIT, || s.json(&["get", "sts", "web"])
        ["status"]["readyReplicas"]
        == 3));

    // Scale down: the highest ordinal goes first; claims stay (Retain is the default).
    s.ok(&["scale", "sts", "web", "--replicas=1"]);
    assert!(
        eventually(WAIT, || names(&s, "web") == ["web-0"]),
        "{:?}",
        names(&s, "web")
    );
    assert_eq!(
        s.json(&["get", "pvc"])["items"].as_array().map(Vec::len),
        Some(3)
    );

    // Rolling update with partition 1: web-0 keeps the old template until the partition drops.
    s.ok(&["scale", "sts", "web", "--replicas=2"]);
    assert!(eventually(WAIT, || names(&s, "web") == ["web-0", "web-1"]));
    ready(&s, "web-1");
    s.ok(&[
        "patch",
        "sts",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"type":"RollingUpdate","rollingUpdate":{"partition":1}}}}"#,
    ]);
    s.ok(&["set", "image", "sts/web", "c=busybox:2"]);
    let image = |p: &Value| {
        p["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        eventually(WAIT, || {
            let ps = pods(&s, "web");
            for p in &ps {
                if p["status"]["phase"] != "Running" {
                    ready(&s, p["metadata"]["name"].as_str().unwrap_or_default());
                }
            }
            ps.len() == 2 && image(&ps[1]) == "busybox:2"
        }),
        "web-1 not updated"
    );
    assert!(eventually(WAIT, || s.json(&["get", "sts", "web"])
        ["status"]["updatedReplicas"]
        == 1));
    assert_eq!(
        image(&pods(&s, "web")[0]),
        "busybox:1",
        "the partition was not honoured"
    );
}

#[test]
fn parallel_creates_all_at_once() {
    let s = Server::start();
    s.settle();
    s.ok_in(&["apply", "-f", "-"], &sts("par", "Parallel", 3));
    assert!(
        eventually(WAIT, || names(&s, "par") == ["par-0", "par-1", "par-2"]),
        "{:?}",
        names(&s, "par")
    );
    s.ok(&["scale", "sts", "par", "--replicas=0"]);
    assert!(eventually(WAIT, || names(&s, "par").is_empty()));
    // With whenDeleted: Delete the claims are owned by the set.
    s.ok(&["delete", "pvc", "--all"]);
    assert!(eventually(WAIT, || s.json(&["get", "pvc"])["items"]
        .as_array()
        .is_some_and(|a| a.is_empty())));
    s.ok(&["patch", "sts", "par", "--type=merge", "-p", r#"{"spec":{"persistentVolumeClaimRetentionPolicy":{"whenDeleted":"Delete"},"replicas":1}}"#]);
    assert!(eventually(WAIT, || names(&s, "par") == ["par-0"]));
    let pvc = s.json(&["get", "pvc", "data-par-0"]);
    assert_eq!(pvc["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
    s.ok(&["delete", "sts", "par"]);
    assert!(
        eventually(WAIT, || !s
            .kubectl(&["get", "pvc", "data-par-0"])
            .status
            .success()),
        "claim outlived its set"
    );
}
