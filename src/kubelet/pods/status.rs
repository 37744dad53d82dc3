//! Pod status as upstream's kubelet reports it (`generateAPIPodStatus`, `getPhase`,
//! `convertToAPIContainerStatuses`): phase, conditions, init and app container statuses with
//! state/reason/exit code/restartCount/lastState, hostIP(s), podIP(s), qosClass, startTime.
//! Pure: computed from the pod, the runtime's container states and the worker's notes.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{json, Map, Value};

use super::container_spec::{ANN_ATTEMPT, ANN_NAME};
use crate::kubelet::runtime::shim::ContainerState;

/// What the worker knows beyond the runtime's state.
pub struct Notes<'a> {
    /// Container name → (reason, message) of why it is waiting (image, config, start errors).
    pub waiting: &'a HashMap<String, (String, String)>,
    /// Container name → back-off message while a restart is held back.
    pub backoff: &'a HashMap<String, String>,
    /// Container name → termination message (read from its termination-log file).
    pub messages: &'a HashMap<String, String>,
    /// Image reference → image id (`sha256:...`).
    pub image_ids: &'a HashMap<String, String>,
    /// Container name → (started, ready) of its running attempt, from its probes; a running
    /// container missing here is both.
    pub probed: &'a HashMap<String, (bool, bool)>,
    pub host_ip: &'a str,
    pub pod_ip: &'a str,
    pub sandbox_ready: bool,
    pub now: &'a str,
}

/// Attempts of one container, oldest first.
pub fn attempts<'a>(runtime: &'a [ContainerState], name: &str) -> Vec<&'a ContainerState> {
    let mut v: Vec<&ContainerState> = runtime
        .iter()
        .filter(|c| c.annotations.get(ANN_NAME).map(String::as_str) == Some(name))
        .collect();
    v.sort_by_key(|c| attempt_of(c));
    v
}

