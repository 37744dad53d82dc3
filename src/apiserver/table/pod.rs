//! The core/v1 `Pod` printer: READY, STATUS, RESTARTS and the wide columns.
//!
//! Copies upstream `printPod` (pkg/printers/internalversion/printers.go),
//! including its precedence rules for STATUS:
//!
//! 1. `status.phase`, overridden by `status.reason`, overridden by a
//!    `PodScheduled` condition whose reason is `SchedulingGated`;
//! 2. the first init container that has not finished successfully
//!    (`Init:<reason>`, `Init:ExitCode:N`, `Init:Signal:N` or `Init:i/n`);
//!    restartable ("sidecar") init containers that started count as ready
//!    and do not block;
//! 3. once initialised, the waiting/terminated reason of the *first* regular
//!    container that has one (statuses are walked last-to-first, so the
//!    first one wins), with `Completed` turned back into `Running` or
//!    `NotReady` while any container still runs;
//! 4. `Unknown` for a deleted pod on a lost node, `Terminating` for any
//!    other deleted pod that has not reached a terminal phase.
//!
//! RESTARTS is the restart count plus, when known, the age of the most
//! recent container termination: `3 (5m ago)`.
//!
//! Invariants: the server always renders the wide columns (upstream's
//! storage calls the printer with `Wide: true`), so cells always match
//! [`columns`] one-to-one.

use jiff::Timestamp;
use serde_json::Value;

use super::age;
use super::column::{self, string, ColumnDefinition};
use super::object::{at, int_at, is_deleting, items, name, opt_bool, str_at};
use super::response::RowCondition;

pub(super) fn columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string(
            "Ready",
            "The aggregate readiness state of this pod for accepting traffic.",
        ),
        string(
            "Status",
            "The aggregate status of the containers in this pod.",
        ),
        string(
            "Restarts",
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        ),
        column::age(),
        string(
            "IP",
            "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
        )
        .wide(),
        string(
            "Node",
            "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename",
        )
        .wide(),
        string(
            "Nominated Node",
            "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.",
        )
        .wide(),
        string(
            "Readiness Gates",
            "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates",
        )
        .wide(),
    ]
}

/// `metav1.TableRow.Conditions` upstream attaches to finished pods.
pub(super) fn conditions(pod: &Value) -> Vec<RowCondition> {
    match str_at(pod, &["status", "phase"]) {
        "Succeeded" => vec![RowCondition::completed(
            "Succeeded",
            "The pod has completed successfully.",
        )],
        "Failed" => vec![RowCondition::completed("Failed", "The pod failed.")],
        _ => Vec::new(),
    }
}

/// A present, non-null object field (Go's non-nil pointer).
fn present<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    at(v, path).filter(|v| v.is_object())
}

/// Keeps the later of two restart times; `None` is Go's zero time.
fn later(current: Option<Timestamp>, candidate: Option<Timestamp>) -> Option<Timestamp> {
    match (current, candidate) {
        (Some(c), Some(n)) if n > c => Some(n),
        (None, n) => n,
        (c, _) => c,
    }
}

/// `lastState.terminated.finishedAt`, if the container terminated before.
/// The outer `Option` is "was there a termination", the inner its time.
fn last_termination(status: &Value) -> Option<Option<Timestamp>> {
    present(status, &["lastState", "terminated"]).map(|t| age::parse(t.get("finishedAt")))
}

fn has_condition(pod: &Value, type_: &str, status: &str) -> bool {
    items(pod, &["status", "conditions"])
        .iter()
        .any(|c| str_at(c, &["type"]) == type_ && str_at(c, &["status"]) == status)
}

/// `isPodInitializedConditionTrue`: only the first `Initialized` counts.
fn initialized(pod: &Value) -> bool {
    items(pod, &["status", "conditions"])
        .iter()
        .find(|c| str_at(c, &["type"]) == "Initialized")
        .is_some_and(|c| str_at(c, &["status"]) == "True")
}

