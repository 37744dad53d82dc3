//! Server-side Table output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`).
//!
//! This is what `kubectl get` prints: the server picks the columns and
//! renders every cell, kubectl only lays them out. Upstream Kubernetes is
//! the spec: the per-kind printers copy
//! `pkg/printers/internalversion/printers.go`, kinds without a printer get
//! `rest.NewDefaultTableConvertor` (NAME, CREATED AT), and custom resources
//! get the apiextensions-apiserver `tableconvertor` (NAME plus the CRD's
//! `additionalPrinterColumns`, or NAME, AGE when it has none).
//!
//! Invariants:
//! - `row(g, k, ..).len() == columns(g, k).len()` for every group/kind,
//!   and likewise for [`custom_row`]/[`custom_columns`]: upstream's storage
//!   always renders wide, and clients drop priority>0 columns themselves.
//! - Nothing panics on odd objects: missing or mistyped fields read as Go
//!   zero values, and cells print what upstream prints for those.
//! - Objects are the JSON the API stores (`serde_json::Value`), never typed.
//!
//! Layout: one file per API group (`core`, `pod`, `service`, `event`,
//! `apps`, `batch`, `autoscaling`, `networking`, `rbac`, `storage`,
//! `admission`, `other`), plus `age` (HumanDuration), `jsonpath` (the client-go
//! JSONPath subset), `custom` (CRD printer columns), `object` (zero-value
//! JSON reads and label/selector formatting), `column` and `response`
//! (the Table JSON).

mod admission;
mod age;
mod apps;
mod autoscaling;
mod batch;
mod column;
mod core;
mod custom;
mod event;
mod jsonpath;
mod networking;
mod object;
mod other;
mod pod;
mod rbac;
mod response;
mod service;
mod storage;

use jiff::Timestamp;
use serde_json::Value;

pub use self::age::human_duration;
pub use self::column::ColumnDefinition;
pub use self::custom::{custom_columns, custom_row, PrinterColumn};
pub use self::jsonpath::JsonPath;
pub use self::response::{partial_object_metadata, table, IncludeObject, RowCondition, TableRow};

/// What can go wrong while serving a Table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The `includeObject` query parameter had an unknown value (HTTP 400).
    #[error("unrecognized includeObject value: {0:?}")]
    UnknownIncludeObject(String),
    /// A CRD printer column's `jsonPath` is not valid JSONPath.
    #[error("unrecognized column definition {path:?}: {reason}")]
    InvalidJsonPath { path: String, reason: String },
}

/// Builds a kind's column definitions.
type ColumnsFn = fn() -> Vec<ColumnDefinition>;

/// Renders one object's cells at a given instant.
type CellsFn = fn(&Value, Timestamp) -> Vec<Value>;

/// A kind's printer: its columns and how to fill one row.
///
/// Pairing both in one value is what keeps cells and columns in step.
#[derive(Clone, Copy)]
struct Printer {
    columns: ColumnsFn,
    cells: CellsFn,
}

/// API groups served by the built-in apiserver (as opposed to CRDs).
const BUILT_IN_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

fn printer(group: &str, kind: &str) -> Printer {
    let found = match group {
        "" => pod_printer(kind)
            .or_else(|| self::service::printer(group, kind))
            .or_else(|| self::event::printer(group, kind))
            .or_else(|| self::storage::printer(group, kind))
            .or_else(|| self::core::printer(kind)),
        "apps" => self::apps::printer(kind),
        "batch" => self::batch::printer(kind),
        "autoscaling" => self::autoscaling::printer(kind),
        "discovery.k8s.io" => self::service::printer(group, kind),
        "events.k8s.io" => self::event::printer(group, kind),
        "networking.k8s.io" => self::networking::printer(kind),
        "rbac.authorization.k8s.io" => self::rbac::printer(kind),
        "storage.k8s.io" => self::storage::printer(group, kind),
        _ => self::other::printer(group, kind),
    };
    found.unwrap_or(if BUILT_IN_GROUPS.contains(&group) {
        CREATED_AT
    } else {
        CUSTOM_RESOURCE_DEFAULT
    })
}

