//! The scheduler's writes, all through the API as `system:kube-scheduler`: `pods/binding`,
//! the `PodScheduled` condition and `nominatedNodeName` (`pods/status`), graceful deletion of
//! preemption victims, and the Events users read in `kubectl describe` (`Scheduled`,
//! `FailedScheduling`, `Preempted`), as upstream's scheduler writes them.
//!
//! Invariant: nothing here touches the cache; the main loop learns the outcome from the
//! returned result (a failed binding un-assumes the pod) or from its watches.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};

/// Events waiting to be written (upstream's broadcaster queues 1,000 and drops beyond).
const EVENT_QUEUE: usize = 1000;
/// Event writes in flight at once.
const EVENT_WRITERS: usize = 16;

pub const SCHEDULER_NAME: &str = "default-scheduler";

fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// `POST pods/<name>/binding` with the pod's uid as precondition (a recreated pod of the same
/// name is not bound by mistake).
pub async fn bind(
    client: &kube::Client,
    ns: &str,
    name: &str,
    uid: &str,
    node: &str,
) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    api.create_subresource::<_, serde_json::Value>(
        "binding",
        name,
        &PostParams::default(),
        &binding,
    )
    .await
    .map(|_| ())
}

/// One Event to record about a pod.
pub struct PodEvent {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub type_: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// Records Events in the background, as upstream's event broadcaster does: a bounded queue
/// drained by a few writers, so a binding never waits for its `Scheduled` Event (which is a
/// second write with its own round trip); when the queue is full the Event is dropped, as
/// upstream drops events rather than slow the scheduler.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<PodEvent>,
}

impl Recorder {
    /// The recorder and the task that writes; abort the task to stop it.
    pub fn start(client: kube::Client) -> (Recorder, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<PodEvent>(EVENT_QUEUE);
        let task = tokio::spawn(async move {
            let writers = Arc::new(Semaphore::new(EVENT_WRITERS));
            while let Some(e) = rx.recv().await {
                let Ok(permit) = writers.clone().acquire_owned().await else {
                    return;
                };
                let client = client.clone();
                tokio::spawn(async move {
                    event(
                        &client,
                        &e.namespace,
                        &e.name,
                        &e.uid,
                        e.type_,
                        e.reason,
                        &e.message,
                    )
                    .await;
                    drop(permit);
                });
            }
        });
        (Recorder { tx }, task)
    }

    /// Queue an Event; dropped (and logged at debug) when the queue is full.
    pub fn record(&self, e: PodEvent) {
        if let Err(mpsc::error::TrySendError::Full(e)) = self.tx.try_send(e) {
            tracing::debug!(pod = %e.name, reason = e.reason, "event queue full; dropping the event");
        }
    }
}

/// A core/v1 Event about a pod, from `default-scheduler`.
fn pod_event(
    ns: &str,
    name: &str,
    uid: &str,
    type_: &str,
    reason: &str,
    message: &str,
) -> Option<Event> {
    let now = now_rfc3339();
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("{name}.{:x}", rand::random::<u64>()),
            "namespace": ns,
        },
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": name, "uid": uid},
        "reason": reason,
        // Upstream truncates event messages at 1 KiB.
        "message": truncate(message, 1024),
        "type": type_,
        "source": {"component": SCHEDULER_NAME},
        "reportingComponent": SCHEDULER_NAME,
        "reportingInstance": SCHEDULER_NAME,
        "action": "Scheduling",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }))
    .ok()
}

/// Write a core/v1 Event about a pod now.
pub async fn event(
    client: &kube::Client,
    ns: &str,
    name: &str,
    uid: &str,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let Some(ev) = pod_event(ns, name, uid, type_, reason, message) else {
        return;
    };
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::debug!(error = %e, pod = name, reason, "cannot record event");
    }
}

/// Record an Event about a pod through `sink`, where repeats (a pod failing to schedule
/// again for the same reasons) bump one Event's count, as upstream's recorder does.
pub fn correlated_event(sink: &crate::client::events::Sink, e: &PodEvent) {
    if let Some(ev) = pod_event(&e.namespace, &e.name, &e.uid, e.type_, e.reason, &e.message) {
        sink.record(ev);
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// `PodScheduled=False` (reason Unschedulable) with the message, and the nominated node when
/// preemption chose one.
pub async fn mark_unschedulable(
    client: &kube::Client,
    ns: &str,
    name: &str,
    message: &str,
    nominated: Option<&str>,
) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut status = json!({
        "conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": truncate(message, 32 * 1024),
            "lastProbeTime": null,
            "lastTransitionTime": now_rfc3339(),
        }],
    });
    if let Some(n) = nominated {
        status["nominatedNodeName"] = json!(n);
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Strategic(json!({ "status": status })),
    )
    .await
    .map(|_| ())
}

/// Delete a preemption victim gracefully (its own grace period), only if it is still the
/// same pod, and tell its owner why.
pub async fn evict_victim(
    client: &kube::Client,
    ns: &str,
    name: &str,
    uid: &str,
    preemptor_uid: &str,
    node: &str,
) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    // Upstream marks victims with the DisruptionTarget condition before deleting them.
    let cond = json!({"status": {"conditions": [{
        "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
        "message": format!("{SCHEDULER_NAME}: preempting to accommodate a higher priority pod"),
        "lastTransitionTime": now_rfc3339(),
    }]}});
    if let Err(e) = api
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(cond))
        .await
    {
        tracing::debug!(error = %e, pod = name, "cannot mark the preemption victim");
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(e),
    }
    event(
        client,
        ns,
        name,
        uid,
        "Normal",
        "Preempted",
        &format!("Preempted by pod {preemptor_uid} on node {node}"),
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(super::truncate("abc", 10), "abc");
        let long = "é".repeat(600);
        let t = super::truncate(&long, 1024);
        assert!(t.len() <= 1024 && t.ends_with("..."));
    }
}
