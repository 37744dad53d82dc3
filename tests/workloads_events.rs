//! Event series end to end: a controller that hits the same failure again and again writes
//! one Event whose `count` grows and whose `lastTimestamp` moves (client-go's event
//! correlation), and `kubectl describe` shows it as `(xN over ...)`.
//!
//! The failure is real: a ResourceQuota of zero pods makes every pod create of a ReplicaSet
//! fail, and the ReplicaSet controller retries and records `FailedCreate` each time.

mod harness;

use std::time::Duration;

use harness::{eventually, Server};
use serde_json::Value;

fn failed_creates(s: &Server) -> Vec<Value> {
    s.json(&[
        "get",
        "events",
        "-n",
        "quota",
        "--field-selector",
        "reason=FailedCreate",
    ])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn repeated_events_become_one_series() {
    let s = Server::start();
    s.settle();
    s.ok(&["create", "namespace", "quota"]);
    s.ok(&["create", "quota", "none", "-n", "quota", "--hard=pods=0"]);
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: blocked, namespace: quota}\nspec:\n  replicas: 1\n  \
         selector: {matchLabels: {app: blocked}}\n  template:\n    metadata: {labels: {app: blocked}}\n    \
         spec: {containers: [{name: c, image: busybox:1}]}\n",
    );
    // The controller retries the create; each failure is the same event again.
    let grew = eventually(Duration::from_secs(30), || {
        failed_creates(&s)
            .iter()
            .any(|e| e["count"].as_i64().unwrap_or(0) >= 4)
    });
    let events = failed_creates(&s);
    assert!(
        grew,
        "no FailedCreate event reached a count of 4: {events:#?}"
    );
    let total: i64 = events
        .iter()
        .map(|e| e["count"].as_i64().unwrap_or(0))
        .sum();
    assert!(
        events.len() <= 2 && (total as usize) > events.len(),
        "repeats were written as separate Events: {} objects for {total} occurrences",
        events.len()
    );
    let series = events
        .iter()
        .max_by_key(|e| e["count"].as_i64().unwrap_or(0))
        .cloned()
        .unwrap_or_default();
    assert_eq!(series["involvedObject"]["kind"], "ReplicaSet", "{series}");
    assert_eq!(
        series["source"]["component"], "replicaset-controller",
        "{series}"
    );
    let (first, last) = (
        series["firstTimestamp"].as_str().unwrap_or_default(),
        series["lastTimestamp"].as_str().unwrap_or_default(),
    );
    assert!(
        !first.is_empty() && last > first,
        "first {first}, last {last}"
    );
    assert!(
        series["message"]
            .as_str()
            .unwrap_or_default()
            .contains("exceeded quota"),
        "{series}"
    );
    let describe = s.ok(&["describe", "rs", "blocked", "-n", "quota"]);
    let line = describe
        .lines()
        .find(|l| l.contains("FailedCreate"))
        .unwrap_or_default();
    assert!(line.contains("(x"), "describe shows no series: {describe}");
    // Once the quota allows it, the create succeeds: a different event, not a bump.
    s.ok(&["delete", "quota", "none", "-n", "quota"]);
    assert!(eventually(Duration::from_secs(30), || {
        s.json(&[
            "get",
            "events",
            "-n",
            "quota",
            "--field-selector",
            "reason=SuccessfulCreate",
        ])["items"]
            .as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["count"] == 1)
    }));
}
