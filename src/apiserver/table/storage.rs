//! Volume printers: core/v1 `PersistentVolume` and `PersistentVolumeClaim`,
//! storage.k8s.io/v1 `StorageClass`, `VolumeAttachment`, `CSIDriver`,
//! `CSINode`, `CSIStorageCapacity` and `VolumeAttributesClass`.
//!
//! Copies upstream `printPersistentVolume`, `printPersistentVolumeClaim`,
//! `printStorageClass`, `printVolumeAttachment`, `printCSIDriver`,
//! `printCSINode`, `printCSIStorageCapacity` and
//! `printVolumeAttributesClass`, with `helper.GetAccessModesAsString` and
//! the beta storage-class annotation taking precedence over
//! `storageClassName` as in `helper.GetPersistentVolume(Claim)Class`.
//!
//! Invariants: quantities print as stored (the apiserver stores them in
//! canonical form); API defaults print when the field is unset, because
//! upstream prints objects defaulted on decode (PV reclaim policy `Retain`,
//! volume mode `Filesystem`, phase `Pending`, StorageClass reclaim policy
//! `Delete` and binding mode `Immediate`, CSI `attachRequired: true` and
//! lifecycle mode `Persistent`).

use jiff::Timestamp;
use serde_json::Value;

use super::column::{self, boolean, integer, string, ColumnDefinition};
use super::object::{annotation, at, is_deleting, items, name, opt_bool, opt_str, str_at};
use super::{age, CellsFn, ColumnsFn, Printer};

pub(super) fn printer(group: &str, kind: &str) -> Option<Printer> {
    let (columns, cells): (ColumnsFn, CellsFn) = match (group, kind) {
        ("", "PersistentVolume") => (pv_columns, pv_cells),
        ("", "PersistentVolumeClaim") => (pvc_columns, pvc_cells),
        ("storage.k8s.io", "StorageClass") => (class_columns, class_cells),
        ("storage.k8s.io", "VolumeAttachment") => (attachment_columns, attachment_cells),
        ("storage.k8s.io", "CSIDriver") => (driver_columns, driver_cells),
        ("storage.k8s.io", "CSINode") => (csi_node_columns, csi_node_cells),
        ("storage.k8s.io", "CSIStorageCapacity") => (capacity_columns, capacity_cells),
        ("storage.k8s.io", "VolumeAttributesClass") => (vac_columns, vac_cells),
        _ => return None,
    };
    Some(Printer { columns, cells })
}

/// `helper.GetAccessModesAsString`: fixed order, duplicates dropped.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| has(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// `Quantity.String()` of a stored quantity; the zero quantity is `0`.
fn storage_quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_string(),
    }
}

/// The storage class: the beta annotation wins over `storageClassName`.
fn storage_class(obj: &Value) -> String {
    annotation(obj, "volume.beta.kubernetes.io/storage-class")
        .unwrap_or_else(|| str_at(obj, &["spec", "storageClassName"]))
        .to_string()
}

/// A string field the API defaults when empty.
fn or_default<'a>(v: &'a str, default: &'a str) -> &'a str {
    if v.is_empty() {
        default
    } else {
        v
    }
}

fn unset_or(v: Option<&str>) -> String {
    v.unwrap_or("<unset>").to_string()
}

