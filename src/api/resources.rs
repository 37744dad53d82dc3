//! The built-in resource table: every group/version/resource the API server serves, with the
//! names, scope, verbs, short names, categories and subresources upstream's discovery reports
//! (so `kubectl get po`, `kubectl get all` and `kubectl api-resources` match a real cluster).

/// One served resource. Built-ins are `'static`; custom resources are built at run time from
/// their CRDs with the same shape (see [`ResourceInfo::owned`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub list_kind: String,
    /// The URL segment: `pods`, `deployments`.
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub verbs: Vec<String>,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub subresources: Vec<String>,
}

impl ResourceInfo {
    /// `apps/v1` or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps` or `pods`: how upstream names a resource in messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.iter().any(|s| s == sub)
    }

    pub fn has_verb(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn owned(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        singular: &str,
        namespaced: bool,
        verbs: &[&str],
        short_names: &[&str],
        categories: &[&str],
        subresources: &[&str],
    ) -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        ResourceInfo {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            list_kind: format!("{kind}List"),
            plural: plural.into(),
            singular: singular.into(),
            namespaced,
            verbs: s(verbs),
            short_names: s(short_names),
            categories: s(categories),
            subresources: s(subresources),
        }
    }
}

/// The verbs of an ordinary stored resource.
pub const CRUD: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const CREATE_ONLY: &[&str] = &["create"];
/// Read-only, not watchable: `metrics.k8s.io` (as metrics-server serves it).
const GET_LIST: &[&str] = &["get", "list"];

const NS: bool = true;
const CLUSTER: bool = false;

/// (group, version, kind, plural, namespaced, short names, categories, subresources, verbs)
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

