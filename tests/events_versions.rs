//! One Event kind, two APIs: upstream stores core `v1` Events and `events.k8s.io/v1` Events
//! as one object and serves each version as a view of it. An Event created through either
//! API is read, listed and watched through the other with the fields renamed as upstream's
//! conversion does (`involvedObject` ↔ `regarding`, `message` ↔ `note`, `count` ↔
//! `deprecatedCount`, `source` ↔ `deprecatedSource`, `reportingComponent` ↔
//! `reportingController`, `series` shared), `kubectl events` lists both, and deleting
//! through one API removes it from the other. The recorder's repeats (a real controller
//! failing again and again) show as `series` in events.k8s.io/v1.

mod harness;

use std::time::Duration;

use harness::{eventually, Raw, Server};
use serde_json::Value;

const CORE_EVENT: &str = r#"apiVersion: v1
kind: Event
metadata: {name: old-style, namespace: ev}
involvedObject: {kind: Pod, name: web-0, namespace: ev, apiVersion: v1}
reason: Pulled
message: Container image "busybox:1" already present on machine
type: Normal
count: 3
firstTimestamp: "2026-01-01T00:00:00Z"
lastTimestamp: "2026-01-01T00:05:00Z"
source: {component: kubelet, host: node-a}
"#;

const NEW_EVENT: &str = r#"apiVersion: events.k8s.io/v1
kind: Event
metadata: {name: new-style, namespace: ev}
eventTime: "2026-01-01T00:00:00.000000Z"
reportingController: example.com/operator
reportingInstance: operator-7f9
action: Reconcile
reason: Synced
note: synced the widget
type: Normal
regarding: {kind: ConfigMap, name: widget, namespace: ev, apiVersion: v1}
series: {count: 2, lastObservedTime: "2026-01-01T00:01:00.000000Z"}
"#;

fn item<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["items"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["metadata"]["name"] == name))
        .unwrap_or(&Value::Null)
}

