//! Typed decoding of built-in kinds through `k8s-openapi`, the way upstream decodes a body into
//! its Go struct: a value of the wrong type is a 400, and fields the type does not know are
//! dropped — and reported, so `fieldValidation=Strict` can refuse them and `Warn` can warn.
//!
//! The stored form of a built-in object is its round trip through the typed struct, so nothing
//! unknown or mistyped is ever persisted.

use serde_json::Value;

use k8s_openapi::api as k8s;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;

macro_rules! kinds {
    ($($group:literal $kind:literal => $ty:ty),* $(,)?) => {
        /// Round-trip `obj` through the typed struct for `(group, kind)`; `None` for kinds
        /// without one (custom resources).
        fn round_trip(group: &str, kind: &str, obj: &Value) -> Option<Result<Value, String>> {
            match (group, kind) {
                $(($group, $kind) => Some(
                    serde_json::from_value::<$ty>(obj.clone())
                        .map_err(|e| e.to_string())
                        .and_then(|t| serde_json::to_value(&t).map_err(|e| e.to_string())),
                ),)*
                _ => None,
            }
        }
    };
}

kinds! {
    "" "Namespace" => k8s::core::v1::Namespace,
    "" "Pod" => k8s::core::v1::Pod,
    "" "Service" => k8s::core::v1::Service,
    "" "Endpoints" => k8s::core::v1::Endpoints,
    "" "ConfigMap" => k8s::core::v1::ConfigMap,
    "" "Secret" => k8s::core::v1::Secret,
    "" "ServiceAccount" => k8s::core::v1::ServiceAccount,
    "" "Node" => k8s::core::v1::Node,
    "" "Event" => k8s::core::v1::Event,
    "" "LimitRange" => k8s::core::v1::LimitRange,
    "" "ResourceQuota" => k8s::core::v1::ResourceQuota,
    "" "PersistentVolume" => k8s::core::v1::PersistentVolume,
    "" "PersistentVolumeClaim" => k8s::core::v1::PersistentVolumeClaim,
    "" "ReplicationController" => k8s::core::v1::ReplicationController,
    "" "PodTemplate" => k8s::core::v1::PodTemplate,
    "" "Binding" => k8s::core::v1::Binding,
    "apps" "Deployment" => k8s::apps::v1::Deployment,
    "apps" "ReplicaSet" => k8s::apps::v1::ReplicaSet,
    "apps" "DaemonSet" => k8s::apps::v1::DaemonSet,
    "apps" "StatefulSet" => k8s::apps::v1::StatefulSet,
    "apps" "ControllerRevision" => k8s::apps::v1::ControllerRevision,
    "batch" "Job" => k8s::batch::v1::Job,
    "batch" "CronJob" => k8s::batch::v1::CronJob,
    "autoscaling" "HorizontalPodAutoscaler" => k8s::autoscaling::v2::HorizontalPodAutoscaler,
    "coordination.k8s.io" "Lease" => k8s::coordination::v1::Lease,
    "discovery.k8s.io" "EndpointSlice" => k8s::discovery::v1::EndpointSlice,
    "events.k8s.io" "Event" => k8s::events::v1::Event,
    "networking.k8s.io" "Ingress" => k8s::networking::v1::Ingress,
    "networking.k8s.io" "IngressClass" => k8s::networking::v1::IngressClass,
    "networking.k8s.io" "NetworkPolicy" => k8s::networking::v1::NetworkPolicy,
    "networking.k8s.io" "IPAddress" => k8s::networking::v1::IPAddress,
    "networking.k8s.io" "ServiceCIDR" => k8s::networking::v1::ServiceCIDR,
    "policy" "PodDisruptionBudget" => k8s::policy::v1::PodDisruptionBudget,
    "rbac.authorization.k8s.io" "Role" => k8s::rbac::v1::Role,
    "rbac.authorization.k8s.io" "RoleBinding" => k8s::rbac::v1::RoleBinding,
    "rbac.authorization.k8s.io" "ClusterRole" => k8s::rbac::v1::ClusterRole,
    "rbac.authorization.k8s.io" "ClusterRoleBinding" => k8s::rbac::v1::ClusterRoleBinding,
    "certificates.k8s.io" "CertificateSigningRequest" => k8s::certificates::v1::CertificateSigningRequest,
    "storage.k8s.io" "StorageClass" => k8s::storage::v1::StorageClass,
    "storage.k8s.io" "VolumeAttachment" => k8s::storage::v1::VolumeAttachment,
    "storage.k8s.io" "CSIDriver" => k8s::storage::v1::CSIDriver,
    "storage.k8s.io" "CSINode" => k8s::storage::v1::CSINode,
    "storage.k8s.io" "CSIStorageCapacity" => k8s::storage::v1::CSIStorageCapacity,
    "scheduling.k8s.io" "PriorityClass" => k8s::scheduling::v1::PriorityClass,
    "admissionregistration.k8s.io" "MutatingWebhookConfiguration" => k8s::admissionregistration::v1::MutatingWebhookConfiguration,
    "admissionregistration.k8s.io" "ValidatingWebhookConfiguration" => k8s::admissionregistration::v1::ValidatingWebhookConfiguration,
    "admissionregistration.k8s.io" "ValidatingAdmissionPolicy" => k8s::admissionregistration::v1::ValidatingAdmissionPolicy,
    "admissionregistration.k8s.io" "ValidatingAdmissionPolicyBinding" => k8s::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
    "apiextensions.k8s.io" "CustomResourceDefinition" => apiext::CustomResourceDefinition,
}

