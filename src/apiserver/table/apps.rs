//! apps/v1 printers: `Deployment`, `ReplicaSet`, `DaemonSet`,
//! `StatefulSet` and `ControllerRevision`.
//!
//! Copies upstream `printDeployment`, `printReplicaSet`, `printDaemonSet`,
//! `printStatefulSet` and `printControllerRevision`.
//!
//! Invariants: an unset `spec.replicas` prints as 1 (API default); the
//! Deployment SELECTOR cell is the raw selector string (`""` when empty,
//! `<invalid>` when it does not parse) while the other workloads use
//! `FormatLabelSelector` (`<none>`/`<error>`), as upstream does.

use jiff::Timestamp;
use serde_json::Value;

use super::column::{self, integer, string, ColumnDefinition};
use super::object::{
    as_int, at, container_cells, format_label_selector, format_labels, int_at, items,
    label_selector, name, replicas_or_default, str_at,
};
use super::{age, CellsFn, ColumnsFn, Printer};

pub(super) fn printer(kind: &str) -> Option<Printer> {
    let (columns, cells): (ColumnsFn, CellsFn) = match kind {
        "Deployment" => (deployment_columns, deployment_cells),
        "ReplicaSet" => (replica_set_columns, replica_set_cells),
        "DaemonSet" => (daemon_set_columns, daemon_set_cells),
        "StatefulSet" => (stateful_set_columns, stateful_set_cells),
        "ControllerRevision" => (revision_columns, revision_cells),
        _ => return None,
    };
    Some(Printer { columns, cells })
}

const SELECTOR_DESCRIPTION: &str = "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.";

fn template_spec(obj: &Value) -> Option<&Value> {
    at(obj, &["spec", "template", "spec"])
}