fn pv_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string("Capacity", "capacity is the description of the persistent volume's resources and capacity. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#capacity"),
        string("Access Modes", "accessModes contains all ways the volume can be mounted. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes"),
        string("Reclaim Policy", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim. Valid options are Retain (default for manually created PersistentVolumes), Delete (default for dynamically provisioned PersistentVolumes), and Recycle (deprecated). Recycle must be supported by the volume plugin underlying this PersistentVolume. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#reclaiming"),
        string("Status", "phase indicates if a volume is available, bound to a claim, or released by a claim. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#phase"),
        string("Claim", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim. Expected to be non-nil when bound. claim.VolumeName is the authoritative bind between PV and PVC. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#binding"),
        string("StorageClass", "StorageClass of the pv"),
        string("VolumeAttributesClass", "VolumeAttributesClass of the pv"),
        string("Reason", "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI."),
        column::age(),
        string("VolumeMode", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state. Value of Filesystem is implied when not included in spec.").wide(),
    ]
}

fn pv_cells(pv: &Value, now: Timestamp) -> Vec<Value> {
    let claim = match at(pv, &["spec", "claimRef"]).filter(|c| c.is_object()) {
        Some(c) => format!("{}/{}", str_at(c, &["namespace"]), str_at(c, &["name"])),
        None => String::new(),
    };
    let phase = if is_deleting(pv) {
        "Terminating"
    } else {
        or_default(str_at(pv, &["status", "phase"]), "Pending")
    };
    vec![
        name(pv).into(),
        storage_quantity(at(pv, &["spec", "capacity", "storage"])).into(),
        access_modes(items(pv, &["spec", "accessModes"])).into(),
        or_default(
            str_at(pv, &["spec", "persistentVolumeReclaimPolicy"]),
            "Retain",
        )
        .into(),
        phase.into(),
        claim.into(),
        storage_class(pv).into(),
        unset_or(opt_str(pv, &["spec", "volumeAttributesClassName"])).into(),
        str_at(pv, &["status", "reason"]).into(),
        age::of_object(pv, now).into(),
        opt_str(pv, &["spec", "volumeMode"])
            .unwrap_or("Filesystem")
            .into(),
    ]
}

fn pvc_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string("Status", "phase represents the current phase of PersistentVolumeClaim."),
        string("Volume", "volumeName is the binding reference to the PersistentVolume backing this claim."),
        string("Capacity", "capacity represents the actual resources of the underlying volume."),
        string("Access Modes", "accessModes contains the actual access modes the volume backing the PVC has. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes-1"),
        string("StorageClass", "StorageClass of the pvc"),
        string("VolumeAttributesClass", "VolumeAttributesClass of the pvc"),
        column::age(),
        string("VolumeMode", "volumeMode defines what type of volume is required by the claim. Value of Filesystem is implied when not included in claim spec.").wide(),
    ]
}

fn pvc_cells(pvc: &Value, now: Timestamp) -> Vec<Value> {
    let phase = if is_deleting(pvc) {
        "Terminating"
    } else {
        or_default(str_at(pvc, &["status", "phase"]), "Pending")
    };
    let volume = str_at(pvc, &["spec", "volumeName"]);
    // Capacity and access modes are only meaningful once bound.
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            storage_quantity(at(pvc, &["status", "capacity", "storage"])),
            access_modes(items(pvc, &["status", "accessModes"])),
        )
    };
    vec![
        name(pvc).into(),
        phase.into(),
        volume.into(),
        capacity.into(),
        modes.into(),
        storage_class(pvc).into(),
        unset_or(opt_str(pvc, &["spec", "volumeAttributesClassName"])).into(),
        age::of_object(pvc, now).into(),
        opt_str(pvc, &["spec", "volumeMode"])
            .unwrap_or("Filesystem")
            .into(),
    ]
}

fn class_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string("Provisioner", "provisioner indicates the type of the provisioner."),
        string("ReclaimPolicy", "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete."),
        string("VolumeBindingMode", "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  When unset, VolumeBindingImmediate is used. This field is only honored by servers that enable the VolumeScheduling feature."),
        string("AllowVolumeExpansion", "allowVolumeExpansion shows whether the storage class allow volume expand."),
        column::age(),
    ]
}

/// `storageutil.IsDefaultAnnotation`: GA or beta annotation set to "true".
fn is_default_class(obj: &Value, ga: &str, beta: &str) -> bool {
    annotation(obj, ga) == Some("true") || annotation(obj, beta) == Some("true")
}

fn class_cells(sc: &Value, now: Timestamp) -> Vec<Value> {
    let mut display = name(sc).to_string();
    if is_default_class(
        sc,
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ) {
        display.push_str(" (default)");
    }
    vec![
        display.into(),
        str_at(sc, &["provisioner"]).into(),
        opt_str(sc, &["reclaimPolicy"]).unwrap_or("Delete").into(),
        opt_str(sc, &["volumeBindingMode"])
            .unwrap_or("Immediate")
            .into(),
        opt_bool(sc, &["allowVolumeExpansion"])
            .unwrap_or(false)
            .into(),
        age::of_object(sc, now).into(),
    ]
}

fn vac_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string(
            "DriverName",
            "Name of the CSI driver This field is immutable.",
        ),
        column::age(),
    ]
}

fn vac_cells(vac: &Value, now: Timestamp) -> Vec<Value> {
    let mut display = name(vac).to_string();
    if is_default_class(
        vac,
        "storage.kubernetes.io/is-default-class",
        "storage.beta.kubernetes.io/is-default-class",
    ) {
        display.push_str(" (default)");
    }
    vec![
        display.into(),
        str_at(vac, &["driverName"]).into(),
        age::of_object(vac, now).into(),
    ]
}

