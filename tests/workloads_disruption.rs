//! PodDisruptionBudgets end to end with the stock kubectl: the disruption controller's status
//! (`kubectl get pdb` columns, healthy counts, `DisruptionAllowed` condition, percentages
//! against the Deployment's scale), the eviction API refusing with upstream's 429 and then
//! allowing once the budget recovers, and `kubectl drain` respecting the budget.
//!
//! No kubelet runs: one Node object is made Ready by the test, the scheduler binds the pods to
//! it, and the test plays the kubelet by marking pods Ready and by finishing graceful deletions
//! (a force delete). The server runs with a one-hour node grace period so the node that never
//! renews its Lease stays Ready.

mod harness;

use std::time::Duration;

use harness::{eventually, Raw, Server};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn start() -> Server {
    let s = Server::start_with(&["--node-monitor-grace-period", "1h"]);
    s.settle();
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {kubernetes.io/hostname: n1}}\n",
    );
    let res = json!({"cpu": "8", "memory": "16Gi", "pods": "110"});
    let body = json!({"status": {"capacity": res, "allocatable": res, "conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test",
         "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    .to_string();
    let r = s.raw(Raw::send(
        "PATCH",
        "/api/v1/nodes/n1/status",
        "application/merge-patch+json",
        body.as_bytes(),
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    s
}

fn live_pods(s: &Server, sel: &str) -> Vec<Value> {
    s.json(&["get", "pods", "-l", sel])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Play the kubelet: bound live pods become Running and Ready.
fn ready_all(s: &Server, sel: &str) {
    for pod in live_pods(s, sel) {
        if is_ready(&pod) || pod["spec"]["nodeName"].is_null() {
            continue;
        }
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let body = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
        .to_string();
        let r = s.raw(Raw::send(
            "PATCH",
            &format!("/api/v1/namespaces/default/pods/{name}/status"),
            "application/merge-patch+json",
            body.as_bytes(),
        ));
        assert!(
            [200, 404, 409].contains(&r.status),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }
}

/// Play the kubelet: pods being deleted gracefully are removed.
fn finish_deletions(s: &Server, sel: &str) {
    for pod in s.json(&["get", "pods", "-l", sel])["items"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if pod["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        s.kubectl(&["delete", "pod", name, "--grace-period=0", "--force"]);
    }
}

fn evict(s: &Server, pod: &str) -> (u16, Value) {
    let body = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod}})
        .to_string();
    let r = s.raw(Raw::send(
        "POST",
        &format!("/api/v1/namespaces/default/pods/{pod}/eviction"),
        "application/json",
        body.as_bytes(),
    ));
    (r.status, r.json())
}

fn pdb_status(s: &Server, name: &str) -> Value {
    s.json(&["get", "pdb", name])["status"].clone()
}

fn deployment(s: &Server, name: &str, replicas: u32) {
    s.ok_in(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  \
             selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    \
             spec: {{containers: [{{name: c, image: busybox:1}}]}}\n"
        ),
    );
    let sel = format!("app={name}");
    let ready = eventually(WAIT, || {
        ready_all(s, &sel);
        let pods = live_pods(s, &sel);
        pods.len() == replicas as usize && pods.iter().all(is_ready)
    });
    assert!(
        ready,
        "{name}'s pods never became ready: {}",
        s.ok(&["get", "pods", "-o", "wide"])
    );
}

#[test]
fn budget_status_eviction_and_drain() {
    let s = start();
    deployment(&s, "web", 3);
    s.ok(&[
        "create",
        "pdb",
        "web",
        "--selector=app=web",
        "--min-available=2",
    ]);
    let ok = eventually(WAIT, || {
        let st = pdb_status(&s, "web");
        st["currentHealthy"] == 3
            && st["desiredHealthy"] == 2
            && st["expectedPods"] == 3
            && st["disruptionsAllowed"] == 1
            && st["observedGeneration"] == 1
    });
    assert!(
        ok,
        "status never converged: {}",
        s.ok(&["get", "pdb", "web", "-o", "yaml"])
    );
    let st = pdb_status(&s, "web");
    let cond = &st["conditions"][0];
    assert_eq!(
        (&cond["type"], &cond["status"], &cond["reason"]),
        (
            &json!("DisruptionAllowed"),
            &json!("True"),
            &json!("SufficientPods")
        ),
        "{st}"
    );
    // kubectl's columns: NAME MIN AVAILABLE MAX UNAVAILABLE ALLOWED DISRUPTIONS AGE.
    let table = s.ok(&["get", "pdb", "web"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "MIN",
            "AVAILABLE",
            "MAX",
            "UNAVAILABLE",
            "ALLOWED",
            "DISRUPTIONS",
            "AGE"
        ],
        "{table}"
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(&row[..4], ["web", "2", "N/A", "1"], "{table}");

    // One disruption is allowed: the first eviction succeeds and spends it.
    let pods: Vec<String> = live_pods(&s, "app=web")
        .iter()
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let (code, body) = evict(&s, &pods[0]);
    assert_eq!(code, 201, "{body}");
    let st = pdb_status(&s, "web");
    assert_eq!(st["disruptionsAllowed"], 0, "{st}");
    assert!(
        st["disruptedPods"][pods[0].as_str()].is_string() || st["currentHealthy"] == 2,
        "{st}"
    );

    // The second is refused with upstream's 429 and changes nothing.
    let (code, body) = evict(&s, &pods[1]);
    assert_eq!(code, 429, "{body}");
    assert_eq!(body["reason"], "TooManyRequests", "{body}");
    assert_eq!(
        body["message"], "Cannot evict pod as it would violate the pod's disruption budget.",
        "{body}"
    );
    assert_eq!(
        body["details"]["causes"][0]["reason"], "DisruptionBudget",
        "{body}"
    );
    assert_eq!(
        body["details"]["causes"][0]["message"],
        "The disruption budget web needs 2 healthy pods and has 2 currently",
        "{body}"
    );
    let p1 = s.json(&["get", "pod", &pods[1]]);
    assert!(p1["metadata"]["deletionTimestamp"].is_null(), "{p1}");
    let (code, _) = evict(&s, &pods[1]);
    assert_eq!(code, 429, "still refused on a second try");

    // The evicted pod goes away and its replacement becomes ready: the budget recovers.
    let recovered = eventually(WAIT, || {
        finish_deletions(&s, "app=web");
        ready_all(&s, "app=web");
        let st = pdb_status(&s, "web");
        st["currentHealthy"] == 3 && st["disruptionsAllowed"] == 1 && st["disruptedPods"].is_null()
    });
    assert!(
        recovered,
        "never recovered: {}",
        s.ok(&["get", "pdb", "web", "-o", "yaml"])
    );
    let (code, body) = evict(&s, &pods[1]);
    assert_eq!(code, 201, "allowed again: {body}");

    // A percentage counts against the Deployment's scale (50% of 3 rounds up to 2).
    s.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":null,"maxUnavailable":"50%"}}"#,
    ]);
    let ok = eventually(WAIT, || {
        finish_deletions(&s, "app=web");
        ready_all(&s, "app=web");
        let st = pdb_status(&s, "web");
        st["expectedPods"] == 3 && st["desiredHealthy"] == 1 && st["observedGeneration"] == 2
    });
    assert!(
        ok,
        "maxUnavailable 50%: {}",
        s.ok(&["get", "pdb", "web", "-o", "yaml"])
    );

    // kubectl drain respects the budget: all 3 healthy pods must stay.
    s.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"maxUnavailable":0}}"#,
    ]);
    assert!(eventually(WAIT, || {
        finish_deletions(&s, "app=web");
        ready_all(&s, "app=web");
        let st = pdb_status(&s, "web");
        st["observedGeneration"] == 3 && st["disruptionsAllowed"] == 0 && st["currentHealthy"] == 3
    }));
    let out = s.kubectl(&["drain", "n1", "--grace-period=0", "--timeout=6s"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "drain must not pass a budget: {text}"
    );
    assert!(
        text.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{text}"
    );
    assert_eq!(live_pods(&s, "app=web").len(), 3, "no pod was evicted");
    // Once the budget allows it, drain evicts everything from the (cordoned) node.
    s.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"maxUnavailable":"100%"}}"#,
    ]);
    assert!(eventually(WAIT, || pdb_status(&s, "web")
        ["observedGeneration"]
        == 4));
    let out = s.ok(&["drain", "n1", "--grace-period=0", "--timeout=20s"]);
    assert!(out.contains("drained"), "{out}");
    let left: Vec<Value> = live_pods(&s, "app=web")
        .into_iter()
        .filter(|p| p["spec"]["nodeName"] == "n1")
        .collect();
    assert!(left.is_empty(), "pods left on the drained node: {left:?}");
}