/// The outcome of decoding a built-in object.
pub struct Decoded {
    /// The object as the typed struct sees it (unknown fields gone).
    pub object: Value,
    /// Paths of fields the type does not know, like upstream's strict decoding errors.
    pub unknown: Vec<String>,
}

/// Decode `obj` as `(group, kind)`. `Ok(None)` for kinds without a typed struct.
pub fn decode(group: &str, kind: &str, obj: &Value) -> Result<Option<Decoded>, String> {
    // The one built-in kind served in two shapes of one group (autoscaling/v1 is a view of
    // the stored v2): decoded as the version the body names.
    let v1_hpa = (group, kind) == ("autoscaling", "HorizontalPodAutoscaler")
        && obj.get("apiVersion").and_then(Value::as_str) == Some("autoscaling/v1");
    let result = if v1_hpa {
        Some(
            serde_json::from_value::<k8s::autoscaling::v1::HorizontalPodAutoscaler>(obj.clone())
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::to_value(&t).map_err(|e| e.to_string())),
        )
    } else {
        round_trip(group, kind, obj)
    };
    let Some(result) = result else {
        return Ok(None);
    };
    let object = result?;
    let mut unknown = Vec::new();
    diff_unknown(obj, &object, "", &mut unknown);
    Ok(Some(Decoded { object, unknown }))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Fields present (and non-null) in `input` but absent from the typed round trip.
fn diff_unknown(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(tv) => diff_unknown(v, tv, &join(path, k), out),
                    None if v.is_null() || is_empty(v) => {}
                    // Free-form maps (labels, data, annotations) round-trip whole, so a
                    // missing key here really is unknown to the type.
                    None => out.push(join(path, k)),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                diff_unknown(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_found_and_dropped() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "b"}, "bogus": 1},
            "spec": {"containers": [{"name": "c", "image": "busybox", "colour": "red"}]}
        });
        let d = decode("", "Pod", &pod).unwrap().unwrap();
        assert_eq!(
            d.unknown,
            vec!["metadata.bogus", "spec.containers[0].colour"]
        );
        assert!(d.object["spec"]["containers"][0].get("colour").is_none());
        assert_eq!(d.object["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn wrong_types_are_errors() {
        let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": "three", "selector": {}, "template": {}}});
        assert!(decode("apps", "Deployment", &bad).is_err());
        assert!(decode("example.com", "Widget", &bad).unwrap().is_none());
    }
}