pub fn attempt_of(c: &ContainerState) -> u32 {
    c.annotations
        .get(ANN_ATTEMPT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

/// RFC 3339 with seconds, as the API shows container times.
pub fn seconds(ts: &str) -> String {
    ts.parse::<jiff::Timestamp>()
        .map(|t| format!("{t:.0}"))
        .unwrap_or_else(|_| ts.to_string())
}

pub fn container_id(pod_uid: &str, c: &ContainerState) -> String {
    format!("rampart://{pod_uid}/{}", c.id)
}

fn terminated(pod_uid: &str, c: &ContainerState, message: Option<&String>) -> Value {
    let code = c.exit_code.unwrap_or(0);
    let reason = if c.oom_killed {
        "OOMKilled"
    } else if code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let mut t = json!({
        "exitCode": code,
        "reason": reason,
        "startedAt": seconds(&c.started_at),
        "finishedAt": seconds(c.finished_at.as_deref().unwrap_or(&c.started_at)),
        "containerID": container_id(pod_uid, c),
    });
    if let Some(s) = c.signal {
        t["signal"] = json!(s);
    }
    if let Some(m) = message.filter(|m| !m.is_empty()) {
        t["message"] = json!(m);
    }
    json!({ "terminated": t })
}

/// The status of one container.
fn container_status(
    pod_uid: &str,
    c: &Container,
    runtime: &[ContainerState],
    notes: &Notes<'_>,
    default_waiting: &str,
) -> Value {
    let tries = attempts(runtime, &c.name);
    let latest = tries.last().copied();
    let image = c.image.clone().unwrap_or_default();
    let mut s = Map::new();
    s.insert("name".into(), json!(c.name));
    s.insert("image".into(), json!(image));
    s.insert(
        "imageID".into(),
        json!(notes.image_ids.get(&image).cloned().unwrap_or_default()),
    );
    s.insert(
        "restartCount".into(),
        json!(latest.map(attempt_of).unwrap_or(0)),
    );
    let previous = if tries.len() >= 2 {
        Some(tries[tries.len() - 2])
    } else {
        None
    };
    let mut last_state = previous
        .map(|p| terminated(pod_uid, p, None))
        .unwrap_or_else(|| json!({}));
    let msg = notes.messages.get(&c.name);
    let state = if let Some((reason, message)) = notes.waiting.get(&c.name) {
        if let Some(l) = latest.filter(|l| !l.running) {
            last_state = terminated(pod_uid, l, msg);
        }
        json!({"waiting": {"reason": reason, "message": message}})
    } else {
        match latest {
            None => json!({"waiting": {"reason": default_waiting}}),
            Some(l) if l.running => {
                json!({"running": {"startedAt": seconds(&l.started_at)}})
            }
            Some(l) => {
                if let Some(b) = notes.backoff.get(&c.name) {
                    last_state = terminated(pod_uid, l, msg);
                    json!({"waiting": {"reason": "CrashLoopBackOff", "message": b}})
                } else {
                    terminated(pod_uid, l, msg)
                }
            }
        }
    };
    let running = state.get("running").is_some();
    if let Some(l) = latest {
        s.insert("containerID".into(), json!(container_id(pod_uid, l)));
    }
    s.insert("state".into(), state);
    s.insert("lastState".into(), last_state);
    let (started, ready) = notes.probed.get(&c.name).copied().unwrap_or((true, true));
    s.insert("ready".into(), json!(running && ready));
    s.insert("started".into(), json!(running && started));
    Value::Object(s)
}

fn condition(
    kind: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: &str,
) -> Value {
    let mut c = json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": now,
    });
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

/// Whether an init container is done for the pod's initialisation: completed successfully,
/// or for a sidecar (`restartPolicy: Always`), ever started (upstream's `Initialized` stays
/// true when a sidecar later restarts).
fn init_finished(c: &Container, runtime: &[ContainerState]) -> bool {
    let tries = attempts(runtime, &c.name);
    if c.restart_policy.as_deref() == Some("Always") {
        return !tries.is_empty();
    }
    tries
        .last()
        .is_some_and(|l| !l.running && l.exit_code == Some(0))
}

/// Whether every init container has completed successfully (sidecars: started).
pub fn init_done(pod: &Pod, runtime: &[ContainerState]) -> bool {
    let Some(spec) = &pod.spec else { return true };
    spec.init_containers
        .iter()
        .flatten()
        .all(|c| init_finished(c, runtime))
}

/// Upstream's `getPhase`.
pub fn phase(pod: &Pod, runtime: &[ContainerState], notes: &Notes<'_>) -> &'static str {
    let Some(spec) = &pod.spec else {
        return "Pending";
    };
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if !init_done(pod, runtime) {
        // A failed init container with restartPolicy Never fails the pod.
        let failed = spec.init_containers.iter().flatten().any(|c| {
            c.restart_policy.as_deref() != Some("Always")
                && attempts(runtime, &c.name)
                    .last()
                    .is_some_and(|l| !l.running && l.exit_code != Some(0))
        });
        return if failed && policy == "Never" {
            "Failed"
        } else {
            "Pending"
        };
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &spec.containers {
        let latest = attempts(runtime, &c.name).last().copied();
        match latest {
            Some(l) if l.running => running += 1,
            Some(l) => {
                stopped += 1;
                if l.exit_code == Some(0) {
                    succeeded += 1;
                }
            }
            None => waiting += 1,
        }
        let _ = notes;
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match policy {
            "Always" => "Running",
            "OnFailure" if stopped == succeeded => "Succeeded",
            "OnFailure" => "Running",
            _ if stopped == succeeded => "Succeeded",
            _ => "Failed",
        }
    } else {
        "Pending"
    }
}

/// The whole status object, merging times the server already has (startTime, conditions'
/// lastTransitionTime while unchanged).
pub fn compute(pod: &Pod, runtime: &[ContainerState], notes: &Notes<'_>, qos: &str) -> Value {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let old = pod.status.clone().unwrap_or_default();
    let mut phase = phase(pod, runtime, notes);
    // A terminal phase never changes again.
    if let Some(p) = old
        .phase
        .as_deref()
        .filter(|p| *p == "Succeeded" || *p == "Failed")
    {
        phase = if p == "Succeeded" {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    let Some(spec) = &pod.spec else {
        return json!({});
    };
    let init_complete = init_done(pod, runtime);
    let init_statuses: Vec<Value> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| container_status(uid, c, runtime, notes, "PodInitializing"))
        .collect();
    let default_waiting = if init_complete {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let statuses: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| container_status(uid, c, runtime, notes, default_waiting))
        .collect();
    // Sidecars' readiness counts too (upstream's ContainersReady since sidecars).
    let sidecar_statuses = spec
        .init_containers
        .iter()
        .flatten()
        .zip(init_statuses.iter())
        .filter(|(c, _)| c.restart_policy.as_deref() == Some("Always"))
        .map(|(_, s)| s);
    let unready: Vec<String> = sidecar_statuses
        .chain(statuses.iter())
        .filter(|s| s["ready"] != json!(true))
        .filter_map(|s| s["name"].as_str().map(String::from))
        .collect();
    let terminal = phase == "Succeeded" || phase == "Failed";
    let now = notes.now;
    let ready_reason = if terminal {
        Some("PodCompleted")
    } else if unready.is_empty() {
        None
    } else {
        Some("ContainersNotReady")
    };
    let ready_msg = (!terminal && !unready.is_empty())
        .then(|| format!("containers with unready status: [{}]", unready.join(" ")));
    let uninit: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| !init_finished(c, runtime))
        .map(|c| c.name.clone())
        .collect();
    let mut conditions = vec![
        condition(
            "PodReadyToStartContainers",
            notes.sandbox_ready && !terminal,
            None,
            None,
            now,
        ),
        condition(
            "Initialized",
            init_complete || (terminal && uninit.is_empty()),
            (!init_complete).then_some("ContainersNotInitialized"),
            (!init_complete)
                .then(|| format!("containers with incomplete status: [{}]", uninit.join(" "))),
            now,
        ),
        condition(
            "Ready",
            unready.is_empty() && !terminal,
            ready_reason,
            ready_msg.clone(),
            now,
        ),
        condition(
            "ContainersReady",
            unready.is_empty() && !terminal,
            ready_reason,
            ready_msg,
            now,
        ),
    ];
    let old_conditions: BTreeMap<String, (String, Value)> = old
        .conditions
        .iter()
        .flatten()
        .map(|c| {
            (
                c.type_.clone(),
                (
                    c.status.clone(),
                    serde_json::to_value(&c.last_transition_time).unwrap_or(Value::Null),
                ),
            )
        })
        .collect();
    for c in conditions.iter_mut() {
        let kind = c["type"].as_str().unwrap_or_default().to_string();
        if let Some((status, ltt)) = old_conditions.get(&kind) {
            if c["status"].as_str() == Some(status.as_str()) && !ltt.is_null() {
                c["lastTransitionTime"] = ltt.clone();
            }
        }
    }
    // PodScheduled: the scheduler's if it wrote one; a pod bound by nodeName gets True.
    let scheduled = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled")
        .and_then(|c| serde_json::to_value(c).ok())
        .unwrap_or_else(|| condition("PodScheduled", true, None, None, now));
    conditions.push(scheduled);
    let start = old
        .start_time
        .as_ref()
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or_else(|| json!(now));
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": notes.host_ip,
        "hostIPs": [{"ip": notes.host_ip}],
        "startTime": start,
        "qosClass": qos,
        "containerStatuses": statuses,
    });
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    if !notes.pod_ip.is_empty() {
        status["podIP"] = json!(notes.pod_ip);
        status["podIPs"] = json!([{"ip": notes.pod_ip}]);
    }
    status
}

/// The parts of a status that matter for "did it change" (transition times excluded).
pub fn comparable(status: &Value) -> Value {
    let mut s = status.clone();
    if let Some(cs) = s.get_mut("conditions").and_then(Value::as_array_mut) {
        for c in cs {
            if let Some(o) = c.as_object_mut() {
                o.remove("lastTransitionTime");
            }
        }
    }
    s
}
