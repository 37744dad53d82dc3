//! Events about pods, as upstream's kubelet records them (`source.component: kubelet`,
//! `involvedObject.fieldPath: spec.containers{name}`): Pulled, Created, Started, Killing,
//! BackOff, Failed, FailedMount. Best effort: a failed write is logged, never retried.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::PostParams;
use kube::Api;
use serde_json::json;

pub struct Ev<'a> {
    pub reason: &'a str,
    pub message: String,
    pub warning: bool,
    /// `spec.containers{name}` or `spec.initContainers{name}`; None for the pod itself.
    pub field_path: Option<String>,
}

pub fn field_path(init: bool, name: &str) -> Option<String> {
    Some(if init {
        format!("spec.initContainers{{{name}}}")
    } else {
        format!("spec.containers{{{name}}}")
    })
}

pub fn record(client: &kube::Client, node: &str, pod: &Pod, ev: Ev<'_>) {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let now = format!("{:.0}", jiff::Timestamp::now());
    let nanos = jiff::Timestamp::now().as_nanosecond();
    let mut involved = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "name": name,
        "namespace": ns,
        "uid": pod.metadata.uid,
    });
    if let Some(fp) = ev.field_path {
        involved["fieldPath"] = json!(fp);
    }
    let body = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{name}.{nanos:x}"), "namespace": ns},
        "involvedObject": involved,
        "reason": ev.reason,
        "message": ev.message,
        "type": if ev.warning { "Warning" } else { "Normal" },
        "source": {"component": "kubelet", "host": node},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "eventTime": null,
        "count": 1,
        "reportingComponent": "kubelet",
        "reportingInstance": node,
    });
    let Ok(event) = serde_json::from_value::<Event>(body) else {
        return;
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    tokio::spawn(async move {
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(error = %e, "cannot record an event");
        }
    });
}
