//! `kube-system/extension-apiserver-authentication` and who may read it: upstream's bootstrap
//! Role `extension-apiserver-authentication-reader` (get/list/watch on that one ConfigMap)
//! and its RoleBinding for the controller manager and the scheduler. An extension API server
//! (metrics-server, say) binds its own service account to the Role and then reads the
//! ConfigMap to learn whom to trust; nothing else in kube-system becomes readable.

mod harness;

use std::time::Duration;

use harness::{eventually, Server};

const CM: &str = "configmap/extension-apiserver-authentication";

/// kubectl's answer: `yes`, or `no` followed by the reason (`no - no policy permits it`).
fn can_i(s: &Server, args: &[&str]) -> String {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let o = s.kubectl(&all);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn a_bound_service_account_reads_the_authentication_configmap_and_nothing_else() {
    let s = Server::start();
    // The defaults exist, with upstream's rule and subjects.
    let role = s.ok(&[
        "get",
        "role",
        "-n",
        "kube-system",
        "extension-apiserver-authentication-reader",
        "-o",
        "jsonpath={.rules[0].resources[0]}/{.rules[0].resourceNames[0]}/{.rules[0].verbs}",
    ]);
    assert_eq!(
        role.trim(),
        "configmaps/extension-apiserver-authentication/[\"get\",\"list\",\"watch\"]"
    );
    let binding = s.ok(&[
        "get",
        "rolebinding",
        "-n",
        "kube-system",
        "system::extension-apiserver-authentication-reader",
        "-o",
        "jsonpath={.roleRef.kind}/{.roleRef.name} {.subjects[*].name}",
    ]);
    assert_eq!(
        binding.trim(),
        "Role/extension-apiserver-authentication-reader system:kube-controller-manager system:kube-scheduler"
    );
    let scheduler = "--as=system:kube-scheduler";
    assert_eq!(
        can_i(&s, &["get", CM, "-n", "kube-system", scheduler]),
        "yes"
    );

    // An extension server's account: nothing before the binding, the one ConfigMap after.
    let sa = "--as=system:serviceaccount:ext:metrics";
    s.ok(&["create", "namespace", "ext"]);
    s.ok(&["create", "serviceaccount", "-n", "ext", "metrics"]);
    assert!(can_i(&s, &["get", CM, "-n", "kube-system", sa]).starts_with("no"));
    s.ok(&[
        "create",
        "rolebinding",
        "-n",
        "kube-system",
        "metrics-auth-reader",
        "--role=extension-apiserver-authentication-reader",
        "--serviceaccount=ext:metrics",
    ]);
    assert!(
        eventually(Duration::from_secs(10), || can_i(
            &s,
            &["get", CM, "-n", "kube-system", sa]
        ) == "yes"),
        "the binding never took effect"
    );
    assert_eq!(can_i(&s, &["watch", CM, "-n", "kube-system", sa]), "yes");
    assert!(can_i(
        &s,
        &["get", "configmap/kube-root-ca.crt", "-n", "kube-system", sa]
    )
    .starts_with("no"));
    assert!(can_i(&s, &["update", CM, "-n", "kube-system", sa]).starts_with("no"));

    // The read itself, as that account: the trust data extension servers need.
    let ca = s.ok(&[
        "get",
        CM,
        "-n",
        "kube-system",
        sa,
        "-o",
        "jsonpath={.data.client-ca-file}",
    ]);
    assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");
    let names = s.ok(&[
        "get",
        CM,
        "-n",
        "kube-system",
        sa,
        "-o",
        "jsonpath={.data.requestheader-username-headers}",
    ]);
    assert_eq!(names.trim(), "[\"X-Remote-User\"]");
    let o = s.kubectl(&["get", "configmap/kube-root-ca.crt", "-n", "kube-system", sa]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Forbidden"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
