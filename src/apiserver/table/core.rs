//! Printers for the remaining core/v1 kinds: `Namespace`, `ConfigMap`,
//! `Secret`, `ServiceAccount`, `ResourceQuota`, `ReplicationController`,
//! `PodTemplate` and `Node`.
//!
//! Copies the matching `print*` functions of upstream
//! pkg/printers/internalversion/printers.go. Pods, services/endpoints,
//! events and volumes live in their own files. `LimitRange` has no printer
//! upstream and falls through to the default NAME/CREATED AT convertor.
//!
//! Invariants: fields the API defaults (namespace phase `Active`, secret
//! type `Opaque`, RC replicas `1`) print their defaulted value when unset,
//! because upstream prints objects that were defaulted on decode.

use jiff::Timestamp;
use serde_json::Value;

use super::column::{self, integer, string, ColumnDefinition};
use super::object::{
    at, container_cells, format_labels, int_at, items, map_at, map_len, name, opt_bool,
    replicas_or_default, str_at,
};
use super::{age, CellsFn, ColumnsFn, Printer};

pub(super) fn printer(kind: &str) -> Option<Printer> {
    let (columns, cells): (ColumnsFn, CellsFn) = match kind {
        "Namespace" => (namespace_columns, namespace_cells),
        "ConfigMap" => (config_map_columns, config_map_cells),
        "Secret" => (secret_columns, secret_cells),
        "ServiceAccount" => (service_account_columns, service_account_cells),
        "ResourceQuota" => (quota_columns, quota_cells),
        "ReplicationController" => (rc_columns, rc_cells),
        "PodTemplate" => (pod_template_columns, pod_template_cells),
        "Node" => (node_columns, node_cells),
        _ => return None,
    };
    Some(Printer { columns, cells })
}

fn namespace_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string("Status", "The status of the namespace"),
        column::age(),
    ]
}

fn namespace_cells(ns: &Value, now: Timestamp) -> Vec<Value> {
    let phase = match str_at(ns, &["status", "phase"]) {
        "" => "Active",
        phase => phase,
    };
    vec![
        name(ns).into(),
        phase.into(),
        age::of_object(ns, now).into(),
    ]
}

fn config_map_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string(
            "Data",
            "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.",
        ),
        column::age(),
    ]
}

fn config_map_cells(cm: &Value, now: Timestamp) -> Vec<Value> {
    let count = map_len(cm, &["data"]) + map_len(cm, &["binaryData"]);
    vec![
        name(cm).into(),
        count.into(),
        age::of_object(cm, now).into(),
    ]
}

fn secret_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string(
            "Type",
            "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
        ),
        string(
            "Data",
            "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4",
        ),
        column::age(),
    ]
}

fn secret_cells(secret: &Value, now: Timestamp) -> Vec<Value> {
    let type_ = match str_at(secret, &["type"]) {
        "" => "Opaque",
        t => t,
    };
    vec![
        name(secret).into(),
        type_.into(),
        map_len(secret, &["data"]).into(),
        age::of_object(secret, now).into(),
    ]
}

fn service_account_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string(
            "Secrets",
            "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret",
        ),
        column::age(),
    ]
}

fn service_account_cells(sa: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(sa).into(),
        (items(sa, &["secrets"]).len() as i64).into(),
        age::of_object(sa, now).into(),
    ]
}

fn quota_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string(
            "Request",
            "Request represents a minimum amount of cpu/memory that a container may consume.",
        ),
        string(
            "Limit",
            "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
        ),
        column::age(),
    ]
}

/// A quantity as stored; a missing one is the zero quantity, printed `0`.
fn quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_string(),
    }
}

/// `printResourceQuota`: `resource: used/hard` sorted by resource name,
/// `limits.*` resources in LIMIT, everything else in REQUEST.
fn quota_cells(quota: &Value, now: Timestamp) -> Vec<Value> {
    let hard = map_at(quota, &["status", "hard"]);
    let used = map_at(quota, &["status", "used"]);
    let mut resources: Vec<&String> = hard.map(|h| h.keys().collect()).unwrap_or_default();
    resources.sort();
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    for resource in resources {
        let entry = format!(
            "{resource}: {}/{}",
            quantity(used.and_then(|u| u.get(resource))),
            quantity(hard.and_then(|h| h.get(resource))),
        );
        let mut pieces = resource.split('.');
        let is_limit = pieces.next() == Some("limits") && pieces.next().is_some();
        if is_limit {
            limits.push(entry);
        } else {
            requests.push(entry);
        }
    }
    vec![
        name(quota).into(),
        requests.join(", ").into(),
        limits.join(", ").into(),
        age::of_object(quota, now).into(),
    ]
}