#[test]
fn events_are_one_object_served_by_two_apis() {
    let s = Server::start();
    s.settle();
    s.ok(&["create", "namespace", "ev"]);
    let before = s
        .raw(Raw::get("/apis/events.k8s.io/v1/namespaces/ev/events"))
        .json();
    let rv = before["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!rv.is_empty(), "list has no resourceVersion: {before}");

    // core → events.k8s.io.
    s.ok_in(&["create", "-f", "-"], CORE_EVENT);
    let new = s.json(&["get", "events.v1.events.k8s.io", "-n", "ev", "-o", "json"]);
    let e = item(&new, "old-style");
    assert_eq!(e["apiVersion"], "events.k8s.io/v1", "{e}");
    assert_eq!(e["regarding"]["name"], "web-0", "{e}");
    assert_eq!(
        e["note"], "Container image \"busybox:1\" already present on machine",
        "{e}"
    );
    assert_eq!(e["deprecatedCount"], 3, "{e}");
    assert_eq!(e["deprecatedSource"]["component"], "kubelet", "{e}");
    assert_eq!(e["deprecatedLastTimestamp"], "2026-01-01T00:05:00Z", "{e}");
    for core_only in ["involvedObject", "message", "count", "source"] {
        assert!(e.get(core_only).is_none(), "{core_only} leaked: {e}");
    }

    // events.k8s.io → core.
    s.ok_in(&["create", "-f", "-"], NEW_EVENT);
    let core = s.json(&["get", "events", "-n", "ev", "-o", "json"]);
    let e = item(&core, "new-style");
    assert_eq!(e["apiVersion"], "v1", "{e}");
    assert_eq!(e["involvedObject"]["name"], "widget", "{e}");
    assert_eq!(e["message"], "synced the widget", "{e}");
    assert_eq!(e["reportingComponent"], "example.com/operator", "{e}");
    assert_eq!(e["series"]["count"], 2, "{e}");
    assert_eq!(item(&core, "old-style")["count"], 3);
    // One object each, not two copies: both lists hold exactly the two Events.
    let new = s.json(&["get", "events.v1.events.k8s.io", "-n", "ev", "-o", "json"]);
    for list in [&core, &new] {
        assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "{list:#}");
    }
    let e = s.json(&[
        "get",
        "events.v1.events.k8s.io",
        "new-style",
        "-n",
        "ev",
        "-o",
        "json",
    ]);
    assert_eq!(e["note"], "synced the widget", "{e}");
    assert_eq!(e["series"]["count"], 2, "{e}");

    // `kubectl events` (core) lists both.
    let out = s.ok(&["events", "-n", "ev"]);
    assert!(
        out.contains("synced the widget") && out.contains("already present on machine"),
        "{out}"
    );

    // A watch of events.k8s.io from before both creates sees both, converted.
    let path = format!(
        "/apis/events.k8s.io/v1/namespaces/ev/events?watch=1&resourceVersion={rv}&timeoutSeconds=2"
    );
    let w = s.raw(Raw::get(&path));
    assert_eq!(w.status, 200, "{}", String::from_utf8_lossy(&w.body));
    let events: Vec<Value> = String::from_utf8_lossy(&w.body)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let added: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "ADDED")
        .map(|e| &e["object"])
        .collect();
    assert!(
        added
            .iter()
            .any(|o| o["metadata"]["name"] == "old-style" && o["regarding"]["name"] == "web-0"),
        "{events:#?}"
    );
    assert!(
        added.iter().all(|o| o["apiVersion"] == "events.k8s.io/v1"),
        "{events:#?}"
    );

    // Updated through one API, seen through the other.
    s.ok(&[
        "patch",
        "events.v1.events.k8s.io",
        "old-style",
        "-n",
        "ev",
        "--type=merge",
        "-p",
        r#"{"series":{"count":4,"lastObservedTime":"2026-01-01T00:06:00.000000Z"}}"#,
    ]);
    let e = s.json(&["get", "event", "old-style", "-n", "ev", "-o", "json"]);
    assert_eq!(e["series"]["count"], 4, "{e}");
    assert_eq!(e["count"], 3, "{e}");
    assert_eq!(e["involvedObject"]["name"], "web-0", "{e}");

    // Deleted through one API, gone from both.
    s.ok(&["delete", "events.v1.events.k8s.io", "old-style", "-n", "ev"]);
    s.fails(&["get", "event", "old-style", "-n", "ev"]);
}

#[test]
fn recorder_repeats_show_as_series() {
    let s = Server::start();
    s.settle();
    s.ok(&["create", "namespace", "quota"]);
    s.ok(&["create", "quota", "none", "-n", "quota", "--hard=pods=0"]);
    // A StatefulSet retries the same pod name: one identical failure again and again.
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: same, namespace: quota}\nspec:\n  \
         replicas: 1\n  serviceName: same\n  selector: {matchLabels: {app: same}}\n  template:\n    \
         metadata: {labels: {app: same}}\n    spec: {containers: [{name: c, image: busybox:1}]}\n",
    );
    let series = || -> Option<Value> {
        s.json(&[
            "get",
            "events.v1.events.k8s.io",
            "-n",
            "quota",
            "-o",
            "json",
        ])["items"]
            .as_array()?
            .iter()
            .find(|e| e["reason"] == "FailedCreate" && e["regarding"]["kind"] == "StatefulSet")
            .cloned()
    };
    let grew = eventually(Duration::from_secs(40), || {
        series().is_some_and(|e| e["series"]["count"].as_i64().unwrap_or(0) >= 3)
    });
    let e = series().unwrap_or(Value::Null);
    assert!(grew, "no FailedCreate series reached 3: {e:#}");
    assert_eq!(e["series"]["count"], e["deprecatedCount"], "{e:#}");
    assert!(
        e["series"]["lastObservedTime"]
            .as_str()
            .is_some_and(|t| t.len() > 20),
        "{e:#}"
    );
    assert_eq!(
        e["deprecatedSource"]["component"], "statefulset-controller",
        "{e:#}"
    );
    assert!(
        e["note"]
            .as_str()
            .is_some_and(|n| n.contains("create Pod same-0 in StatefulSet same failed")),
        "{e:#}"
    );
}
