//! Table of every built-in kind k8s-openapi (feature `v1_37`) knows, mapped
//! to the schemars generator of its Rust type.
//!
//! Invariants: one row per (group, version, kind); `listable` is true exactly
//! when k8s-openapi implements `ListableResource` for the type, i.e. when
//! upstream publishes a `<Kind>List` definition for it. The table was derived
//! from the `impl Resource` blocks of k8s-openapi 0.29 and must be refreshed
//! when that dependency (or its Kubernetes feature) is bumped.

use schemars::{JsonSchema, Schema, SchemaGenerator};

/// A built-in kind and the function that registers its schema (and every
/// schema it references) in a generator, returning a `$ref` to it.
pub(super) struct BuiltinKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub listable: bool,
    pub generate: fn(&mut SchemaGenerator) -> Schema,
}

fn subschema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

macro_rules! builtin_kinds {
    ($(($group:literal, $version:literal, $kind:literal, $($path:ident)::+, $listable:literal),)*) => {
        pub(super) static BUILTIN_KINDS: &[BuiltinKind] = &[$(
            BuiltinKind {
                group: $group,
                version: $version,
                kind: $kind,
                listable: $listable,
                generate: subschema::<k8s_openapi::$($path)::+>,
            },
        )*];
    };
}

builtin_kinds! {
    ("", "v1", "APIGroup", apimachinery::pkg::apis::meta::v1::APIGroup, false),
    ("", "v1", "APIGroupList", apimachinery::pkg::apis::meta::v1::APIGroupList, false),
    ("", "v1", "APIResourceList", apimachinery::pkg::apis::meta::v1::APIResourceList, false),
    ("", "v1", "APIVersions", apimachinery::pkg::apis::meta::v1::APIVersions, false),
    ("", "v1", "Binding", api::core::v1::Binding, false),
    ("", "v1", "ComponentStatus", api::core::v1::ComponentStatus, true),
    ("", "v1", "ConfigMap", api::core::v1::ConfigMap, true),
    ("", "v1", "Endpoints", api::core::v1::Endpoints, true),
    ("", "v1", "Event", api::core::v1::Event, true),
    ("", "v1", "LimitRange", api::core::v1::LimitRange, true),
    ("", "v1", "Namespace", api::core::v1::Namespace, true),
    ("", "v1", "Node", api::core::v1::Node, true),
    ("", "v1", "PersistentVolume", api::core::v1::PersistentVolume, true),
    ("", "v1", "PersistentVolumeClaim", api::core::v1::PersistentVolumeClaim, true),
    ("", "v1", "Pod", api::core::v1::Pod, true),
    ("", "v1", "PodTemplate", api::core::v1::PodTemplate, true),
    ("", "v1", "ReplicationController", api::core::v1::ReplicationController, true),
    ("", "v1", "ResourceQuota", api::core::v1::ResourceQuota, true),
    ("", "v1", "Secret", api::core::v1::Secret, true),
    ("", "v1", "Service", api::core::v1::Service, true),
    ("", "v1", "ServiceAccount", api::core::v1::ServiceAccount, true),
    ("", "v1", "Status", apimachinery::pkg::apis::meta::v1::Status, false),
    ("admissionregistration.k8s.io", "v1", "MutatingAdmissionPolicy", api::admissionregistration::v1::MutatingAdmissionPolicy, true),
    ("admissionregistration.k8s.io", "v1", "MutatingAdmissionPolicyBinding", api::admissionregistration::v1::MutatingAdmissionPolicyBinding, true),
    ("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", api::admissionregistration::v1::MutatingWebhookConfiguration, true),
    ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy", api::admissionregistration::v1::ValidatingAdmissionPolicy, true),
    ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding", api::admissionregistration::v1::ValidatingAdmissionPolicyBinding, true),
    ("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", api::admissionregistration::v1::ValidatingWebhookConfiguration, true),
    ("admissionregistration.k8s.io", "v1alpha1", "MutatingAdmissionPolicy", api::admissionregistration::v1alpha1::MutatingAdmissionPolicy, true),
    ("admissionregistration.k8s.io", "v1alpha1", "MutatingAdmissionPolicyBinding", api::admissionregistration::v1alpha1::MutatingAdmissionPolicyBinding, true),
    ("admissionregistration.k8s.io", "v1beta1", "MutatingAdmissionPolicy", api::admissionregistration::v1beta1::MutatingAdmissionPolicy, true),
    ("admissionregistration.k8s.io", "v1beta1", "MutatingAdmissionPolicyBinding", api::admissionregistration::v1beta1::MutatingAdmissionPolicyBinding, true),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition, true),
    ("apiregistration.k8s.io", "v1", "APIService", kube_aggregator::pkg::apis::apiregistration::v1::APIService, true),
    ("apps", "v1", "ControllerRevision", api::apps::v1::ControllerRevision, true),
    ("apps", "v1", "DaemonSet", api::apps::v1::DaemonSet, true),
    ("apps", "v1", "Deployment", api::apps::v1::Deployment, true),
    ("apps", "v1", "ReplicaSet", api::apps::v1::ReplicaSet, true),
    ("apps", "v1", "StatefulSet", api::apps::v1::StatefulSet, true),
    ("authentication.k8s.io", "v1", "SelfSubjectReview", api::authentication::v1::SelfSubjectReview, false),
    ("authentication.k8s.io", "v1", "TokenRequest", api::authentication::v1::TokenRequest, false),
    ("authentication.k8s.io", "v1", "TokenReview", api::authentication::v1::TokenReview, false),
    ("authorization.k8s.io", "v1", "LocalSubjectAccessReview", api::authorization::v1::LocalSubjectAccessReview, false),
    ("authorization.k8s.io", "v1", "SelfSubjectAccessReview", api::authorization::v1::SelfSubjectAccessReview, false),
    ("authorization.k8s.io", "v1", "SelfSubjectRulesReview", api::authorization::v1::SelfSubjectRulesReview, false),
    ("authorization.k8s.io", "v1", "SubjectAccessReview", api::authorization::v1::SubjectAccessReview, false),
    ("autoscaling", "v1", "HorizontalPodAutoscaler", api::autoscaling::v1::HorizontalPodAutoscaler, true),
    ("autoscaling", "v1", "Scale", api::autoscaling::v1::Scale, false),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", api::autoscaling::v2::HorizontalPodAutoscaler, true),
    ("batch", "v1", "CronJob", api::batch::v1::CronJob, true),
    ("batch", "v1", "Job", api::batch::v1::Job, true),
    ("certificates.k8s.io", "v1", "CertificateSigningRequest", api::certificates::v1::CertificateSigningRequest, true),
    ("certificates.k8s.io", "v1", "ClusterTrustBundle", api::certificates::v1::ClusterTrustBundle, true),
    ("certificates.k8s.io", "v1", "PodCertificateRequest", api::certificates::v1::PodCertificateRequest, true),
    ("certificates.k8s.io", "v1beta1", "ClusterTrustBundle", api::certificates::v1beta1::ClusterTrustBundle, true),
    ("certificates.k8s.io", "v1beta1", "PodCertificateRequest", api::certificates::v1beta1::PodCertificateRequest, true),
    ("coordination.k8s.io", "v1", "Lease", api::coordination::v1::Lease, true),
    ("coordination.k8s.io", "v1alpha2", "LeaseCandidate", api::coordination::v1alpha2::LeaseCandidate, true),
    ("coordination.k8s.io", "v1beta1", "LeaseCandidate", api::coordination::v1beta1::LeaseCandidate, true),
    ("discovery.k8s.io", "v1", "EndpointSlice", api::discovery::v1::EndpointSlice, true),
    ("events.k8s.io", "v1", "Event", api::events::v1::Event, true),
    ("flowcontrol.apiserver.k8s.io", "v1", "FlowSchema", api::flowcontrol::v1::FlowSchema, true),
    ("flowcontrol.apiserver.k8s.io", "v1", "PriorityLevelConfiguration", api::flowcontrol::v1::PriorityLevelConfiguration, true),
    ("internal.apiserver.k8s.io", "v1alpha1", "StorageVersion", api::apiserverinternal::v1alpha1::StorageVersion, true),
    ("lifecycle.k8s.io", "v1alpha1", "Eviction", api::lifecycle::v1alpha1::Eviction, true),
    ("lifecycle.k8s.io", "v1alpha1", "EvictionRequest", api::lifecycle::v1alpha1::EvictionRequest, true),
    ("networking.k8s.io", "v1", "IPAddress", api::networking::v1::IPAddress, true),
    ("networking.k8s.io", "v1", "Ingress", api::networking::v1::Ingress, true),
    ("networking.k8s.io", "v1", "IngressClass", api::networking::v1::IngressClass, true),
    ("networking.k8s.io", "v1", "NetworkPolicy", api::networking::v1::NetworkPolicy, true),
    ("networking.k8s.io", "v1", "ServiceCIDR", api::networking::v1::ServiceCIDR, true),
    ("node.k8s.io", "v1", "RuntimeClass", api::node::v1::RuntimeClass, true),
    ("policy", "v1", "Eviction", api::policy::v1::Eviction, false),
    ("policy", "v1", "PodDisruptionBudget", api::policy::v1::PodDisruptionBudget, true),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", api::rbac::v1::ClusterRole, true),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", api::rbac::v1::ClusterRoleBinding, true),
    ("rbac.authorization.k8s.io", "v1", "Role", api::rbac::v1::Role, true),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", api::rbac::v1::RoleBinding, true),
    ("resource.k8s.io", "v1", "DeviceClass", api::resource::v1::DeviceClass, true),
    ("resource.k8s.io", "v1", "DeviceTaintRule", api::resource::v1::DeviceTaintRule, true),
    ("resource.k8s.io", "v1", "ResourceClaim", api::resource::v1::ResourceClaim, true),
    ("resource.k8s.io", "v1", "ResourceClaimTemplate", api::resource::v1::ResourceClaimTemplate, true),
    ("resource.k8s.io", "v1", "ResourceSlice", api::resource::v1::ResourceSlice, true),
    ("resource.k8s.io", "v1alpha3", "DeviceTaintRule", api::resource::v1alpha3::DeviceTaintRule, true),
    ("resource.k8s.io", "v1alpha3", "ResourcePoolStatusRequest", api::resource::v1alpha3::ResourcePoolStatusRequest, true),
    ("resource.k8s.io", "v1beta1", "DeviceClass", api::resource::v1beta1::DeviceClass, true),
    ("resource.k8s.io", "v1beta1", "ResourceClaim", api::resource::v1beta1::ResourceClaim, true),
    ("resource.k8s.io", "v1beta1", "ResourceClaimTemplate", api::resource::v1beta1::ResourceClaimTemplate, true),
    ("resource.k8s.io", "v1beta1", "ResourceSlice", api::resource::v1beta1::ResourceSlice, true),
    ("resource.k8s.io", "v1beta2", "DeviceClass", api::resource::v1beta2::DeviceClass, true),
    ("resource.k8s.io", "v1beta2", "DeviceTaintRule", api::resource::v1beta2::DeviceTaintRule, true),
    ("resource.k8s.io", "v1beta2", "ResourceClaim", api::resource::v1beta2::ResourceClaim, true),
    ("resource.k8s.io", "v1beta2", "ResourceClaimTemplate", api::resource::v1beta2::ResourceClaimTemplate, true),
    ("resource.k8s.io", "v1beta2", "ResourceSlice", api::resource::v1beta2::ResourceSlice, true),
    ("scheduling.k8s.io", "v1", "PriorityClass", api::scheduling::v1::PriorityClass, true),
    ("scheduling.k8s.io", "v1alpha3", "CompositePodGroup", api::scheduling::v1alpha3::CompositePodGroup, true),
    ("scheduling.k8s.io", "v1alpha3", "PodGroup", api::scheduling::v1alpha3::PodGroup, true),
    ("scheduling.k8s.io", "v1alpha3", "Workload", api::scheduling::v1alpha3::Workload, true),
    ("scheduling.k8s.io", "v1beta1", "PodGroup", api::scheduling::v1beta1::PodGroup, true),
    ("scheduling.k8s.io", "v1beta1", "Workload", api::scheduling::v1beta1::Workload, true),
    ("storage.k8s.io", "v1", "CSIDriver", api::storage::v1::CSIDriver, true),
    ("storage.k8s.io", "v1", "CSINode", api::storage::v1::CSINode, true),
    ("storage.k8s.io", "v1", "CSIStorageCapacity", api::storage::v1::CSIStorageCapacity, true),
    ("storage.k8s.io", "v1", "StorageClass", api::storage::v1::StorageClass, true),
    ("storage.k8s.io", "v1", "VolumeAttachment", api::storage::v1::VolumeAttachment, true),
    ("storage.k8s.io", "v1", "VolumeAttributesClass", api::storage::v1::VolumeAttributesClass, true),
    ("storagemigration.k8s.io", "v1", "StorageVersionMigration", api::storagemigration::v1::StorageVersionMigration, true),
    ("storagemigration.k8s.io", "v1beta1", "StorageVersionMigration", api::storagemigration::v1beta1::StorageVersionMigration, true),
}

/// The built-in kind served as (group, version, kind), if k8s-openapi has it.
pub(super) fn builtin_kind(group: &str, version: &str, kind: &str) -> Option<&'static BuiltinKind> {
    BUILTIN_KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
}
