//! The controllers' event recorder, as upstream's `record.EventRecorder` writing core/v1
//! Events: what `kubectl describe` shows under "Events" (`SuccessfulCreate`,
//! `ScalingReplicaSet`, `FailedCreate`, ...).
//!
//! Invariants: recording never blocks or fails a reconcile (events are best effort, written
//! from a spawned task); the Event lives in the involved object's namespace (`default` for
//! cluster-scoped objects, as upstream), and its name is `<object>.<unique hex>` like
//! upstream's. Repeats are correlated as client-go's recorder does (`client::events`): the
//! same event again bumps one Event's `count` and `lastTimestamp`.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;

use crate::client::events::Sink;

/// Records Events for one component (`deployment-controller`, `replicaset-controller`, ...).
#[derive(Clone)]
pub struct Recorder {
    sink: Sink,
    component: &'static str,
}

/// Event types, as upstream's `v1.EventTypeNormal` / `v1.EventTypeWarning`.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Normal,
    Warning,
}

impl Recorder {
    /// A recorder with its own writers (call inside the runtime).
    pub fn new(client: kube::Client, component: &'static str) -> Self {
        Self {
            sink: Sink::start(client),
            component,
        }
    }

    /// Record `reason`/`message` about `obj` (fire and forget).
    pub fn record<K>(&self, obj: &K, kind: Kind, reason: &str, message: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let meta = obj.meta();
        let involved = ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            ..Default::default()
        };
        self.record_ref(involved, kind, reason, message);
    }

    pub fn record_ref(&self, involved: ObjectReference, kind: Kind, reason: &str, message: String) {
        let ns = involved
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let now = Time(jiff::Timestamp::now());
        let name = format!(
            "{}.{:016x}",
            involved.name.as_deref().unwrap_or("object"),
            rand::random::<u64>()
        );
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: involved,
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(
                match kind {
                    Kind::Normal => "Normal",
                    Kind::Warning => "Warning",
                }
                .into(),
            ),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            source: Some(EventSource {
                component: Some(self.component.into()),
                host: None,
            }),
            reporting_component: Some(self.component.into()),
            ..Default::default()
        };
        self.sink.record(ev);
    }
}
