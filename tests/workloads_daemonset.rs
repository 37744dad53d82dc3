//! The DaemonSet controller end to end: one pod per eligible Node object, following nodes
//! added, tainted, labelled and removed; a template change rolls the pods over.
//!
//! The nodes are plain Node objects made by the test (no kubelet): pods are matched to nodes by
//! the `metadata.name` node affinity the controller pins them with (or their binding, if a
//! scheduler bound them).

mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use harness::{eventually, Raw, Server};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn node(s: &Server, name: &str, labels: &str) {
    s.ok_in(
        &["apply", "-f", "-"],
        &format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n"),
    );
}

/// node → image of each live daemon pod aimed at it.
fn placement(s: &Server) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in s.json(&["get", "pods", "-n", "kube-system", "-l", "app=agent"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
    {
        let bound = p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty());
        let pinned = p["spec"]["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
            ["matchFields"][0]["values"][0]
            .as_str();
        let target = bound.or(pinned).unwrap_or("?").to_string();
        let image = p["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or("")
            .to_string();
        out.entry(target).or_default().push(image);
    }
    out
}

fn nodes_of(p: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    p.iter()
        .filter(|(_, v)| v.len() == 1)
        .map(|(k, _)| k.clone())
        .collect()
}

fn ready_all(s: &Server) {
    for p in s.json(&["get", "pods", "-n", "kube-system", "-l", "app=agent"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let name = p["metadata"]["name"].as_str().unwrap_or_default();
        let body = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
        .to_string();
        let path = format!("/api/v1/namespaces/kube-system/pods/{name}/status");
        s.raw(Raw::send(
            "PATCH",
            &path,
            "application/merge-patch+json",
            body.as_bytes(),
        ));
    }
}

#[test]
fn daemonset_tracks_nodes() {
    let s = Server::start();
    s.settle();
    node(&s, "n1", "zone: a");
    node(&s, "n2", "zone: b");
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent, namespace: kube-system}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec:\n      nodeSelector: {role: worker}\n      containers: [{name: c, image: busybox:1}]\n",
    );
    // No node is a worker yet: nothing runs.
    let ds_generation =
        |s: &Server| -> Value { s.json(&["get", "ds", "agent", "-n", "kube-system"]) };
    assert!(eventually(WAIT, || ds_generation(&s)["status"]
        ["observedGeneration"]
        == 1));
    assert!(placement(&s).is_empty(), "{:?}", placement(&s));
    // Labelled nodes get a daemon.
    s.ok(&["label", "node", "n1", "n2", "role=worker"]);
    assert!(
        eventually(WAIT, || nodes_of(&placement(&s)) == ["n1", "n2"]),
        "{:?}",
        placement(&s)
    );
    // A node joining.
    node(&s, "n3", "role: worker");
    assert!(
        eventually(WAIT, || nodes_of(&placement(&s)) == ["n1", "n2", "n3"]),
        "{:?}",
        placement(&s)
    );
    // An untolerated NoSchedule taint makes it ineligible.
    s.ok(&["taint", "node", "n2", "dedicated=db:NoSchedule"]);
    assert!(
        eventually(WAIT, || nodes_of(&placement(&s)) == ["n1", "n3"]),
        "{:?}",
        placement(&s)
    );
    // A node leaving.
    s.ok(&["delete", "node", "n3"]);
    assert!(
        eventually(WAIT, || nodes_of(&placement(&s)) == ["n1"]),
        "{:?}",
        placement(&s)
    );
    assert!(
        eventually(WAIT, || ds_generation(&s)["status"]
            ["desiredNumberScheduled"]
            == 1),
        "{}",
        ds_generation(&s)["status"]
    );

    // Template change: RollingUpdate replaces the pod once it is available.
    s.ok(&["taint", "node", "n2", "dedicated-"]);
    assert!(eventually(WAIT, || nodes_of(&placement(&s)) == ["n1", "n2"]));
    s.ok(&[
        "set",
        "image",
        "ds/agent",
        "-n",
        "kube-system",
        "c=busybox:2",
    ]);
    let rolled = eventually(WAIT, || {
        ready_all(&s);
        let p = placement(&s);
        nodes_of(&p) == ["n1", "n2"] && p.values().all(|v| v == &["busybox:2".to_string()])
    });
    assert!(rolled, "{:?}", placement(&s));
    let out = s.ok(&[
        "rollout",
        "status",
        "ds/agent",
        "-n",
        "kube-system",
        "--timeout=20s",
    ]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let history = s.ok(&["rollout", "history", "ds/agent", "-n", "kube-system"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
}
