//! The ReplicaSet and ReplicationController controllers end to end: pods created to the
//! replica count with controller references, a deleted pod replaced, an orphan matching the
//! selector adopted and a relabelled pod released, status counts, scale-down preferring
//! not-ready pods, and the events `kubectl describe` shows.
//!
//! No kubelet runs: the test marks pods Ready through the `status` subresource.

mod harness;

use std::time::Duration;

use harness::{eventually, Raw, Server};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn live(s: &Server, sel: &str) -> Vec<Value> {
    s.json(&["get", "pods", "-l", sel])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

fn name(v: &Value) -> String {
    v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn mark_ready(s: &Server, pod: &str) {
    let body = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    ]}})
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

const RS: &str = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: front}\nspec:\n  replicas: 3\n  selector: {matchLabels: {tier: front}}\n  template:\n    metadata: {labels: {tier: front, extra: x}}\n    spec: {containers: [{name: c, image: busybox:1}]}\n";

#[test]
fn replica_set_keeps_its_count_adopts_and_releases() {
    let s = Server::start();
    s.settle();
    s.ok_in(&["apply", "-f", "-"], RS);
    assert!(
        eventually(WAIT, || live(&s, "tier=front").len() == 3),
        "3 pods"
    );
    let rs = s.json(&["get", "rs", "front"]);
    let uid = rs["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for p in live(&s, "tier=front") {
        let r = &p["metadata"]["ownerReferences"][0];
        assert_eq!(r["uid"], uid.as_str());
        assert_eq!(r["controller"], true);
        assert_eq!(r["blockOwnerDeletion"], true);
        assert!(name(&p).starts_with("front-"), "{}", name(&p));
    }
    // Status: 3 replicas, 3 fully labelled, then ready/available as pods become ready.
    assert!(eventually(WAIT, || {
        let rs = s.json(&["get", "rs", "front"]);
        let st = &rs["status"];
        st["replicas"] == 3 && st["fullyLabeledReplicas"] == 3 && st["observedGeneration"] == 1
    }));
    let pods = live(&s, "tier=front");
    mark_ready(&s, &name(&pods[0]));
    mark_ready(&s, &name(&pods[1]));
    assert!(eventually(WAIT, || {
        let rs = s.json(&["get", "rs", "front"]);
        let st = &rs["status"];
        st["readyReplicas"] == 2 && st["availableReplicas"] == 2
    }));

    // Scale down by one: the pod that is not ready goes first.
    s.ok(&["scale", "rs", "front", "--replicas=2"]);
    assert!(eventually(WAIT, || live(&s, "tier=front").len() == 2));
    let left: Vec<String> = live(&s, "tier=front").iter().map(name).collect();
    assert!(
        left.contains(&name(&pods[0])) && left.contains(&name(&pods[1])),
        "a ready pod was deleted before the unready one: {left:?}"
    );

    // A deleted pod is replaced.
    s.ok(&["delete", "pod", &name(&pods[0])]);
    assert!(eventually(WAIT, || {
        let now: Vec<String> = live(&s, "tier=front").iter().map(name).collect();
        now.len() == 2 && !now.contains(&name(&pods[0]))
    }));

    // An orphan pod with matching labels is adopted (and the set, now one over, deletes one).
    s.ok_in(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: stray, labels: {tier: front}}\nspec: {containers: [{name: c, image: busybox:1}]}\n",
    );
    assert!(
        eventually(WAIT, || {
            let pods = live(&s, "tier=front");
            pods.len() == 2
                && pods
                    .iter()
                    .all(|p| p["metadata"]["ownerReferences"][0]["uid"] == uid.as_str())
        }),
        "orphan not adopted or surplus not removed: {:?}",
        live(&s, "tier=front").iter().map(name).collect::<Vec<_>>()
    );

    // A pod relabelled out of the selector is released and replaced.
    let victim = name(&live(&s, "tier=front")[0]);
    s.ok(&["label", "pod", &victim, "tier=elsewhere", "--overwrite"]);
    assert!(
        eventually(WAIT, || {
            let released = s.json(&["get", "pod", &victim]);
            released["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(|a| a.is_empty())
                && live(&s, "tier=front").len() == 2
        }),
        "relabelled pod not released and replaced"
    );

    let describe = s.ok(&["describe", "rs", "front"]);
    assert!(
        describe.contains("SuccessfulCreate") && describe.contains("Created pod: front-"),
        "{describe}"
    );
    assert!(describe.contains("SuccessfulDelete"), "{describe}");
}

#[test]
fn replication_controller_keeps_its_count() {
    let s = Server::start();
    s.settle();
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: legacy}\nspec:\n  replicas: 2\n  template:\n    metadata: {labels: {app: legacy}}\n    spec: {containers: [{name: c, image: busybox:1}]}\n",
    );
    assert!(eventually(WAIT, || live(&s, "app=legacy").len() == 2));
    for p in live(&s, "app=legacy") {
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["kind"],
            "ReplicationController"
        );
    }
    s.ok(&["scale", "rc", "legacy", "--replicas=4"]);
    assert!(eventually(WAIT, || live(&s, "app=legacy").len() == 4));
    assert!(eventually(WAIT, || s.json(&["get", "rc", "legacy"])
        ["status"]["replicas"]
        == 4));
    s.ok(&["delete", "rc", "legacy"]);
    assert!(
        eventually(WAIT, || live(&s, "app=legacy").is_empty()),
        "pods outlived their rc"
    );
}
