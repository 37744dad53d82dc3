//! Printers for the smaller API groups: policy `PodDisruptionBudget`,
//! coordination.k8s.io `Lease`/`LeaseCandidate`, certificates.k8s.io
//! `CertificateSigningRequest`/`ClusterTrustBundle`, scheduling.k8s.io
//! `PriorityClass`, node.k8s.io `RuntimeClass`, apiregistration.k8s.io
//! `APIService` and resource.k8s.io (`DeviceClass`, `ResourceClaim`,
//! `ResourceClaimTemplate`, `ResourceSlice`).
//!
//! Copies the matching `print*` functions of upstream
//! pkg/printers/internalversion/printers.go, and kube-aggregator's
//! `APIService` `ConvertToTable`.
//!
//! Invariants: `None` for any kind not listed, so the caller falls back to
//! the default NAME/CREATED AT convertor as upstream does for built-in
//! kinds without a printer (e.g. apiextensions `CustomResourceDefinition`).

use jiff::Timestamp;
use serde_json::Value;

use super::column::{self, boolean, integer, string, ColumnDefinition};
use super::object::{at, int_at, is_deleting, items, name, opt_int, opt_str, str_at};
use super::{admission, age, CellsFn, ColumnsFn, Printer};

pub(super) fn printer(group: &str, kind: &str) -> Option<Printer> {
    let (columns, cells): (ColumnsFn, CellsFn) = match (group, kind) {
        ("policy", "PodDisruptionBudget") => (pdb_columns, pdb_cells),
        ("coordination.k8s.io", "Lease") => (lease_columns, lease_cells),
        ("coordination.k8s.io", "LeaseCandidate") => (candidate_columns, candidate_cells),
        ("certificates.k8s.io", "CertificateSigningRequest") => (csr_columns, csr_cells),
        ("certificates.k8s.io", "ClusterTrustBundle") => (bundle_columns, bundle_cells),
        ("scheduling.k8s.io", "PriorityClass") => (priority_columns, priority_cells),
        ("node.k8s.io", "RuntimeClass") => (runtime_columns, runtime_cells),
        ("apiregistration.k8s.io", "APIService") => (api_service_columns, api_service_cells),
        ("resource.k8s.io", "DeviceClass" | "ResourceClaimTemplate") => {
            (name_age_columns, name_age_cells)
        }
        ("resource.k8s.io", "ResourceClaim") => (claim_columns, claim_cells),
        ("resource.k8s.io", "ResourceSlice") => (slice_columns, slice_cells),
        ("admissionregistration.k8s.io" | "flowcontrol.apiserver.k8s.io", _) => {
            return admission::printer(kind)
        }
        _ => return None,
    };
    Some(Printer { columns, cells })
}

fn pdb_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string(
            "Min Available",
            "The minimum number of pods that must be available.",
        ),
        string(
            "Max Unavailable",
            "The maximum number of pods that may be unavailable.",
        ),
        integer(
            "Allowed Disruptions",
            "Calculated number of pods that may be disrupted at this time.",
        ),
        column::age(),
    ]
}

/// `intstr.IntOrString.String()`, or `N/A` when unset.
fn int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(n @ Value::Number(_)) => n.to_string(),
        _ => "N/A".to_string(),
    }
}

fn pdb_cells(pdb: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(pdb).into(),
        int_or_string(at(pdb, &["spec", "minAvailable"])).into(),
        int_or_string(at(pdb, &["spec", "maxUnavailable"])).into(),
        int_at(pdb, &["status", "disruptionsAllowed"]).into(),
        age::of_object(pdb, now).into(),
    ]
}

fn lease_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string("Holder", "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field."),
        column::age(),
    ]
}

fn lease_cells(lease: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(lease).into(),
        str_at(lease, &["spec", "holderIdentity"]).into(),
        age::of_object(lease, now).into(),
    ]
}