fn pod_printer(kind: &str) -> Option<Printer> {
    (kind == "Pod").then_some(Printer {
        columns: self::pod::columns,
        cells: self::pod::cells,
    })
}

/// `rest.NewDefaultTableConvertor`, used by built-in kinds that have no
/// printer (Role, ClusterRole, LimitRange, CustomResourceDefinition, ...).
const CREATED_AT: Printer = Printer {
    columns: created_at_columns,
    cells: created_at_cells,
};

fn created_at_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        ColumnDefinition::new("Created At", "date", column::CREATION_DESCRIPTION),
    ]
}

/// The creation time as `Time.UTC().Format(time.RFC3339)`; Go's zero time
/// when unset.
fn created_at_cells(obj: &Value, _now: Timestamp) -> Vec<Value> {
    let created = age::parse(obj.pointer("/metadata/creationTimestamp"))
        .map(|ts| ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string());
    vec![object::name(obj).into(), created.into()]
}

/// A custom resource whose CRD version declares no printer columns.
const CUSTOM_RESOURCE_DEFAULT: Printer = Printer {
    columns: || custom_columns(&[]),
    cells: |obj, now| custom_row(&[], obj, now),
};

/// The column definitions for a built-in `group`/`kind` (group `""` is
/// core/v1). Unknown built-in kinds get NAME, CREATED AT; kinds in other
/// groups are treated as custom resources without printer columns (NAME,
/// AGE) — call [`custom_columns`] when the CRD declares columns.
pub fn columns(group: &str, kind: &str) -> Vec<ColumnDefinition> {
    (printer(group, kind).columns)()
}

/// The cells of one row for `obj`, aligned with [`columns`] of the same
/// `group`/`kind`. `now` is the instant ages are measured from.
pub fn row(group: &str, kind: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    (printer(group, kind).cells)(obj, now)
}

/// The row conditions upstream attaches (only finished pods have any).
pub fn row_conditions(group: &str, kind: &str, obj: &Value) -> Vec<RowCondition> {
    if group.is_empty() && kind == "Pod" {
        self::pod::conditions(obj)
    } else {
        Vec::new()
    }
}

