//! The `Event` printer for core/v1 and events.k8s.io/v1.
//!
//! Copies upstream `printEvent` (wide form, which the server always
//! renders). Upstream serves both API groups from one storage holding the
//! internal core Event, so events.k8s.io objects print through the same
//! printer: this module reads the events.k8s.io field names (`regarding`,
//! `note`, `deprecatedFirstTimestamp`, `series`, ...) as the conversion to
//! the core shape would.
//!
//! Invariants: unlike every other kind, `Name` is the *last* column (with
//! `format: "name"`), as upstream defines it; LAST SEEN falls back to FIRST
//! SEEN, which falls back to `eventTime`; an event with a `series` takes
//! its count and last-seen from the series; a count of 0 prints as 1.

use jiff::Timestamp;
use serde_json::Value;

use super::column::{self, string, ColumnDefinition};
use super::object::{at, int_at, name, str_at};
use super::{age, Printer};

pub(super) fn printer(group: &str, kind: &str) -> Option<Printer> {
    match (group, kind) {
        ("", "Event") => Some(Printer {
            columns,
            cells: core_cells,
        }),
        ("events.k8s.io", "Event") => Some(Printer {
            columns,
            cells: events_api_cells,
        }),
        _ => None,
    }
}

fn columns() -> Vec<ColumnDefinition> {
    vec![
        string("Last Seen", "The time at which the most recent occurrence of this event was recorded."),
        string("Type", "Type of this event (Normal, Warning), new types could be added in the future"),
        string("Reason", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
        string("Object", "The object that this event is about."),
        string(
            "Subobject",
            "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.",
        )
        .wide(),
        string("Source", "The component reporting this event. Should be a short machine understandable string.").wide(),
        string("Message", "A human-readable description of the status of this operation."),
        string("First Seen", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)").wide(),
        string("Count", "The number of times this event has occurred.").wide(),
        column::name().wide(),
    ]
}

/// The fields `printEvent` reads, named as in the core/v1 Event.
struct EventFields<'a> {
    first_timestamp: Option<&'a Value>,
    last_timestamp: Option<&'a Value>,
    event_time: Option<&'a Value>,
    series: Option<&'a Value>,
    count: i64,
    involved_object: Option<&'a Value>,
    type_: &'a str,
    reason: &'a str,
    message: &'a str,
    source_component: &'a str,
    source_host: &'a str,
    reporting_controller: &'a str,
    reporting_instance: &'a str,
}

fn core_cells(ev: &Value, now: Timestamp) -> Vec<Value> {
    let fields = EventFields {
        first_timestamp: at(ev, &["firstTimestamp"]),
        last_timestamp: at(ev, &["lastTimestamp"]),
        event_time: at(ev, &["eventTime"]),
        series: at(ev, &["series"]).filter(|s| s.is_object()),
        count: int_at(ev, &["count"]),
        involved_object: at(ev, &["involvedObject"]),
        type_: str_at(ev, &["type"]),
        reason: str_at(ev, &["reason"]),
        message: str_at(ev, &["message"]),
        source_component: str_at(ev, &["source", "component"]),
        source_host: str_at(ev, &["source", "host"]),
        reporting_controller: str_at(ev, &["reportingComponent"]),
        reporting_instance: str_at(ev, &["reportingInstance"]),
    };
    cells(ev, &fields, now)
}

fn events_api_cells(ev: &Value, now: Timestamp) -> Vec<Value> {
    let fields = EventFields {
        first_timestamp: at(ev, &["deprecatedFirstTimestamp"]),
        last_timestamp: at(ev, &["deprecatedLastTimestamp"]),
        event_time: at(ev, &["eventTime"]),
        series: at(ev, &["series"]).filter(|s| s.is_object()),
        count: int_at(ev, &["deprecatedCount"]),
        involved_object: at(ev, &["regarding"]),
        type_: str_at(ev, &["type"]),
        reason: str_at(ev, &["reason"]),
        message: str_at(ev, &["note"]),
        source_component: str_at(ev, &["deprecatedSource", "component"]),
        source_host: str_at(ev, &["deprecatedSource", "host"]),
        reporting_controller: str_at(ev, &["reportingController"]),
        reporting_instance: str_at(ev, &["reportingInstance"]),
    };
    cells(ev, &fields, now)
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() {
        b
    } else {
        a
    }
}