fn candidate_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string("LeaseName", "LeaseName is the name of the lease for which this candidate is contending. The limits on this field are the same as on Lease.name. Multiple lease candidates may reference the same Lease.name. This field is immutable."),
        string("BinaryVersion", ""),
        string("EmulationVersion", ""),
        column::age(),
    ]
}

fn candidate_cells(c: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(c).into(),
        str_at(c, &["spec", "leaseName"]).into(),
        str_at(c, &["spec", "binaryVersion"]).into(),
        str_at(c, &["spec", "emulationVersion"]).into(),
        age::of_object(c, now).into(),
    ]
}

fn csr_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        column::age(),
        string("SignerName", "Requested signer for the request. It is a qualified name in the form: `scope-hostname.io/name`. If empty, it will be defaulted: 1. If it's a kubelet client certificate, it is assigned \"kubernetes.io/kube-apiserver-client-kubelet\". 2. If it's a kubelet serving certificate, it is assigned \"kubernetes.io/kubelet-serving\". 3. Otherwise, it is assigned \"kubernetes.io/legacy-unknown\". Distribution of trust for signers happens out of band. You can select on this field using `spec.signerName`."),
        string("Requestor", "Base64-encoded PKCS#10 CSR data"),
        string("RequestedDuration", "expirationSeconds is the requested duration of validity of the issued certificate. The certificate signer may issue a certificate with a different validity duration so a client must check the delta between the notBefore and and notAfter fields in the issued certificate to determine the actual duration.\n\nThe v1.22+ in-tree implementations of the well-known Kubernetes signers will honor this field as long as the requested duration is not greater than the maximum duration they will honor per the --cluster-signing-duration CLI flag to the Kubernetes controller manager.\n\nCertificate signers may not honor this field for various reasons:\n\n  1. Old signer that is unaware of the field (such as the in-tree\n     implementations prior to v1.22)\n  2. Signer whose configured maximum is shorter than the requested duration\n  3. Signer whose configured minimum is longer than the requested duration\n\nThe minimum valid value for expirationSeconds is 600, i.e. 10 minutes."),
        string("Condition", "Conditions applied to the request, such as approval or denial."),
    ]
}

/// `extractCSRStatus`: Denied > Approved > Pending, plus Failed/Issued.
fn csr_status(csr: &Value) -> String {
    let conditions = items(csr, &["status", "conditions"]);
    let has = |t: &str| conditions.iter().any(|c| str_at(c, &["type"]) == t);
    let mut status = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        status.push_str(",Failed");
    }
    if !str_at(csr, &["status", "certificate"]).is_empty() {
        status.push_str(",Issued");
    }
    status
}

fn csr_cells(csr: &Value, now: Timestamp) -> Vec<Value> {
    let signer = match str_at(csr, &["spec", "signerName"]) {
        "" => "<none>",
        s => s,
    };
    let requested = match opt_int(csr, &["spec", "expirationSeconds"]) {
        Some(secs) => age::human_duration(jiff::SignedDuration::from_secs(secs)),
        None => "<none>".to_string(),
    };
    vec![
        name(csr).into(),
        age::of_object(csr, now).into(),
        signer.into(),
        str_at(csr, &["spec", "username"]).into(),
        requested.into(),
        csr_status(csr).into(),
    ]
}

fn bundle_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string("SignerName", "signerName indicates the associated signer, if any.\n\nIn order to create or update a ClusterTrustBundle that sets signerName, you must have the following cluster-scoped permission: group=certificates.k8s.io resource=signers resourceName=<the signer name> verb=attest.\n\nIf signerName is not empty, then the ClusterTrustBundle object must be named with the signer name as a prefix (translating slashes to colons). For example, for the signer name `example.com/foo`, valid ClusterTrustBundle object names include `example.com:foo:abc` and `example.com:foo:v1`.\n\nIf signerName is empty, then the ClusterTrustBundle object's name must not have such a prefix.\n\nList/watch requests for ClusterTrustBundles can filter on this field using a `spec.signerName=NAME` field selector."),
    ]
}