fn rc_columns() -> Vec<ColumnDefinition> {
    let [containers, images] = column::containers_images();
    vec![
        column::name(),
        integer(
            "Desired",
            "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller#what-is-a-replicationcontroller",
        ),
        integer(
            "Current",
            "Replicas is the most recently observed number of replicas. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller#what-is-a-replicationcontroller",
        ),
        integer(
            "Ready",
            "The number of ready replicas for this replication controller.",
        ),
        column::age(),
        containers,
        images,
        string(
            "Selector",
            "Selector is a label query over pods that should match the Replicas count. If Selector is empty, it is defaulted to the labels present on the Pod template. Label keys and values that must match in order to be controlled by this replication controller, if empty defaulted to labels on Pod template. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
        )
        .wide(),
    ]
}

fn rc_cells(rc: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(at(rc, &["spec", "template", "spec"]));
    vec![
        name(rc).into(),
        replicas_or_default(rc).into(),
        int_at(rc, &["status", "replicas"]).into(),
        int_at(rc, &["status", "readyReplicas"]).into(),
        age::of_object(rc, now).into(),
        names.into(),
        images.into(),
        format_labels(at(rc, &["spec", "selector"])).into(),
    ]
}

fn pod_template_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string("Containers", column::CONTAINERS_DESCRIPTION),
        string("Images", column::IMAGES_DESCRIPTION),
        string("Pod Labels", "The labels for the pod template."),
    ]
}

fn pod_template_cells(pt: &Value, _now: Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(at(pt, &["template", "spec"]));
    vec![
        name(pt).into(),
        names.into(),
        images.into(),
        format_labels(at(pt, &["template", "metadata", "labels"])).into(),
    ]
}

fn node_columns() -> Vec<ColumnDefinition> {
    let addresses = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";
    vec![
        column::name(),
        string("Status", "The status of the node"),
        string("Roles", "The roles of the node"),
        column::age(),
        string("Version", "Kubelet Version reported by the node."),
        string("Internal-IP", addresses).wide(),
        string("External-IP", addresses).wide(),
        string(
            "OS-Image",
            "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
        )
        .wide(),
        string(
            "Kernel-Version",
            "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
        )
        .wide(),
        string(
            "Container-Runtime",
            "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
        )
        .wide(),
    ]
}

/// `findNodeRoles`: `node-role.kubernetes.io/<role>` keys and the legacy
/// `kubernetes.io/role=<role>` label, de-duplicated and sorted.
fn node_roles(node: &Value) -> String {
    let mut roles: Vec<&str> = map_at(node, &["metadata", "labels"])
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| {
                    if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                        Some(role).filter(|r| !r.is_empty())
                    } else if k == "kubernetes.io/role" {
                        v.as_str().filter(|r| !r.is_empty())
                    } else {
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort_unstable();
    roles.dedup();
    if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    }
}

