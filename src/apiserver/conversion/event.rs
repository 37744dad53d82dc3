//! core `v1` Event ↔ `events.k8s.io/v1` Event, upstream's `pkg/apis/events/v1/conversion.go`:
//! the same object under other names — `involvedObject` ↔ `regarding`, `message` ↔ `note`,
//! `reportingComponent` ↔ `reportingController`, and the old recorder's `source`,
//! `firstTimestamp`, `lastTimestamp`, `count` ↔ `deprecatedSource`,
//! `deprecatedFirstTimestamp`, `deprecatedLastTimestamp`, `deprecatedCount`. `series`,
//! `eventTime`, `related`, `action`, `reason`, `type`, `reportingInstance` and `metadata`
//! share their names.

use serde_json::Value;

use super::rename;

/// (core name, events.k8s.io name).
const FIELDS: [(&str, &str); 7] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// A stored core Event as `events.k8s.io/v1` serves it.
pub fn core_to_events(mut obj: Value) -> Value {
    if let Some(map) = obj.as_object_mut() {
        for (core, events) in FIELDS {
            rename(map, core, events);
        }
        // Go's zero `source` is `{}`, which upstream's conversion keeps; an empty one is
        // noise in the new API.
        if map
            .get("deprecatedSource")
            .and_then(Value::as_object)
            .is_some_and(|s| s.is_empty())
        {
            map.remove("deprecatedSource");
        }
        map.insert("apiVersion".into(), "events.k8s.io/v1".into());
        map.insert("kind".into(), "Event".into());
    }
    obj
}

/// An `events.k8s.io/v1` Event as it is stored (a core Event).
pub fn events_to_core(mut obj: Value) -> Value {
    if let Some(map) = obj.as_object_mut() {
        for (core, events) in FIELDS {
            rename(map, events, core);
        }
        map.insert("apiVersion".into(), "v1".into());
        map.insert("kind".into(), "Event".into());
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_renames() {
        let core = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "d"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "hi", "reason": "R",
            "source": {"component": "kubelet"}, "count": 3,
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:01:00Z",
            "series": {"count": 3, "lastObservedTime": "2026-01-01T00:01:00.000000Z"},
            "reportingComponent": "kubelet", "reportingInstance": "n1", "type": "Normal"});
        let ev = core_to_events(core.clone());
        assert_eq!(ev["apiVersion"], "events.k8s.io/v1");
        assert_eq!(ev["regarding"]["name"], "p");
        assert_eq!(ev["note"], "hi");
        assert_eq!(ev["deprecatedCount"], 3);
        assert_eq!(ev["series"]["count"], 3);
        assert_eq!(ev["reportingController"], "kubelet");
        assert_eq!(ev["deprecatedSource"]["component"], "kubelet");
        assert!(ev.get("message").is_none() && ev.get("involvedObject").is_none());
        assert_eq!(events_to_core(ev), core);
    }

    #[test]
    fn odd_shapes_do_not_panic() {
        for v in [
            json!(null),
            json!([1]),
            json!("x"),
            json!({"message": null}),
        ] {
            let _ = events_to_core(core_to_events(v));
        }
    }
}