fn bundle_cells(bundle: &Value, _now: Timestamp) -> Vec<Value> {
    let signer = match str_at(bundle, &["spec", "signerName"]) {
        "" => "<none>",
        s => s,
    };
    vec![name(bundle).into(), signer.into()]
}

fn priority_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        integer("Value", "value represents the integer value of this priority class. This is the actual priority that pods receive when they have the name of this class in their pod spec."),
        boolean("Global-Default", "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class. Only one PriorityClass can be marked as `globalDefault`. However, if more than one PriorityClasses exists with their `globalDefault` field set to true, the smallest value of such global default PriorityClasses will be used as the default priority."),
        column::age(),
        string("PreemptionPolicy", "preemptionPolicy is the Policy for preempting pods with lower priority. One of Never, PreemptLowerPriority. Defaults to PreemptLowerPriority if unset."),
    ]
}

fn priority_cells(pc: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(pc).into(),
        int_at(pc, &["value"]).into(),
        pc.get("globalDefault")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .into(),
        age::of_object(pc, now).into(),
        opt_str(pc, &["preemptionPolicy"])
            .unwrap_or("PreemptLowerPriority")
            .into(),
    ]
}

fn runtime_columns() -> Vec<ColumnDefinition> {
    vec![column::name(), string("Handler", ""), column::age()]
}

fn runtime_cells(rc: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(rc).into(),
        str_at(rc, &["handler"]).into(),
        age::of_object(rc, now).into(),
    ]
}

fn api_service_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string(
            "Service",
            "The reference to the service that hosts this API endpoint.",
        ),
        string("Available", "Whether this service is available."),
        column::age(),
    ]
}

/// kube-aggregator: `Local` or `ns/name`; the Available condition's status,
/// with its reason in parentheses unless it is `True`.
fn api_service_cells(svc: &Value, now: Timestamp) -> Vec<Value> {
    let service = match at(svc, &["spec", "service"]).filter(|s| s.is_object()) {
        Some(s) => format!("{}/{}", str_at(s, &["namespace"]), str_at(s, &["name"])),
        None => "Local".to_string(),
    };
    let available = match items(svc, &["status", "conditions"])
        .iter()
        .find(|c| str_at(c, &["type"]) == "Available")
    {
        None => "Unknown".to_string(),
        Some(c) => {
            let status = str_at(c, &["status"]);
            let reason = str_at(c, &["reason"]);
            if status == "True" || reason.is_empty() {
                status.to_string()
            } else {
                format!("{status} ({reason})")
            }
        }
    };
    vec![
        name(svc).into(),
        service.into(),
        available.into(),
        age::of_object(svc, now).into(),
    ]
}

fn name_age_columns() -> Vec<ColumnDefinition> {
    vec![column::name(), column::age()]
}

fn name_age_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(obj).into(), age::of_object(obj, now).into()]
}

fn claim_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string(
            "State",
            "A summary of the current state (allocated, pending, reserved, etc.).",
        ),
        column::age(),
    ]
}

/// `resourceClaimState`: deleted / pending / allocated[,reserved].
fn claim_cells(claim: &Value, now: Timestamp) -> Vec<Value> {
    let mut states = Vec::new();
    let deleting = is_deleting(claim);
    if deleting {
        states.push("deleted");
    }
    if at(claim, &["status", "allocation"]).is_some_and(|a| !a.is_null()) {
        states.push("allocated");
        if !items(claim, &["status", "reservedFor"]).is_empty() {
            states.push("reserved");
        }
    } else if !deleting {
        states.push("pending");
    }
    vec![
        name(claim).into(),
        states.join(",").into(),
        age::of_object(claim, now).into(),
    ]
}

fn slice_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string("Node", "NodeName identifies the node which provides the resources in this pool. A field selector can be used to list only ResourceSlice objects belonging to a certain node."),
        string("Driver", "Driver indicates the DRA driver providing the capacity information. A field selector can be used to list only ResourceSlice objects with a certain driver name."),
        string("Pool", "Name is used to identify the pool. For node-local devices, this is often the node name, but this is not required."),
        column::age(),
    ]
}

