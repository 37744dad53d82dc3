//! Event series end to end: a controller that hits the same failure again and again writes
//! one Event whose `count` grows and whose `lastTimestamp` moves (client-go's event
//! correlation), and `kubectl describe` shows it as `(xN over ...)`; failures that differ
//! only in their message (a generated pod name) are folded, from the 10th on, into one
//! `(combined from similar events): ` Event, as client-go's aggregator does.
//!
//! The failures are real: a ResourceQuota of zero pods makes every pod create fail. A
//! StatefulSet retries the same pod name (one identical message); a ReplicaSet retries with
//! a new generated name each time (similar messages).

mod harness;

use std::time::Duration;

use harness::{eventually, Server};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(40);

fn failed_creates(s: &Server, kind: &str) -> Vec<Value> {
    s.json(&[
        "get",
        "events",
        "-n",
        "quota",
        "--field-selector",
        &format!("reason=FailedCreate,involvedObject.kind={kind}"),
    ])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn count(e: &Value) -> i64 {
    e["count"].as_i64().unwrap_or(0)
}

fn apply(s: &Server, kind: &str, name: &str) {
    let api = "apps/v1";
    let extra = if kind == "StatefulSet" {
        format!("  serviceName: {name}\n")
    } else {
        String::new()
    };
    s.ok_in(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: {api}\nkind: {kind}\nmetadata: {{name: {name}, namespace: quota}}\nspec:\n  replicas: 1\n{extra}  \
             selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    \
             spec: {{containers: [{{name: c, image: busybox:1}}]}}\n"
        ),
    );
}

#[test]
fn repeated_events_become_one_series() {
    let s = Server::start();
    s.settle();
    s.ok(&["create", "namespace", "quota"]);
    s.ok(&["create", "quota", "none", "-n", "quota", "--hard=pods=0"]);

    // Identical failures: one Event, its count growing.
    apply(&s, "StatefulSet", "same");
    let grew = eventually(WAIT, || {
        failed_creates(&s, "StatefulSet")
            .iter()
            .any(|e| count(e) >= 4)
    });
    let events = failed_creates(&s, "StatefulSet");
    assert!(
        grew,
        "no StatefulSet FailedCreate event reached a count of 4: {events:#?}"
    );
    assert_eq!(
        events.len(),
        1,
        "repeats were written as separate Events: {events:#?}"
    );
    let series = &events[0];
    assert_eq!(series["involvedObject"]["name"], "same", "{series}");
    assert_eq!(
        series["source"]["component"], "statefulset-controller",
        "{series}"
    );
    assert_eq!(
        series["message"]
            .as_str()
            .unwrap_or_default()
            .split(" is forbidden")
            .next(),
        Some("create Pod same-0 in StatefulSet same failed error: pods \"same-0\""),
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
    let describe = s.ok(&["describe", "statefulset", "same", "-n", "quota"]);
    let line = describe
        .lines()
        .find(|l| l.contains("FailedCreate"))
        .unwrap_or_default();
    assert!(line.contains("(x"), "describe shows no series: {describe}");

    // Similar failures (each pod name generated anew): from the 10th on, one combined Event.
    apply(&s, "ReplicaSet", "similar");
    let combined = eventually(WAIT, || {
        failed_creates(&s, "ReplicaSet").iter().any(|e| {
            count(e) >= 2
                && e["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("(combined from similar events): Error creating: pods \"similar-")
        })
    });
    let events = failed_creates(&s, "ReplicaSet");
    assert!(combined, "no combined FailedCreate event: {events:#?}");
    let total: i64 = events.iter().map(count).sum();
    assert!(
        events.len() <= 10 && total > events.len() as i64,
        "{} Events for {total} failures",
        events.len()
    );

    // Once the quota allows it, the creates succeed: a different event, not a bump.
    s.ok(&["delete", "quota", "none", "-n", "quota"]);
    assert!(eventually(WAIT, || {
        s.json(&[
            "get",
            "events",
            "-n",
            "quota",
            "--field-selector",
            "reason=SuccessfulCreate",
        ])["items"]
            .as_array()
            .is_some_and(|a| a.len() >= 2)
    }));
}