#[rustfmt::skip]
const BUILTIN: &[Row] = &[
    ("", "v1", "Namespace", "namespaces", CLUSTER, &["ns"], NONE, &["status", "finalize"], CRUD),
    ("", "v1", "Pod", "pods", NS, &["po"], ALL, &["status", "binding", "eviction", "log", "exec", "attach", "portforward", "ephemeralcontainers"], CRUD),
    ("", "v1", "Service", "services", NS, &["svc"], ALL, &["status", "proxy"], CRUD),
    ("", "v1", "Endpoints", "endpoints", NS, &["ep"], NONE, NONE, CRUD),
    ("", "v1", "ConfigMap", "configmaps", NS, &["cm"], NONE, NONE, CRUD),
    ("", "v1", "Secret", "secrets", NS, NONE, NONE, NONE, CRUD),
    ("", "v1", "ServiceAccount", "serviceaccounts", NS, &["sa"], NONE, &["token"], CRUD),
    ("", "v1", "Node", "nodes", CLUSTER, &["no"], NONE, &["status", "proxy"], CRUD),
    ("", "v1", "Event", "events", NS, &["ev"], NONE, NONE, CRUD),
    ("", "v1", "LimitRange", "limitranges", NS, &["limits"], NONE, NONE, CRUD),
    ("", "v1", "ResourceQuota", "resourcequotas", NS, &["quota"], NONE, &["status"], CRUD),
    ("", "v1", "PersistentVolume", "persistentvolumes", CLUSTER, &["pv"], NONE, &["status"], CRUD),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", NS, &["pvc"], NONE, &["status"], CRUD),
    ("", "v1", "ReplicationController", "replicationcontrollers", NS, &["rc"], ALL, &["status", "scale"], CRUD),
    ("", "v1", "PodTemplate", "podtemplates", NS, NONE, NONE, NONE, CRUD),
    ("", "v1", "Binding", "bindings", NS, NONE, NONE, NONE, CREATE_ONLY),
    ("apps", "v1", "Deployment", "deployments", NS, &["deploy"], ALL, &["status", "scale"], CRUD),
    ("apps", "v1", "ReplicaSet", "replicasets", NS, &["rs"], ALL, &["status", "scale"], CRUD),
    ("apps", "v1", "DaemonSet", "daemonsets", NS, &["ds"], ALL, &["status"], CRUD),
    ("apps", "v1", "StatefulSet", "statefulsets", NS, &["sts"], ALL, &["status", "scale"], CRUD),
    ("apps", "v1", "ControllerRevision", "controllerrevisions", NS, NONE, NONE, NONE, CRUD),
    ("batch", "v1", "Job", "jobs", NS, NONE, ALL, &["status"], CRUD),
    ("batch", "v1", "CronJob", "cronjobs", NS, &["cj"], ALL, &["status"], CRUD),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", NS, &["hpa"], ALL, &["status"], CRUD),
    // Served as a view of the stored v2 object (`apiserver::conversion::hpa`); after v2, so
    // v2 stays the preferred version.
    ("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", NS, &["hpa"], ALL, &["status"], CRUD),
    ("coordination.k8s.io", "v1", "Lease", "leases", NS, NONE, NONE, NONE, CRUD),
    ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", NS, NONE, NONE, NONE, CRUD),
    ("events.k8s.io", "v1", "Event", "events", NS, &["ev"], NONE, NONE, CRUD),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", NS, &["ing"], NONE, &["status"], CRUD),
    ("networking.k8s.io", "v1", "IngressClass", "ingressclasses", CLUSTER, NONE, NONE, NONE, CRUD),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", NS, &["netpol"], NONE, NONE, CRUD),
    ("networking.k8s.io", "v1", "IPAddress", "ipaddresses", CLUSTER, &["ip"], NONE, NONE, CRUD),
    ("networking.k8s.io", "v1", "ServiceCIDR", "servicecidrs", CLUSTER, NONE, NONE, &["status"], CRUD),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", NS, &["pdb"], NONE, &["status"], CRUD),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", NS, NONE, NONE, NONE, CRUD),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", NS, NONE, NONE, NONE, CRUD),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", CLUSTER, NONE, NONE, NONE, CRUD),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", CLUSTER, NONE, NONE, NONE, CRUD),
    ("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests", CLUSTER, &["csr"], NONE, &["status", "approval"], CRUD),
    ("storage.k8s.io", "v1", "StorageClass", "storageclasses", CLUSTER, &["sc"], NONE, NONE, CRUD),
    ("storage.k8s.io", "v1", "VolumeAttachment", "volumeattachments", CLUSTER, NONE, NONE, &["status"], CRUD),
    ("storage.k8s.io", "v1", "CSIDriver", "csidrivers", CLUSTER, NONE, NONE, NONE, CRUD),
    ("storage.k8s.io", "v1", "CSINode", "csinodes", CLUSTER, NONE, NONE, NONE, CRUD),
    ("storage.k8s.io", "v1", "CSIStorageCapacity", "csistoragecapacities", NS, NONE, NONE, NONE, CRUD),
    ("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", CLUSTER, &["pc"], NONE, NONE, CRUD),
    ("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", CLUSTER, NONE, &["api-extensions"], NONE, CRUD),
    ("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", CLUSTER, NONE, &["api-extensions"], NONE, CRUD),
    ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", CLUSTER, NONE, &["api-extensions"], &["status"], CRUD),
    ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings", CLUSTER, NONE, &["api-extensions"], NONE, CRUD),
    ("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", CLUSTER, NONE, NONE, NONE, CREATE_ONLY),
    ("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", CLUSTER, NONE, NONE, NONE, CREATE_ONLY),
    ("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", CLUSTER, NONE, NONE, NONE, CREATE_ONLY),
    ("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", CLUSTER, NONE, NONE, NONE, CREATE_ONLY),
    ("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews", NS, NONE, NONE, NONE, CREATE_ONLY),
    ("metrics.k8s.io", "v1beta1", "NodeMetrics", "nodes", CLUSTER, NONE, NONE, NONE, GET_LIST),
    ("metrics.k8s.io", "v1beta1", "PodMetrics", "pods", NS, NONE, NONE, NONE, GET_LIST),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", CLUSTER, &["crd", "crds"], &["api-extensions"], &["status"], CRUD),
    ("apiregistration.k8s.io", "v1", "APIService", "apiservices", CLUSTER, NONE, &["api-extensions"], &["status"], CRUD),
    // Rampart's own: users' Cedar admission policies (spec.policy), see apiserver::admission.
    ("policy.rampart.io", "v1alpha1", "CedarPolicy", "cedarpolicies", CLUSTER, NONE, NONE, NONE, CRUD),
];

/// Every built-in resource, in a stable order (the order discovery lists them).
pub fn builtin() -> &'static [ResourceInfo] {
    static TABLE: std::sync::OnceLock<Vec<ResourceInfo>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        BUILTIN
            .iter()
            .map(
                |&(g, v, kind, plural, namespaced, short, cats, subs, verbs)| {
                    ResourceInfo::owned(
                        g,
                        v,
                        kind,
                        plural,
                        &kind.to_ascii_lowercase(),
                        namespaced,
                        verbs,
                        short,
                        cats,
                        subs,
                    )
                },
            )
            .collect()
    })
}

/// The group versions served, preferred first within a group, groups in discovery order.
pub fn builtin_group_versions() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in builtin() {
        let gv = (r.group.clone(), r.version.clone());
        if !out.contains(&gv) {
            out.push(gv);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_are_unique_per_group_version_and_kinds_well_formed() {
        // A resource may be served in several versions of its group (autoscaling v1 and v2,
        // one stored form), never twice in one version.
        let mut seen = std::collections::HashSet::new();
        for r in builtin() {
            assert!(
                seen.insert((r.group.clone(), r.version.clone(), r.plural.clone())),
                "{}",
                r.plural
            );
            assert!(r
                .kind
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_uppercase()));
            assert_eq!(r.list_kind, format!("{}List", r.kind));
        }
        let pods = builtin().iter().find(|r| r.plural == "pods").unwrap();
        assert!(pods.namespaced && pods.has_subresource("status") && pods.has_verb("watch"));
        assert_eq!(pods.api_version(), "v1");
    }
}