fn attachment_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        // Upstream marks this column as a name column too.
        string("Attacher", "attacher indicates the name of the volume driver that MUST handle this request. This is the name returned by GetPluginName().").format("name"),
        string("PV", "persistentVolumeName represents the name of the persistent volume to attach."),
        string("Node", "nodeName represents the node that the volume should be attached to."),
        boolean("Attached", "attached indicates the volume is successfully attached. This field must only be set by the entity completing the attach operation, i.e. the external-attacher."),
        column::age(),
    ]
}

fn attachment_cells(va: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(va).into(),
        str_at(va, &["spec", "attacher"]).into(),
        str_at(va, &["spec", "source", "persistentVolumeName"]).into(),
        str_at(va, &["spec", "nodeName"]).into(),
        opt_bool(va, &["status", "attached"])
            .unwrap_or(false)
            .into(),
        age::of_object(va, now).into(),
    ]
}

fn driver_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        boolean("AttachRequired", "attachRequired indicates this CSI volume driver requires an attach operation (because it implements the CSI ControllerPublishVolume() method), and that the Kubernetes attach detach controller should call the attach volume interface which checks the volumeattachment status and waits until the volume is attached before proceeding to mounting. The CSI external-attacher coordinates with CSI volume driver and updates the volumeattachment status when the attach operation is complete. If the value is specified to false, the attach operation will be skipped. Otherwise the attach operation will be called.\n\nThis field is immutable."),
        boolean("PodInfoOnMount", "podInfoOnMount indicates this CSI volume driver requires additional pod information (like podName, podUID, etc.) during mount operations, if set to true. If set to false, pod information will not be passed on mount. Default is false."),
        boolean("StorageCapacity", "storageCapacity indicates that the CSI volume driver wants pod scheduling to consider the storage capacity that the driver deployment will report by creating CSIStorageCapacity objects with capacity information, if set to true."),
        string("TokenRequests", "tokenRequests indicates the CSI driver needs pods' service account tokens it is mounting volume for to do necessary authentication."),
        boolean("RequiresRepublish", "requiresRepublish indicates the CSI driver wants `NodePublishVolume` being periodically called to reflect any possible change in the mounted volume. This field defaults to false."),
        string("Modes", "volumeLifecycleModes defines what kind of volumes this CSI volume driver supports. The default if the list is empty is \"Persistent\", which is the usage defined by the CSI specification and implemented in Kubernetes via the usual PV/PVC mechanism."),
        column::age(),
    ]
}

fn driver_cells(driver: &Value, now: Timestamp) -> Vec<Value> {
    let spec_bool =
        |field: &str, default: bool| opt_bool(driver, &["spec", field]).unwrap_or(default);
    let modes: Vec<&str> = items(driver, &["spec", "volumeLifecycleModes"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let modes = if modes.is_empty() {
        "Persistent".to_string()
    } else {
        modes.join(",")
    };
    let token_requests = match at(driver, &["spec", "tokenRequests"]).and_then(Value::as_array) {
        Some(requests) => requests
            .iter()
            .map(|r| str_at(r, &["audience"]))
            .collect::<Vec<_>>()
            .join(","),
        None => "<unset>".to_string(),
    };
    vec![
        name(driver).into(),
        spec_bool("attachRequired", true).into(),
        spec_bool("podInfoOnMount", false).into(),
        spec_bool("storageCapacity", false).into(),
        token_requests.into(),
        spec_bool("requiresRepublish", false).into(),
        modes.into(),
        age::of_object(driver, now).into(),
    ]
}

fn csi_node_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        integer(
            "Drivers",
            "Drivers indicates the number of CSI drivers registered on the node",
        ),
        column::age(),
    ]
}

fn csi_node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(node).into(),
        (items(node, &["spec", "drivers"]).len() as i64).into(),
        age::of_object(node, now).into(),
    ]
}

fn capacity_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string("StorageClassName", "storageClassName represents the name of the StorageClass that the reported capacity applies to. It must meet the same requirements as the name of a StorageClass object (non-empty, DNS subdomain). If that object no longer exists, the CSIStorageCapacity object is obsolete and should be removed by its creator. This field is immutable."),
        string("Capacity", "capacity is the value reported by the CSI driver in its GetCapacityResponse for a GetCapacityRequest with topology and parameters that match the previous fields.\n\nThe semantic is currently (CSI spec 1.2) defined as: The available capacity, in bytes, of the storage that can be used to provision volumes. If not set, that information is currently unavailable."),
    ]
}

