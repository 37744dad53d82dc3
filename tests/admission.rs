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