/// `Ready`/`NotReady`/`Unknown` from the last `Ready` condition, plus
/// `SchedulingDisabled` for cordoned nodes.
fn node_status(node: &Value) -> String {
    // Upstream builds a map keyed by type, so the last Ready condition wins.
    let ready = items(node, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| str_at(c, &["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(c) if str_at(c, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if opt_bool(node, &["spec", "unschedulable"]) == Some(true) {
        status.push("SchedulingDisabled");
    }
    status.join(",")
}

fn node_address(node: &Value, type_: &str) -> String {
    items(node, &["status", "addresses"])
        .iter()
        .find(|a| str_at(a, &["type"]) == type_)
        .map_or("<none>", |a| str_at(a, &["address"]))
        .to_string()
}

fn node_info_or_unknown(node: &Value, field: &str) -> String {
    match str_at(node, &["status", "nodeInfo", field]) {
        "" => "<unknown>".to_string(),
        v => v.to_string(),
    }
}

fn node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(node).into(),
        node_status(node).into(),
        node_roles(node).into(),
        age::of_object(node, now).into(),
        str_at(node, &["status", "nodeInfo", "kubeletVersion"]).into(),
        node_address(node, "InternalIP").into(),
        node_address(node, "ExternalIP").into(),
        node_info_or_unknown(node, "osImage").into(),
        node_info_or_unknown(node, "kernelVersion").into(),
        node_info_or_unknown(node, "containerRuntimeVersion").into(),
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
    fn control_plane_node_with_roles() {
        let node = json!({
            "metadata": {"name": "cp-1", "creationTimestamp": "2024-03-01T12:00:00Z",
                "labels": {"node-role.kubernetes.io/control-plane": "",
                           "node-role.kubernetes.io/etcd": "",
                           "kubernetes.io/role": "master",
                           "kubernetes.io/hostname": "cp-1"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"},
                               {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "192.168.1.10"},
                              {"type": "Hostname", "address": "cp-1"}],
                "nodeInfo": {"kubeletVersion": "v1.37.0", "osImage": "Ubuntu 24.04 LTS",
                             "kernelVersion": "6.8.0-31-generic",
                             "containerRuntimeVersion": "containerd://2.0.0"}
            }
        });
        assert_eq!(
            node_cells(&node, now()),
            vec![
                json!("cp-1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,etcd,master"),
                json!("61d"),
                json!("v1.37.0"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Ubuntu 24.04 LTS"),
                json!("6.8.0-31-generic"),
                json!("containerd://2.0.0"),
            ]
        );
    }

    #[test]
    fn bare_node_is_unknown() {
        let c = node_cells(&json!({"metadata": {"name": "n"}}), now());
        assert_eq!(c[1], json!("Unknown"));
        assert_eq!(c[2], json!("<none>"));
        assert_eq!(c[7], json!("<unknown>"));
        let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(node_cells(&not_ready, now())[1], json!("NotReady"));
    }

    #[test]
    fn data_counts_and_defaults() {
        let cm = json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"},
            "binaryData": {"c": "AA=="}});
        assert_eq!(config_map_cells(&cm, now())[1], json!(3));
        let secret = json!({"metadata": {"name": "s"}, "data": {"k": "dg=="}});
        assert_eq!(
            secret_cells(&secret, now())[1..3],
            [json!("Opaque"), json!(1)]
        );
        let tls = json!({"type": "kubernetes.io/tls"});
        assert_eq!(
            secret_cells(&tls, now())[1..3],
            [json!("kubernetes.io/tls"), json!(0)]
        );
        let sa = json!({"secrets": [{"name": "t"}]});
        assert_eq!(service_account_cells(&sa, now())[1], json!(1));
        let ns = json!({"status": {"phase": "Terminating"}});
        assert_eq!(namespace_cells(&ns, now())[1], json!("Terminating"));
        assert_eq!(namespace_cells(&json!({}), now())[1], json!("Active"));
    }

    #[test]
    fn resource_quota_splits_requests_and_limits() {
        let quota = json!({"metadata": {"name": "compute"}, "status": {
            "hard": {"requests.cpu": "4", "limits.memory": "8Gi", "pods": "10", "limits.cpu": "8"},
            "used": {"requests.cpu": "500m", "limits.memory": "1Gi", "pods": "3"}}});
        let c = quota_cells(&quota, now());
        assert_eq!(c[1], json!("pods: 3/10, requests.cpu: 500m/4"));
        assert_eq!(c[2], json!("limits.cpu: 0/8, limits.memory: 1Gi/8Gi"));
    }

    #[test]
    fn replication_controller_and_pod_template() {
        let rc = json!({"metadata": {"name": "rc"},
            "spec": {"selector": {"app": "web"},
                "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1}});
        assert_eq!(
            rc_cells(&rc, now()),
            vec![
                json!("rc"),
                json!(1),
                json!(2),
                json!(1),
                json!("<unknown>"),
                json!("web"),
                json!("nginx"),
                json!("app=web"),
            ]
        );
        let pt = json!({"metadata": {"name": "pt"}, "template": {
            "metadata": {"labels": {"run": "x"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}});
        assert_eq!(
            pod_template_cells(&pt, now()),
            vec![json!("pt"), json!("c"), json!("busybox"), json!("run=x")]
        );
    }
}