fn deployment_columns() -> Vec<ColumnDefinition> {
    let [containers, images] = column::containers_images();
    vec![
        column::name(),
        string("Ready", "Number of the pod with ready state"),
        string("Up-to-date", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
        string("Available", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
        column::age(),
        containers,
        images,
        string("Selector", SELECTOR_DESCRIPTION).wide(),
    ]
}

fn deployment_cells(d: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(template_spec(d));
    let selector =
        label_selector(at(d, &["spec", "selector"])).unwrap_or_else(|()| "<invalid>".to_string());
    vec![
        name(d).into(),
        format!(
            "{}/{}",
            int_at(d, &["status", "readyReplicas"]),
            replicas_or_default(d)
        )
        .into(),
        int_at(d, &["status", "updatedReplicas"]).into(),
        int_at(d, &["status", "availableReplicas"]).into(),
        age::of_object(d, now).into(),
        names.into(),
        images.into(),
        selector.into(),
    ]
}

fn replica_set_columns() -> Vec<ColumnDefinition> {
    let [containers, images] = column::containers_images();
    vec![
        column::name(),
        integer("Desired", "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/#what-is-a-replicationcontroller"),
        integer("Current", "Replicas is the most recently observed number of replicas. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/#what-is-a-replicationcontroller"),
        integer("Ready", "The number of ready replicas for this replica set."),
        column::age(),
        containers,
        images,
        string("Selector", "Selector is a label query over pods that should match the replica count. If the selector is empty, it is defaulted to the labels present on the pod template. Label keys and values that must match in order to be controlled by this replica set. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors").wide(),
    ]
}

fn replica_set_cells(rs: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(template_spec(rs));
    vec![
        name(rs).into(),
        replicas_or_default(rs).into(),
        int_at(rs, &["status", "replicas"]).into(),
        int_at(rs, &["status", "readyReplicas"]).into(),
        age::of_object(rs, now).into(),
        names.into(),
        images.into(),
        format_label_selector(at(rs, &["spec", "selector"])).into(),
    ]
}

fn daemon_set_columns() -> Vec<ColumnDefinition> {
    let [containers, images] = column::containers_images();
    vec![
        column::name(),
        integer("Desired", "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/"),
        integer("Current", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/"),
        integer("Ready", "Total number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition by passing the readinessProbe."),
        integer("Up-to-date", "The total number of nodes that are running updated daemon pod"),
        integer("Available", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)"),
        string("Node Selector", "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/"),
        column::age(),
        containers,
        images,
        string("Selector", "A label query over pods that are managed by the daemon set. Must match in order to be controlled. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors").wide(),
    ]
}

fn daemon_set_cells(ds: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(template_spec(ds));
    let status = |field: &str| int_at(ds, &["status", field]);
    vec![
        name(ds).into(),
        status("desiredNumberScheduled").into(),
        status("currentNumberScheduled").into(),
        status("numberReady").into(),
        status("updatedNumberScheduled").into(),
        status("numberAvailable").into(),
        format_labels(at(ds, &["spec", "template", "spec", "nodeSelector"])).into(),
        age::of_object(ds, now).into(),
        names.into(),
        images.into(),
        format_label_selector(at(ds, &["spec", "selector"])).into(),
    ]
}

fn stateful_set_columns() -> Vec<ColumnDefinition> {
    let [containers, images] = column::containers_images();
    vec![
        column::name(),
        string("Ready", "Number of the pod with ready state"),
        column::age(),
        containers,
        images,
    ]
}

fn stateful_set_cells(sts: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(template_spec(sts));
    vec![
        name(sts).into(),
        format!(
            "{}/{}",
            int_at(sts, &["status", "readyReplicas"]),
            replicas_or_default(sts)
        )
        .into(),
        age::of_object(sts, now).into(),
        names.into(),
        images.into(),
    ]
}

fn revision_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string("Controller", "Controller of the object"),
        string(
            "Revision",
            "Revision indicates the revision of the state represented by Data.",
        ),
        column::age(),
    ]
}

/// `metav1.GetControllerOf` rendered as `kind.group/name` in lower case
/// (`daemonset.apps/fluentd`), or `<none>`.
fn controller_of(obj: &Value) -> String {
    let Some(owner) = items(obj, &["metadata", "ownerReferences"])
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
    else {
        return "<none>".to_string();
    };
    let api_version = str_at(owner, &["apiVersion"]);
    // schema.ParseGroupVersion: "v1" is the core group, "g/v" has group g.
    let group = match api_version.split_once('/') {
        Some((group, _)) => group,
        None => "",
    };
    let kind = str_at(owner, &["kind"]);
    let owner_name = str_at(owner, &["name"]);
    let group_kind = match (kind, group) {
        ("", "") => return owner_name.to_string(),
        (kind, "") => kind.to_string(),
        (kind, group) => format!("{kind}.{group}"),
    };
    format!("{}/{owner_name}", group_kind.to_lowercase())
}

fn revision_cells(rev: &Value, now: Timestamp) -> Vec<Value> {
    let revision = rev.get("revision").and_then(as_int).unwrap_or(0);
    vec![
        name(rev).into(),
        controller_of(rev).into(),
        revision.into(),
        age::of_object(rev, now).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    fn deployment_mid_rollout() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "creationTimestamp": "2024-04-30T12:00:00Z"},
            "spec": {
                "replicas": 5,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [
                        {"name": "nginx", "image": "nginx:1.27"},
                        {"name": "exporter", "image": "nginx-exporter:1.1"}]}}
            },
            "status": {"replicas": 6, "updatedReplicas": 2, "readyReplicas": 4,
                       "availableReplicas": 4, "unavailableReplicas": 2}
        })
    }

    #[test]
    fn deployment_mid_rollout_row() {
        assert_eq!(
            deployment_cells(&deployment_mid_rollout(), now()),
            vec![
                json!("web"),
                json!("4/5"),
                json!(2),
                json!(4),
                json!("24h"),
                json!("nginx,exporter"),
                json!("nginx:1.27,nginx-exporter:1.1"),
                json!("app=web"),
            ]
        );
    }

    #[test]
    fn deployment_selector_edge_cases() {
        let mut d = deployment_mid_rollout();
        d["spec"]["selector"] = json!({});
        assert_eq!(deployment_cells(&d, now())[7], json!(""));
        d["spec"]["selector"] = json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]});
        assert_eq!(deployment_cells(&d, now())[7], json!("<invalid>"));
        let fresh = json!({"metadata": {"name": "new"}});
        assert_eq!(deployment_cells(&fresh, now())[1], json!("0/1"));
    }

    #[test]
    fn replica_set_daemon_set_stateful_set() {
        let rs = json!({"metadata": {"name": "web-5d"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d"}}},
            "status": {"replicas": 3, "readyReplicas": 2}});
        assert_eq!(
            replica_set_cells(&rs, now())[1..4],
            [json!(3), json!(3), json!(2)]
        );
        assert_eq!(
            replica_set_cells(&rs, now())[7],
            json!("app=web,pod-template-hash=5d")
        );
        let ds = json!({"metadata": {"name": "fluentd"},
            "spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3,
                "numberReady": 2, "updatedNumberScheduled": 1, "numberAvailable": 2}});
        let c = daemon_set_cells(&ds, now());
        assert_eq!(
            c[1..7],
            [
                json!(3),
                json!(3),
                json!(2),
                json!(1),
                json!(2),
                json!("kubernetes.io/os=linux")
            ]
        );
        assert_eq!(c[10], json!("<none>"));
        let sts = json!({"metadata": {"name": "db"}, "spec": {"replicas": 3},
            "status": {"readyReplicas": 1}});
        assert_eq!(stateful_set_cells(&sts, now())[1], json!("1/3"));
    }

    #[test]
    fn controller_revision_owner() {
        let rev = json!({"metadata": {"name": "fluentd-7b9", "ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": "other"},
                {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "fluentd", "controller": true}]},
            "revision": 4});
        assert_eq!(
            revision_cells(&rev, now())[..3],
            [
                json!("fluentd-7b9"),
                json!("daemonset.apps/fluentd"),
                json!(4)
            ]
        );
        assert_eq!(revision_cells(&json!({}), now())[1], json!("<none>"));
    }
}