fn cells(ev: &Value, f: &EventFields<'_>, now: Timestamp) -> Vec<Value> {
    let first = age::parse(f.first_timestamp).or_else(|| age::parse(f.event_time));
    let first_seen = age::since(first, now);
    let mut last_seen = match age::parse(f.last_timestamp) {
        Some(ts) => age::since(Some(ts), now),
        None => first_seen.clone(),
    };
    let mut count = f.count;
    if let Some(series) = f.series {
        last_seen = age::since(age::parse(series.get("lastObservedTime")), now);
        count = int_at(series, &["count"]);
    } else if count == 0 {
        // Singleton events in the new API have no count.
        count = 1;
    }
    let kind = f
        .involved_object
        .map_or("", |o| str_at(o, &["kind"]))
        .to_lowercase();
    let target_name = f.involved_object.map_or("", |o| str_at(o, &["name"]));
    let target = if target_name.is_empty() {
        kind
    } else {
        format!("{kind}/{target_name}")
    };
    let component = first_non_empty(f.source_component, f.reporting_controller);
    let instance = first_non_empty(f.source_host, f.reporting_instance);
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        last_seen.into(),
        f.type_.into(),
        f.reason.into(),
        target.into(),
        f.involved_object
            .map_or("", |o| str_at(o, &["fieldPath"]))
            .into(),
        source.into(),
        f.message.trim().into(),
        first_seen.into(),
        count.into(),
        name(ev).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn core_event_row() {
        let ev = json!({
            "metadata": {"name": "web-1.17c", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{nginx}"},
            "reason": "BackOff", "type": "Warning",
            "message": "Back-off restarting failed container\n",
            "source": {"component": "kubelet", "host": "worker-1"},
            "firstTimestamp": "2024-05-01T11:00:00Z", "lastTimestamp": "2024-05-01T11:58:00Z",
            "count": 14
        });
        assert_eq!(
            core_cells(&ev, now()),
            vec![
                json!("2m"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web-1"),
                json!("spec.containers{nginx}"),
                json!("kubelet, worker-1"),
                json!("Back-off restarting failed container"),
                json!("60m"),
                json!(14),
                json!("web-1.17c"),
            ]
        );
    }

    #[test]
    fn new_style_event_uses_event_time_and_series() {
        let ev = json!({
            "metadata": {"name": "e"},
            "regarding": {"kind": "Node", "name": "worker-2"},
            "reason": "NodeReady", "type": "Normal", "note": "ready",
            "reportingController": "kubelet", "reportingInstance": "worker-2",
            "eventTime": "2024-05-01T11:59:00.000000Z",
            "series": {"count": 5, "lastObservedTime": "2024-05-01T11:59:50.000000Z"}
        });
        let c = events_api_cells(&ev, now());
        assert_eq!(c[0], json!("10s"));
        assert_eq!(c[3], json!("node/worker-2"));
        assert_eq!(c[5], json!("kubelet, worker-2"));
        assert_eq!(c[6], json!("ready"));
        assert_eq!(c[7], json!("60s"));
        assert_eq!(c[8], json!(5));
    }

    #[test]
    fn singleton_event_without_timestamps() {
        let c = core_cells(&json!({"involvedObject": {"kind": "Namespace"}}), now());
        assert_eq!(c[0], json!("<unknown>"));
        assert_eq!(c[3], json!("namespace"));
        assert_eq!(c[7], json!("<unknown>"));
        assert_eq!(c[8], json!(1));
    }
}