fn capacity_cells(cap: &Value, _now: Timestamp) -> Vec<Value> {
    let capacity = match at(cap, &["capacity"]) {
        Some(v @ (Value::String(_) | Value::Number(_))) => storage_quantity(Some(v)),
        _ => "<unset>".to_string(),
    };
    vec![
        name(cap).into(),
        str_at(cap, &["storageClassName"]).into(),
        capacity.into(),
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
    fn bound_pv_and_pvc() {
        let pv = json!({"metadata": {"name": "pvc-1234", "creationTimestamp": "2024-05-01T10:00:00Z"},
            "spec": {"capacity": {"storage": "10Gi"},
                "accessModes": ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "standard",
                "claimRef": {"namespace": "db", "name": "data-0"}, "volumeMode": "Filesystem"},
            "status": {"phase": "Bound"}});
        assert_eq!(
            pv_cells(&pv, now()),
            vec![
                json!("pvc-1234"),
                json!("10Gi"),
                json!("RWO,RWX"),
                json!("Delete"),
                json!("Bound"),
                json!("db/data-0"),
                json!("standard"),
                json!("<unset>"),
                json!(""),
                json!("120m"),
                json!("Filesystem"),
            ]
        );
        let pvc = json!({"metadata": {"name": "data-0",
                "annotations": {"volume.beta.kubernetes.io/storage-class": "legacy"}},
            "spec": {"volumeName": "pvc-1234", "storageClassName": "standard",
                "resources": {"requests": {"storage": "5Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadWriteOnce"]}});
        let c = pvc_cells(&pvc, now());
        assert_eq!(
            c[1..7],
            [
                json!("Bound"),
                json!("pvc-1234"),
                json!("10Gi"),
                json!("RWO"),
                json!("legacy"),
                json!("<unset>")
            ]
        );
    }

    #[test]
    fn pending_pvc_hides_capacity_and_deleting_pv_terminates() {
        let pvc = json!({"spec": {"storageClassName": "fast"},
            "status": {"phase": "Pending", "capacity": {"storage": "1Gi"}}});
        let c = pvc_cells(&pvc, now());
        assert_eq!(c[3], json!(""));
        assert_eq!(c[4], json!(""));
        let pv = json!({"metadata": {"deletionTimestamp": "2024-05-01T11:00:00Z"},
            "status": {"phase": "Released"}});
        let c = pv_cells(&pv, now());
        assert_eq!(c[1], json!("0"));
        assert_eq!(c[4], json!("Terminating"));
    }

    #[test]
    fn default_storage_class_and_defaults() {
        let sc = json!({"metadata": {"name": "standard",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
        assert_eq!(
            class_cells(&sc, now())[..5],
            [
                json!("standard (default)"),
                json!("rancher.io/local-path"),
                json!("Delete"),
                json!("WaitForFirstConsumer"),
                json!(false)
            ]
        );
    }

    #[test]
    fn csi_driver_defaults() {
        let d = json!({"metadata": {"name": "ebs.csi.aws.com"},
            "spec": {"attachRequired": false, "tokenRequests": [{"audience": "sts"}, {"audience": ""}]}});
        assert_eq!(
            driver_cells(&d, now())[..7],
            [
                json!("ebs.csi.aws.com"),
                json!(false),
                json!(false),
                json!(false),
                json!("sts,"),
                json!(false),
                json!("Persistent")
            ]
        );
        let plain = driver_cells(&json!({}), now());
        assert_eq!(plain[1], json!(true));
        assert_eq!(plain[4], json!("<unset>"));
    }

    #[test]
    fn attachment_node_and_capacity() {
        let va = json!({"metadata": {"name": "csi-1"}, "spec": {"attacher": "ebs",
            "nodeName": "n1", "source": {"persistentVolumeName": "pv1"}},
            "status": {"attached": true}});
        assert_eq!(
            attachment_cells(&va, now())[1..5],
            [json!("ebs"), json!("pv1"), json!("n1"), json!(true)]
        );
        let node = json!({"spec": {"drivers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(csi_node_cells(&node, now())[1], json!(2));
        assert_eq!(
            capacity_cells(&json!({"storageClassName": "s"}), now())[2],
            json!("<unset>")
        );
    }
}
