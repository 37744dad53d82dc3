//! Admission end to end: the Pod Security Standards as Cedar policies (baseline by default,
//! restricted and privileged by namespace label, kube-system exempt), `CedarPolicy` objects
//! (validated with the line, loaded within a second), and the built-in plugins
//! (NamespaceLifecycle, ResourceQuota, LimitRanger, ServiceAccount), with the deciding policy
//! ids in the 403 and in the audit line.

mod harness;

use std::time::Duration;

use harness::{eventually, Server};
use serde_json::Value;

fn pod(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}"
    )
}

const PLAIN: &str = "  containers:\n  - name: c\n    image: nginx\n";
const PRIVILEGED: &str =
    "  containers:\n  - name: c\n    image: nginx\n    securityContext:\n      privileged: true\n";
const HOST_NETWORK: &str = "  hostNetwork: true\n  containers:\n  - name: c\n    image: nginx\n";
const RESTRICTED_OK: &str = "  securityContext:\n    runAsNonRoot: true\n    seccompProfile:\n      type: RuntimeDefault\n  containers:\n  - name: c\n    image: nginx\n    securityContext:\n      allowPrivilegeEscalation: false\n      capabilities:\n        drop: [ALL]\n";

fn create_fails(s: &Server, yaml: &str) -> String {
    let out = s.kubectl_in(&["create", "-f", "-"], Some(yaml));
    assert!(
        !out.status.success(),
        "create unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn audit_lines(s: &Server) -> Vec<Value> {
    let text = std::fs::read_to_string(s.data_dir().join("audit/audit.log")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn pod_security_standards_by_namespace() {
    let s = Server::start();
    // baseline everywhere by default.
    let err = create_fails(&s, &pod("priv", "default", PRIVILEGED));
    assert!(
        err.contains("pods \"priv\" is forbidden: violates PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"),
        "{err}"
    );
    assert!(err.contains("pss/baseline/privileged"), "{err}");
    let err = create_fails(&s, &pod("hostnet", "default", HOST_NETWORK));
    assert!(
        err.contains("host namespaces (hostNetwork=true)")
            && err.contains("pss/baseline/host-namespaces"),
        "{err}"
    );
    s.ok_in(&["create", "-f", "-"], &pod("plain", "default", PLAIN));

    // The 403's audit line names the PSS policy.
    assert!(eventually(Duration::from_secs(5), || {
        audit_lines(&s).iter().any(|l| {
            l["objectRef"]["resource"] == "pods"
                && l["responseStatus"]["code"] == 403
                && l["annotations"]["admission.rampart.io/policies"]
                    .as_str()
                    .is_some_and(|p| p.contains("pss/baseline/privileged"))
                && l["policies"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|x| x == "pss/baseline/privileged"))
        })
    }));

    // restricted by label: a root container is refused, a compliant one admitted.
    s.ok(&["create", "namespace", "locked"]);
    s.ok(&[
        "label",
        "namespace",
        "locked",
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let err = create_fails(&s, &pod("root", "locked", PLAIN));
    assert!(
        err.contains("violates PodSecurity \"restricted:latest\"")
            && err.contains("runAsNonRoot != true")
            && err.contains("pss/restricted/run-as-non-root"),
        "{err}"
    );
    s.ok_in(
        &["create", "-f", "-"],
        &pod("compliant", "locked", RESTRICTED_OK),
    );

    // privileged by label, and kube-system: anything goes.
    s.ok(&["create", "namespace", "open"]);
    s.ok(&[
        "label",
        "namespace",
        "open",
        "pod-security.kubernetes.io/enforce=privileged",
    ]);
    s.ok_in(&["create", "-f", "-"], &pod("priv", "open", PRIVILEGED));
    s.ok_in(
        &["create", "-f", "-"],
        &pod("priv", "kube-system", PRIVILEGED),
    );

    // Updates that do not touch the spec (labels) are not re-judged; ones that do are.
    s.ok(&["label", "pod", "plain", "tier=web"]);
}

#[test]
fn cedar_policy_objects() {
    let s = Server::start();
    let bad = "apiVersion: policy.rampart.io/v1alpha1\nkind: CedarPolicy\nmetadata:\n  name: broken\nspec:\n  policy: |\n    forbid (principal, action, resource)\n    when { resource.nosuchattribute == 1 };\n";
    let err = create_fails(&s, bad);
    assert!(
        err.contains("is invalid") && err.contains("CedarPolicy/broken:2"),
        "{err}"
    );
    let syntax = "apiVersion: policy.rampart.io/v1alpha1\nkind: CedarPolicy\nmetadata:\n  name: syntax\nspec:\n  policy: |\n    forbid (principal, action, resource\n";
    let err = create_fails(&s, syntax);
    assert!(err.contains("CedarPolicy/syntax:"), "{err}");

    let registry = r#"apiVersion: policy.rampart.io/v1alpha1
kind: CedarPolicy
metadata:
  name: registries
spec:
  policy: |
    @id("only-registry-example")
    @reason("images must come from registry.example/")
    forbid (principal, action in [k8s::admission::Action::"create", k8s::admission::Action::"update"],
            resource is k8s::admission::Pod)
    unless { resource.images.contains("registry.example/nginx") };
"#;
    s.ok_in(&["create", "-f", "-"], registry);
    let listed = s.json(&["get", "cedarpolicies"]);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let refused = eventually(Duration::from_secs(2), || {
        let out = s.kubectl_in(
            &["create", "-f", "-"],
            Some(&pod("other", "default", PLAIN)),
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        !out.status.success() && err.contains("CedarPolicy/registries/only-registry-example")
    });
    assert!(refused, "the CedarPolicy was not enforced within 2s");
    let err = create_fails(&s, &pod("other", "default", PLAIN));
    assert!(
        err.contains("images must come from registry.example/"),
        "{err}"
    );
    s.ok_in(
        &["create", "-f", "-"],
        &pod(
            "allowed",
            "default",
            "  containers:\n  - name: c\n    image: registry.example/nginx\n",
        ),
    );
    s.ok(&["delete", "cedarpolicy", "registries"]);
    assert!(eventually(Duration::from_secs(2), || s
        .kubectl_in(
            &["create", "-f", "-"],
            Some(&pod("other", "default", PLAIN))
        )
        .status
        .success()));
}

#[test]
fn built_in_admission_plugins() {
    let s = Server::start();
    // NamespaceLifecycle: missing and terminating namespaces.
    let err = create_fails(&s, &pod("p", "nowhere", PLAIN));
    assert!(err.contains("namespaces \"nowhere\" not found"), "{err}");
    s.ok(&["create", "namespace", "dying"]);
    s.ok_in(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: dying\n  finalizers: [example.com/hold]\n",
    );
    s.ok(&["delete", "namespace", "dying", "--wait=false"]);
    let err = create_fails(&s, &pod("p", "dying", PLAIN));
    assert!(
        err.contains("pods \"p\" is forbidden: unable to create new content in namespace dying because it is being terminated"),
        "{err}"
    );

    // ServiceAccount admission: default account filled in, a missing one refused.
    s.ok(&["create", "namespace", "team"]);
    assert!(eventually(Duration::from_secs(10), || s
        .kubectl(&["get", "serviceaccount", "default", "-n", "team"])
        .status
        .success()));
    s.ok_in(&["create", "-f", "-"], &pod("first", "team", PLAIN));
    let first = s.json(&["get", "pod", "first", "-n", "team"]);
    assert_eq!(first["spec"]["serviceAccountName"], "default");
    let err = create_fails(
        &s,
        &pod(
            "ghost",
            "team",
            "  serviceAccountName: ghost\n  containers:\n  - name: c\n    image: nginx\n",
        ),
    );
    assert!(
        err.contains("pods \"ghost\" is forbidden: error looking up service account team/ghost: serviceaccount \"ghost\" not found"),
        "{err}"
    );

    // LimitRanger: defaults applied, max enforced.
    s.ok_in(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: limits\n  namespace: team\nspec:\n  limits:\n  - type: Container\n    default:\n      cpu: 500m\n      memory: 128Mi\n    defaultRequest:\n      cpu: 100m\n    max:\n      cpu: \"1\"\n",
    );
    s.ok_in(&["create", "-f", "-"], &pod("defaulted", "team", PLAIN));
    let p = s.json(&["get", "pod", "defaulted", "-n", "team"]);
    let r = &p["spec"]["containers"][0]["resources"];
    assert_eq!(r["limits"]["cpu"], "500m");
    assert_eq!(r["limits"]["memory"], "128Mi");
    assert_eq!(r["requests"]["cpu"], "100m");
    assert!(p["metadata"]["annotations"]["kubernetes.io/limit-ranger"]
        .as_str()
        .is_some_and(|a| a.starts_with("LimitRanger plugin set:")));
    let err = create_fails(
        &s,
        &pod("big", "team", "  containers:\n  - name: c\n    image: nginx\n    resources:\n      limits:\n        cpu: \"2\"\n"),
    );
    assert!(
        err.contains(
            "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
        ),
        "{err}"
    );

    // ResourceQuota: pods: 1 admits the first pod, refuses the second, and reports usage.
    s.ok(&["create", "namespace", "quota"]);
    s.ok(&["create", "quota", "pods", "--hard=pods=1", "-n", "quota"]);
    assert!(eventually(Duration::from_secs(10), || s
        .kubectl(&["get", "serviceaccount", "default", "-n", "quota"])
        .status
        .success()));
    s.ok_in(&["create", "-f", "-"], &pod("one", "quota", PLAIN));
    let err = create_fails(&s, &pod("two", "quota", PLAIN));
    assert!(
        err.contains("pods \"two\" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=1, limited: pods=1"),
        "{err}"
    );
    assert!(eventually(Duration::from_secs(5), || {
        let q = s.json(&["get", "quota", "pods", "-n", "quota"]);
        q["status"]["used"]["pods"] == "1" && q["status"]["hard"]["pods"] == "1"
    }));
    s.ok(&["delete", "pod", "one", "-n", "quota"]);
    assert!(eventually(Duration::from_secs(5), || s
        .kubectl_in(&["create", "-f", "-"], Some(&pod("two", "quota", PLAIN)))
        .status
        .success()));
}

#[test]
fn pod_security_warn_audit_and_namespace_labels() {
    let s = Server::start();
    s.ok(&["create", "namespace", "warned"]);
    s.ok(&[
        "label",
        "namespace",
        "warned",
        "pod-security.kubernetes.io/warn=restricted",
        "pod-security.kubernetes.io/audit=restricted",
    ]);
    assert!(eventually(Duration::from_secs(10), || s
        .kubectl(&["get", "serviceaccount", "default", "-n", "warned"])
        .status
        .success()));
    // warn: admitted under the enforced baseline, with upstream's warning for restricted.
    let out = s.kubectl_in(&["create", "-f", "-"], Some(&pod("plain", "warned", PLAIN)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Warning: would violate PodSecurity \"restricted:latest\":")
            && err.contains("runAsNonRoot != true"),
        "{err}"
    );
    // A compliant pod gets no warning.
    let out = s.kubectl_in(
        &["create", "-f", "-"],
        Some(&pod("compliant", "warned", RESTRICTED_OK)),
    );
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("PodSecurity"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Workloads' templates are warned about (never enforced).
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: warned\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: c\n        image: nginx\n        securityContext:\n          privileged: true\n";
    let out = s.kubectl_in(&["create", "-f", "-"], Some(deploy));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("would violate PodSecurity \"restricted:latest\"")
            && err.contains(
                "privileged (container \"c\" must not set securityContext.privileged=true)"
            ),
        "{err}"
    );
    // audit: the pod's audit line carries the violations and the enforced policy.
    assert!(eventually(Duration::from_secs(5), || {
        audit_lines(&s).iter().any(|l| {
            l["verb"] == "create"
                && l["objectRef"]["resource"] == "pods"
                && l["objectRef"]["namespace"] == "warned"
                && l["annotations"]["pod-security.kubernetes.io/enforce-policy"]
                    == "baseline:latest"
                && l["annotations"]["pod-security.kubernetes.io/audit-violations"]
                    .as_str()
                    .is_some_and(|v| {
                        v.starts_with("would violate PodSecurity \"restricted:latest\":")
                    })
        })
    }));

    // Labels are validated as upstream's plugin does, and nothing changes.
    let err = s.fails(&[
        "label",
        "namespace",
        "warned",
        "pod-security.kubernetes.io/enforce=strict",
    ]);
    assert!(
        err.contains("Invalid value: \"strict\": must be one of privileged, baseline, restricted"),
        "{err}"
    );
    let ns = s.json(&["get", "namespace", "warned"]);
    assert!(ns["metadata"]["labels"]
        .get("pod-security.kubernetes.io/enforce")
        .is_none());
    let err = create_fails(
        &s,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: badver\n  labels:\n    pod-security.kubernetes.io/enforce-version: \"1.2\"\n",
    );
    assert!(err.contains("must be \"latest\" or \"v1.x\""), "{err}");

    // Tightening enforce names the existing pods the new level would reject.
    let out = s.kubectl(&[
        "label",
        "namespace",
        "warned",
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("existing pods in namespace \"warned\" violate the new PodSecurity enforce level \"restricted:latest\"")
            && err.contains("plain: ")
            && !err.contains("compliant:"),
        "{err}"
    );
}

#[test]
fn service_account_token_volume_limit_ranges_for_claims_and_atomic_quota() {
    let s = Server::start();
    s.ok(&["create", "namespace", "team"]);
    assert!(eventually(Duration::from_secs(10), || s
        .kubectl(&["get", "serviceaccount", "default", "-n", "team"])
        .status
        .success()));
    // ServiceAccount admission mounts upstream's projected token volume...
    s.ok_in(&["create", "-f", "-"], &pod("mounted", "team", PLAIN));
    let p = s.json(&["get", "pod", "mounted", "-n", "team"]);
    let vols = p["spec"]["volumes"].as_array().cloned().unwrap_or_default();
    let vol = vols
        .iter()
        .find(|v| {
            v["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("kube-api-access-"))
        })
        .unwrap_or_else(|| panic!("no token volume: {p}"));
    let sources = vol["projected"]["sources"].as_array().unwrap();
    assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    let mounts = &p["spec"]["containers"][0]["volumeMounts"];
    assert!(
        mounts
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["name"] == vol["name"]
                && m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
                && m["readOnly"] == true)),
        "{mounts}"
    );
    // ...unless the pod opts out.
    s.ok_in(
        &["create", "-f", "-"],
        &pod(
            "unmounted",
            "team",
            "  automountServiceAccountToken: false\n  containers:\n  - name: c\n    image: nginx\n",
        ),
    );
    let p = s.json(&["get", "pod", "unmounted", "-n", "team"]);
    assert!(p["spec"]["volumes"].is_null(), "{p}");

    // LimitRanger bounds PersistentVolumeClaims too.
    s.ok_in(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: storage\n  namespace: team\nspec:\n  limits:\n  - type: PersistentVolumeClaim\n    max:\n      storage: 2Gi\n",
    );
    let claim = |name: &str, size: &str| {
        format!("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\n  namespace: team\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: {size}\n")
    };
    let err = create_fails(&s, &claim("huge", "5Gi"));
    assert!(
        err.contains("persistentvolumeclaims \"huge\" is forbidden: maximum storage usage per PersistentVolumeClaim is 2Gi, but limit is 5Gi"),
        "{err}"
    );
    s.ok_in(&["create", "-f", "-"], &claim("small", "1Gi"));

    // ResourceQuota is charged atomically: of 8 concurrent creates against room for 3,
    // exactly 3 succeed.
    s.ok(&["create", "namespace", "race"]);
    s.ok(&["create", "quota", "svc", "--hard=services=3", "-n", "race"]);
    assert!(eventually(Duration::from_secs(5), || {
        s.json(&["get", "quota", "svc", "-n", "race"])["status"]["used"]["services"] == "0"
    }));
    let results: Vec<(bool, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    let name = format!("s{i}");
                    let out = s.kubectl(&[
                        "create",
                        "service",
                        "clusterip",
                        &name,
                        "--tcp=80:80",
                        "-n",
                        "race",
                    ]);
                    (
                        out.status.success(),
                        String::from_utf8_lossy(&out.stderr).into_owned(),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((false, "thread panicked".into())))
            .collect()
    });
    let admitted = results.iter().filter(|(ok, _)| *ok).count();
    assert_eq!(admitted, 3, "{results:?}");
    for (ok, err) in &results {
        assert!(*ok || err.contains("exceeded quota: svc"), "{err}");
    }
    let listed = s.json(&["get", "services", "-n", "race"]);
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        s.json(&["get", "quota", "svc", "-n", "race"])["status"]["used"]["services"],
        "3"
    );
    // Deleting frees the share again.
    s.ok(&["delete", "service", "-n", "race", "--all"]);
    assert!(eventually(Duration::from_secs(5), || {
        s.json(&["get", "quota", "svc", "-n", "race"])["status"]["used"]["services"] == "0"
    }));
}