/// Reason for a terminated container without one: signal wins over exit code.
fn exit_reason(prefix: &str, terminated: &Value) -> String {
    let signal = int_at(terminated, &["signal"]);
    if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        format!("{prefix}ExitCode:{}", int_at(terminated, &["exitCode"]))
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

pub(super) fn cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let init_specs = items(pod, &["spec", "initContainers"]);
    // Upstream looks init containers up by name in a map; a status without a
    // matching spec is simply not restartable.
    let restartable = |container_name: &str| {
        init_specs
            .iter()
            .rev()
            .find(|c| str_at(c, &["name"]) == container_name)
            .is_some_and(|c| str_at(c, &["restartPolicy"]) == "Always")
    };
    let mut total = items(pod, &["spec", "containers"]).len();
    total += init_specs
        .iter()
        .filter(|c| str_at(c, &["restartPolicy"]) == "Always")
        .count();

    let phase = str_at(pod, &["status", "phase"]);
    let mut reason = non_empty(str_at(pod, &["status", "reason"]))
        .unwrap_or(phase)
        .to_string();
    if items(pod, &["status", "conditions"]).iter().any(|c| {
        str_at(c, &["type"]) == "PodScheduled" && str_at(c, &["reason"]) == "SchedulingGated"
    }) {
        reason = "SchedulingGated".to_string();
    }

    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut ready = 0usize;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_sidecar_restart: Option<Timestamp> = None;

    let mut initializing = false;
    let init_statuses = items(pod, &["status", "initContainerStatuses"]);
    for (i, container) in init_statuses.iter().enumerate() {
        let count = int_at(container, &["restartCount"]);
        let is_sidecar = restartable(str_at(container, &["name"]));
        restarts += count;
        if let Some(finished) = last_termination(container) {
            last_restart = later(last_restart, finished);
            if is_sidecar {
                last_sidecar_restart = later(last_sidecar_restart, finished);
            }
        }
        if is_sidecar {
            sidecar_restarts += count;
        }
        let terminated = present(container, &["state", "terminated"]);
        let waiting_reason = present(container, &["state", "waiting"])
            .map(|w| str_at(w, &["reason"]))
            .unwrap_or("");
        match terminated {
            Some(t) if int_at(t, &["exitCode"]) == 0 => continue,
            _ if is_sidecar && opt_bool(container, &["started"]) == Some(true) => {
                if opt_bool(container, &["ready"]) == Some(true) {
                    ready += 1;
                }
                continue;
            }
            Some(t) => {
                reason = match non_empty(str_at(t, &["reason"])) {
                    Some(r) => format!("Init:{r}"),
                    None => exit_reason("Init:", t),
                };
            }
            None if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" => {
                reason = format!("Init:{waiting_reason}");
            }
            None => reason = format!("Init:{i}/{}", init_specs.len()),
        }
        initializing = true;
        break;
    }

    if !initializing || initialized(pod) {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for container in items(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += int_at(container, &["restartCount"]);
            if let Some(finished) = last_termination(container) {
                last_restart = later(last_restart, finished);
            }
            let waiting = present(container, &["state", "waiting"]);
            let terminated = present(container, &["state", "terminated"]);
            if let Some(r) = waiting.and_then(|w| non_empty(str_at(w, &["reason"]))) {
                reason = r.to_string();
            } else if let Some(t) = terminated {
                reason = match non_empty(str_at(t, &["reason"])) {
                    Some(r) => r.to_string(),
                    None => exit_reason("", t),
                };
            } else if opt_bool(container, &["ready"]) == Some(true)
                && present(container, &["state", "running"]).is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if has_condition(pod, "Ready", "True") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    if is_deleting(pod) && str_at(pod, &["status", "reason"]) == "NodeLost" {
        reason = "Unknown".to_string();
    } else if is_deleting(pod) && !matches!(phase, "Failed" | "Succeeded") {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(when) if restarts != 0 => format!("{restarts} ({} ago)", age::since(Some(when), now)),
        _ => restarts.to_string(),
    };

    vec![
        name(pod).into(),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts_cell.into(),
        age::of_object(pod, now).into(),
        pod_ip(pod).into(),
        or_none(str_at(pod, &["spec", "nodeName"])).into(),
        or_none(str_at(pod, &["status", "nominatedNodeName"])).into(),
        readiness_gates(pod).into(),
    ]
}

fn or_none(s: &str) -> String {
    non_empty(s).unwrap_or("<none>").to_string()
}

/// Upstream reads `status.podIPs[0]`; v1→internal conversion fills `podIPs`
/// from the legacy `podIP` when only that is set.
fn pod_ip(pod: &Value) -> String {
    let ip = items(pod, &["status", "podIPs"])
        .first()
        .map(|p| str_at(p, &["ip"]))
        .unwrap_or_else(|| str_at(pod, &["status", "podIP"]));
    or_none(ip)
}

/// `true/total` over `spec.readinessGates`, matching the first condition of
/// each gate's type.
fn readiness_gates(pod: &Value) -> String {
    let gates = items(pod, &["spec", "readinessGates"]);
    if gates.is_empty() {
        return "<none>".to_string();
    }
    let conditions = items(pod, &["status", "conditions"]);
    let passing = gates
        .iter()
        .filter(|gate| {
            let wanted = str_at(gate, &["conditionType"]);
            conditions
                .iter()
                .find(|c| str_at(c, &["type"]) == wanted)
                .is_some_and(|c| str_at(c, &["status"]) == "True")
        })
        .count();
    format!("{passing}/{}", gates.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    /// READY, STATUS, RESTARTS of a pod.
    fn summary(pod: &Value) -> (String, String, String) {
        let c = cells(pod, now());
        assert_eq!(c.len(), columns().len(), "one cell per column");
        let s = |i: usize| c[i].as_str().unwrap().to_string();
        (s(1), s(2), s(3))
    }

    fn running_pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-7d4b9c6f5-x2x8k", "namespace": "default",
                         "creationTimestamp": "2024-05-01T09:00:00Z"},
            "spec": {"nodeName": "worker-1", "containers": [
                {"name": "nginx", "image": "nginx:1.27"}]},
            "status": {
                "phase": "Running",
                "podIP": "10.244.1.7", "podIPs": [{"ip": "10.244.1.7"}],
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "True"},
                    {"type": "PodScheduled", "status": "True"}
                ],
                "containerStatuses": [{
                    "name": "nginx", "ready": true, "started": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2024-05-01T09:00:05Z"}}
                }]
            }
        })
    }

    #[test]
    fn running_pod_full_row() {
        let row = cells(&running_pod(), now());
        assert_eq!(
            row,
            vec![
                json!("web-7d4b9c6f5-x2x8k"),
                json!("1/1"),
                json!("Running"),
                json!("0"),
                json!("3h"),
                json!("10.244.1.7"),
                json!("worker-1"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
        assert!(conditions(&running_pod()).is_empty());
    }

    #[test]
    fn crash_looping_pod_shows_backoff_and_last_restart() {
        let pod = json!({
            "metadata": {"name": "api", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"containers": [{"name": "api", "image": "api:v2"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [{
                    "name": "api", "ready": false, "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff",
                        "message": "back-off 40s restarting failed container"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                        "finishedAt": "2024-05-01T11:55:00Z"}}
                }]
            }
        });
        assert_eq!(
            summary(&pod),
            ("0/1".into(), "CrashLoopBackOff".into(), "3 (5m ago)".into())
        );
    }

    #[test]
    fn completed_pod_and_its_row_condition() {
        let pod = json!({
            "metadata": {"name": "job-abc"},
            "spec": {"containers": [{"name": "main"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{
                "name": "main", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}
            }]}
        });
        assert_eq!(
            summary(&pod),
            ("0/1".into(), "Completed".into(), "0".into())
        );
        let conds = conditions(&pod);
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].reason, "Succeeded");
        let failed = json!({"status": {"phase": "Failed"}});
        assert_eq!(conditions(&failed)[0].message, "The pod failed.");
    }

    #[test]
    fn pending_and_container_creating() {
        let pending = json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Pending"}});
        assert_eq!(summary(&pending).1, "Pending");
        assert_eq!(summary(&pending).0, "0/2");
        let creating = json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "a", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}}]}});
        assert_eq!(summary(&creating).1, "ContainerCreating");
    }

    #[test]
    fn init_containers_progress_and_failures() {
        let base = |statuses: Value| {
            json!({"metadata": {"name": "p"},
                "spec": {"initContainers": [{"name": "i1"}, {"name": "i2"}],
                         "containers": [{"name": "app"}]},
                "status": {"phase": "Pending", "initContainerStatuses": statuses,
                    "containerStatuses": [{"name": "app", "restartCount": 0,
                        "state": {"waiting": {"reason": "PodInitializing"}}}]}})
        };
        let first_running = base(json!([
            {"name": "i1", "restartCount": 0, "state": {"running": {}}},
            {"name": "i2", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
        ]));
        assert_eq!(summary(&first_running).1, "Init:0/2");
        let second_running = base(json!([
            {"name": "i1", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "i2", "restartCount": 0, "state": {"running": {}}}
        ]));
        assert_eq!(summary(&second_running).1, "Init:1/2");
        let crashing = base(json!([
            {"name": "i1", "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 2, "finishedAt": "2024-05-01T11:59:00Z"}}}
        ]));
        assert_eq!(
            summary(&crashing),
            (
                "0/1".into(),
                "Init:CrashLoopBackOff".into(),
                "4 (60s ago)".into()
            )
        );
        let exit = base(json!([
            {"name": "i1", "restartCount": 0, "state": {"terminated": {"exitCode": 3}}}
        ]));
        assert_eq!(summary(&exit).1, "Init:ExitCode:3");
        let signal = base(json!([
            {"name": "i1", "restartCount": 0, "state": {"terminated": {"exitCode": 137, "signal": 9}}}
        ]));
        assert_eq!(summary(&signal).1, "Init:Signal:9");
    }

    #[test]
    fn sidecar_init_container_counts_as_a_container() {
        let pod = json!({"metadata": {"name": "p"},
            "spec": {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                     "containers": [{"name": "app"}]},
            "status": {"phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"},
                               {"type": "Ready", "status": "True"}],
                "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true,
                    "restartCount": 2, "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T10:00:00Z"}}}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 1,
                    "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:00:00Z"}}}]}});
        assert_eq!(
            summary(&pod),
            ("2/2".into(), "Running".into(), "3 (60m ago)".into())
        );
    }

    #[test]
    fn completed_container_with_another_running_is_running_or_not_ready() {
        let pod = |ready_condition: &str| {
            json!({"metadata": {"name": "p"},
                "spec": {"containers": [{"name": "done"}, {"name": "svc"}]},
                "status": {"phase": "Running",
                    "conditions": [{"type": "Ready", "status": ready_condition}],
                    "containerStatuses": [
                        {"name": "done", "ready": false, "restartCount": 0,
                         "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                        {"name": "svc", "ready": true, "restartCount": 0,
                         "state": {"running": {}}}]}})
        };
        assert_eq!(summary(&pod("True")).1, "Running");
        assert_eq!(summary(&pod("False")).1, "NotReady");
    }

    #[test]
    fn deleted_pods_are_terminating_or_unknown() {
        let mut pod = running_pod();
        pod["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:30Z");
        assert_eq!(summary(&pod).1, "Terminating");
        pod["status"]["reason"] = json!("NodeLost");
        assert_eq!(summary(&pod).1, "Unknown");
        let mut done = json!({"metadata": {"name": "p",
            "deletionTimestamp": "2024-05-01T11:59:30Z"}, "status": {"phase": "Succeeded"}});
        assert_eq!(summary(&done).1, "Succeeded");
        done["status"]["phase"] = json!("Pending");
        assert_eq!(summary(&done).1, "Terminating");
    }

    #[test]
    fn scheduling_gated_and_evicted() {
        let gated = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}});
        assert_eq!(summary(&gated).1, "SchedulingGated");
        let evicted = json!({"metadata": {"name": "p"},
            "status": {"phase": "Failed", "reason": "Evicted"}});
        assert_eq!(summary(&evicted).1, "Evicted");
    }

    #[test]
    fn first_container_reason_wins() {
        let pod = json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "a", "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}},
                {"name": "b", "restartCount": 5, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(
            summary(&pod),
            ("0/2".into(), "ImagePullBackOff".into(), "5".into())
        );
    }

    #[test]
    fn terminated_without_reason_prints_exit_code() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Failed", "containerStatuses": [{"name": "a", "restartCount": 0,
                "state": {"terminated": {"exitCode": 1}}}]}});
        assert_eq!(summary(&pod).1, "ExitCode:1");
    }

    #[test]
    fn restarts_without_known_time_are_a_bare_count() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "a", "restartCount": 2,
                "ready": true, "state": {"running": {}}}]}});
        assert_eq!(summary(&pod).2, "2");
    }

    #[test]
    fn wide_columns_readiness_gates_and_ip_fallback() {
        let pod = json!({"metadata": {"name": "p"},
            "spec": {"readinessGates": [{"conditionType": "example.com/lb"},
                                        {"conditionType": "example.com/dns"}]},
            "status": {"podIP": "10.0.0.9", "nominatedNodeName": "n2",
                "conditions": [{"type": "example.com/lb", "status": "True"},
                               {"type": "example.com/dns", "status": "False"}]}});
        let c = cells(&pod, now());
        assert_eq!(c[5], json!("10.0.0.9"));
        assert_eq!(c[6], json!("<none>"));
        assert_eq!(c[7], json!("n2"));
        assert_eq!(c[8], json!("1/2"));
    }

    #[test]
    fn garbage_pod_does_not_panic() {
        for pod in [
            json!(null),
            json!("pod"),
            json!({"spec": [], "status": {"containerStatuses": "x", "initContainerStatuses": [1, null]}}),
        ] {
            let c = cells(&pod, now());
            assert_eq!(c.len(), columns().len());
        }
    }
}