#[test]
fn bad_evictions_change_nothing() {
    let s = start();
    deployment(&s, "api", 2);
    // Two budgets over one pod: the eviction subresource refuses (upstream's 500).
    s.ok(&[
        "create",
        "pdb",
        "a1",
        "--selector=app=api",
        "--min-available=0",
    ]);
    s.ok(&[
        "create",
        "pdb",
        "a2",
        "--selector=app=api",
        "--max-unavailable=1",
    ]);
    assert!(eventually(WAIT, || pdb_status(&s, "a2")["expectedPods"] == 2));
    let pod = live_pods(&s, "app=api")[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (code, body) = evict(&s, &pod);
    assert_eq!(code, 500, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("more than one PodDisruptionBudget"),
        "{body}"
    );
    // A name that does not match the URL is a 400.
    let wrong =
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "other"}})
            .to_string();
    let r = s.raw(Raw::send(
        "POST",
        &format!("/api/v1/namespaces/default/pods/{pod}/eviction"),
        "application/json",
        wrong.as_bytes(),
    ));
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    // A dry run is judged but writes nothing.
    s.ok(&["delete", "pdb", "a1"]);
    let before = s.json(&["get", "pdb", "a2"]);
    let body = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod},
        "deleteOptions": {"dryRun": ["All"]}})
    .to_string();
    let r = s.raw(Raw::send(
        "POST",
        &format!("/api/v1/namespaces/default/pods/{pod}/eviction"),
        "application/json",
        body.as_bytes(),
    ));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let p = s.json(&["get", "pod", &pod]);
    assert!(p["metadata"]["deletionTimestamp"].is_null(), "{p}");
    let after = s.json(&["get", "pdb", "a2"]);
    assert_eq!(
        before["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"],
        "a dry run wrote the budget"
    );
    // An unscheduled (Pending) pod ignores budgets.
    s.ok(&[
        "create",
        "pdb",
        "all",
        "--selector=app=pending",
        "--min-available=5",
    ]);
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: pend, labels: {app: pending}}\nspec:\n  nodeSelector: {nowhere: x}\n  containers: [{name: c, image: busybox:1}]\n",
    );
    let (code, body) = evict(&s, "pend");
    assert_eq!(code, 201, "{body}");
    assert!(eventually(WAIT, || s
        .kubectl(&["get", "pod", "pend"])
        .status
        .code()
        == Some(1)));
}