/// A complete row for a built-in kind: cells, conditions and the object
/// shaped by `include`.
pub fn build_row(
    group: &str,
    kind: &str,
    obj: &Value,
    now: Timestamp,
    include: IncludeObject,
) -> TableRow {
    TableRow::new(row(group, kind, obj, now), obj, include)
        .with_conditions(row_conditions(group, kind, obj))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every kind this module knows, as (group, kind).
    const KINDS: &[(&str, &str)] = &[
        ("", "Pod"),
        ("", "PodTemplate"),
        ("", "ReplicationController"),
        ("", "Service"),
        ("", "Endpoints"),
        ("", "Node"),
        ("", "Event"),
        ("", "Namespace"),
        ("", "Secret"),
        ("", "ServiceAccount"),
        ("", "ConfigMap"),
        ("", "PersistentVolume"),
        ("", "PersistentVolumeClaim"),
        ("", "ResourceQuota"),
        ("", "LimitRange"),
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("apps", "DaemonSet"),
        ("apps", "StatefulSet"),
        ("apps", "ControllerRevision"),
        ("batch", "Job"),
        ("batch", "CronJob"),
        ("autoscaling", "HorizontalPodAutoscaler"),
        ("coordination.k8s.io", "Lease"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("events.k8s.io", "Event"),
        ("networking.k8s.io", "Ingress"),
        ("networking.k8s.io", "IngressClass"),
        ("networking.k8s.io", "NetworkPolicy"),
        ("networking.k8s.io", "ServiceCIDR"),
        ("networking.k8s.io", "IPAddress"),
        ("policy", "PodDisruptionBudget"),
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "RoleBinding"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("certificates.k8s.io", "CertificateSigningRequest"),
        ("storage.k8s.io", "StorageClass"),
        ("storage.k8s.io", "VolumeAttachment"),
        ("storage.k8s.io", "CSIDriver"),
        ("storage.k8s.io", "CSINode"),
        ("storage.k8s.io", "CSIStorageCapacity"),
        ("storage.k8s.io", "VolumeAttributesClass"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("node.k8s.io", "RuntimeClass"),
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration",
        ),
        (
            "admissionregistration.k8s.io",
            "ValidatingWebhookConfiguration",
        ),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
        (
            "admissionregistration.k8s.io",
            "ValidatingAdmissionPolicyBinding",
        ),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        ("apiregistration.k8s.io", "APIService"),
        ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
        ("example.com", "Widget"),
    ];

    fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn cells_always_match_columns_even_for_garbage() {
        let objects = [
            json!({}),
            json!(null),
            json!([1, 2]),
            json!({"metadata": {"name": "x", "creationTimestamp": "2024-05-01T11:00:00Z"}}),
            json!({"metadata": 5, "spec": "s", "status": [], "subsets": {}, "webhooks": 3}),
            json!({"metadata": {"name": 7}, "spec": {"containers": "c", "template": 1,
                   "ports": [null, 1, {"port": "x"}], "rules": [{}], "metrics": [{}, {"type": "Pods"}]},
                   "status": {"conditions": [null], "loadBalancer": {"ingress": [{}]}}}),
        ];
        for (group, kind) in KINDS {
            let cols = columns(group, kind);
            for obj in &objects {
                let cells = row(group, kind, obj, now());
                assert_eq!(cells.len(), cols.len(), "{group}/{kind} on {obj}");
            }
        }
    }

    #[test]
    fn name_column_is_first_except_for_core_events() {
        for (group, kind) in KINDS {
            let cols = columns(group, kind);
            let name_at = cols.iter().position(|c| c.format == "name");
            if (group.is_empty() || *group == "events.k8s.io") && *kind == "Event" {
                assert_eq!(name_at, Some(cols.len() - 1), "{group}/{kind}");
            } else {
                assert_eq!(name_at, Some(0), "{group}/{kind}");
                assert_eq!(cols[0].name, "Name");
            }
        }
    }

    #[test]
    fn kinds_without_printer_use_the_default_convertor() {
        let role = json!({"metadata": {"name": "reader",
            "creationTimestamp": "2024-04-01T08:09:10Z"}});
        for (group, kind) in [
            ("rbac.authorization.k8s.io", "Role"),
            ("rbac.authorization.k8s.io", "ClusterRole"),
            ("", "LimitRange"),
            ("apiextensions.k8s.io", "CustomResourceDefinition"),
        ] {
            let cols = columns(group, kind);
            assert_eq!(cols[1].name, "Created At");
            assert_eq!(cols[1].type_, "date");
            assert_eq!(
                row(group, kind, &role, now()),
                vec![json!("reader"), json!("2024-04-01T08:09:10Z")]
            );
        }
        assert_eq!(
            row("", "LimitRange", &json!({}), now())[1],
            json!("0001-01-01T00:00:00Z")
        );
    }

    #[test]
    fn unknown_groups_are_custom_resources_with_name_and_age() {
        let cols = columns("example.com", "Widget");
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Name", "Age"]);
        assert_eq!(cols[1].type_, "date");
        let obj = json!({"metadata": {"name": "w", "creationTimestamp": "2024-04-29T12:00:00Z"}});
        assert_eq!(
            row("example.com", "Widget", &obj, now()),
            vec![json!("w"), json!("2d")]
        );
    }

    fn header(group: &str, kind: &str) -> Vec<(String, String, i32)> {
        columns(group, kind)
            .into_iter()
            .map(|c| (c.name, c.type_, c.priority))
            .collect()
    }

    fn owned(cols: &[(&str, &str, i32)]) -> Vec<(String, String, i32)> {
        cols.iter()
            .map(|(n, t, p)| (n.to_string(), t.to_string(), *p))
            .collect()
    }

    #[test]
    fn headline_kinds_have_upstream_columns() {
        assert_eq!(
            header("", "Pod"),
            owned(&[
                ("Name", "string", 0),
                ("Ready", "string", 0),
                ("Status", "string", 0),
                ("Restarts", "string", 0),
                ("Age", "string", 0),
                ("IP", "string", 1),
                ("Node", "string", 1),
                ("Nominated Node", "string", 1),
                ("Readiness Gates", "string", 1),
            ])
        );
        assert_eq!(
            header("apps", "Deployment"),
            owned(&[
                ("Name", "string", 0),
                ("Ready", "string", 0),
                ("Up-to-date", "string", 0),
                ("Available", "string", 0),
                ("Age", "string", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ])
        );
        assert_eq!(
            header("batch", "Job"),
            owned(&[
                ("Name", "string", 0),
                ("Status", "string", 0),
                ("Completions", "string", 0),
                ("Duration", "string", 0),
                ("Age", "string", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ])
        );
        let svc: Vec<String> = header("", "Service").into_iter().map(|c| c.0).collect();
        assert_eq!(
            svc,
            [
                "Name",
                "Type",
                "Cluster-IP",
                "External-IP",
                "Port(s)",
                "Age",
                "Selector"
            ]
        );
        let node: Vec<i32> = header("", "Node").into_iter().map(|c| c.2).collect();
        assert_eq!(node, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn kubectl_get_pods_table_end_to_end() {
        let pods = [
            json!({"metadata": {"name": "web-0", "namespace": "default", "resourceVersion": "11",
                    "creationTimestamp": "2024-05-01T11:00:00Z"},
                "spec": {"containers": [{"name": "nginx"}]},
                "status": {"phase": "Running", "containerStatuses": [{"name": "nginx",
                    "ready": true, "restartCount": 0, "state": {"running": {}}}]}}),
            json!({"metadata": {"name": "migrate", "namespace": "default",
                    "creationTimestamp": "2024-05-01T10:00:00Z"},
                "spec": {"containers": [{"name": "m"}]},
                "status": {"phase": "Succeeded", "containerStatuses": [{"name": "m",
                    "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}}),
        ];
        let rows = pods
            .iter()
            .map(|p| build_row("", "Pod", p, now(), IncludeObject::Metadata))
            .collect();
        let t = table(columns("", "Pod"), rows, "42", None, None);
        assert_eq!(t["metadata"], json!({"resourceVersion": "42"}));
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 9);
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["web-0", "1/1", "Running", "0", "60m", "<none>", "<none>", "<none>", "<none>"])
        );
        assert!(t["rows"][0].get("conditions").is_none());
        assert_eq!(t["rows"][0]["object"]["metadata"]["resourceVersion"], "11");
        assert_eq!(t["rows"][1]["cells"][2], "Completed");
        assert_eq!(t["rows"][1]["conditions"][0]["reason"], "Succeeded");
    }

    #[test]
    fn build_row_carries_pod_conditions_and_metadata() {
        let pod = json!({"metadata": {"name": "done"}, "status": {"phase": "Succeeded"}});
        let r = build_row("", "Pod", &pod, now(), IncludeObject::Metadata);
        assert_eq!(r.conditions.len(), 1);
        assert_eq!(r.object["kind"], "PartialObjectMetadata");
        assert_eq!(r.object["metadata"]["name"], "done");
        let svc = build_row("", "Service", &pod, now(), IncludeObject::None);
        assert!(svc.conditions.is_empty());
        assert!(svc.object.is_null());
    }
}