fn slice_cells(slice: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(slice).into(),
        str_at(slice, &["spec", "nodeName"]).into(),
        str_at(slice, &["spec", "driver"]).into(),
        str_at(slice, &["spec", "pool", "name"]).into(),
        age::of_object(slice, now).into(),
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
    fn pdb_int_or_string() {
        let pdb = json!({"metadata": {"name": "web"}, "spec": {"minAvailable": 2},
            "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            pdb_cells(&pdb, now())[1..4],
            [json!("2"), json!("N/A"), json!(1)]
        );
        let pdb = json!({"spec": {"maxUnavailable": "25%"}});
        assert_eq!(
            pdb_cells(&pdb, now())[1..4],
            [json!("N/A"), json!("25%"), json!(0)]
        );
    }

    #[test]
    fn csr_status_and_duration() {
        let csr = json!({"metadata": {"name": "node-csr-abc"},
            "spec": {"signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "username": "system:bootstrap:abcdef", "expirationSeconds": 86400},
            "status": {"conditions": [{"type": "Approved", "status": "True"}],
                "certificate": "LS0tLS1CRUdJTi..."}});
        assert_eq!(
            csr_cells(&csr, now())[2..],
            [
                json!("kubernetes.io/kube-apiserver-client-kubelet"),
                json!("system:bootstrap:abcdef"),
                json!("24h"),
                json!("Approved,Issued")
            ]
        );
        let denied = json!({"status": {"conditions": [{"type": "Approved"}, {"type": "Denied"},
            {"type": "Failed"}]}});
        assert_eq!(csr_cells(&denied, now())[5], json!("Denied,Failed"));
        assert_eq!(
            csr_cells(&json!({}), now())[2..],
            [
                json!("<none>"),
                json!(""),
                json!("<none>"),
                json!("Pending")
            ]
        );
    }

    #[test]
    fn lease_priority_runtime_apiservice() {
        let lease = json!({"spec": {"holderIdentity": "kube-scheduler-abc"}});
        assert_eq!(lease_cells(&lease, now())[1], json!("kube-scheduler-abc"));
        let pc = json!({"metadata": {"name": "system-node-critical"}, "value": 2000001000});
        assert_eq!(
            priority_cells(&pc, now()),
            vec![
                json!("system-node-critical"),
                json!(2000001000),
                json!(false),
                json!("<unknown>"),
                json!("PreemptLowerPriority")
            ]
        );
        let rc = json!({"metadata": {"name": "gvisor"}, "handler": "runsc"});
        assert_eq!(runtime_cells(&rc, now())[1], json!("runsc"));
        let local = json!({"status": {"conditions": [{"type": "Available", "status": "True",
            "reason": "Local"}]}});
        assert_eq!(
            api_service_cells(&local, now())[1..3],
            [json!("Local"), json!("True")]
        );
        let broken = json!({"spec": {"service": {"namespace": "kube-system", "name": "metrics-server"}},
            "status": {"conditions": [{"type": "Available", "status": "False",
                "reason": "MissingEndpoints"}]}});
        assert_eq!(
            api_service_cells(&broken, now())[1..3],
            [
                json!("kube-system/metrics-server"),
                json!("False (MissingEndpoints)")
            ]
        );
        assert_eq!(api_service_cells(&json!({}), now())[2], json!("Unknown"));
    }

    #[test]
    fn resource_claim_states() {
        let pending = json!({});
        assert_eq!(claim_cells(&pending, now())[1], json!("pending"));
        let reserved = json!({"status": {"allocation": {}, "reservedFor": [{"name": "pod"}]}});
        assert_eq!(
            claim_cells(&reserved, now())[1],
            json!("allocated,reserved")
        );
        let deleted = json!({"metadata": {"deletionTimestamp": "2024-05-01T11:00:00Z"}});
        assert_eq!(claim_cells(&deleted, now())[1], json!("deleted"));
    }
}
