//! Kubernetes RBAC honoured through Cedar, end to end with the stock kubectl: grants and
//! revocations take effect within a second for a user whose certificate came from an approved
//! CSR and for a service-account token; resourceNames; the bind/escalate checks; ClusterRole
//! aggregation; the default roles; 403 messages and audit lines naming the `rbac/...`
//! policies.

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use harness::{eventually, kubectl_bin, Identity, Raw, Server};
use serde_json::{json, Value};

fn b64(v: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

fn csr_pem(cn: &str, orgs: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    for o in orgs {
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, *o);
    }
    (
        p.serialize_request(&key).unwrap().pem().unwrap(),
        key.serialize_pem(),
    )
}

fn kubeconfig(s: &Server, dir: &Path, cert: &str, key: &str) -> PathBuf {
    let doc = json!({"apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": format!("https://127.0.0.1:{}", s.port), "certificate-authority-data": b64(&s.ca_pem())}}],
        "users": [{"name": "u", "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}], "current-context": "x"});
    let path = dir.join(format!("kc-{}", rand::random::<u32>()));
    std::fs::write(&path, doc.to_string()).unwrap();
    path
}

/// kubectl as the identity in `kc`.
fn as_user(s: &Server, kc: &Path, args: &[&str]) -> Output {
    Command::new(kubectl_bin())
        .arg(format!("--kubeconfig={}", kc.display()))
        .args(args)
        .env("HOME", s.data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run kubectl")
}

fn as_token(s: &Server, token: &str, args: &[&str]) -> Output {
    let ca = s.data_dir().join("pki/ca.crt");
    Command::new(kubectl_bin())
        .arg("--kubeconfig=/dev/null")
        .arg(format!("--server=https://127.0.0.1:{}", s.port))
        .arg(format!("--certificate-authority={}", ca.display()))
        .arg(format!("--token={token}"))
        .args(args)
        .env("HOME", s.data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run kubectl")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn get_as(s: &Server, cert: &str, key: &str, path: &str) -> (u16, String) {
    let r = s.raw(Raw {
        identity: Identity::Pem(cert, key),
        ..Raw::get(path)
    });
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// How long until `f` holds (polling every 20 ms), or `None` after `timeout`.
fn time_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn rule_resources(s: &Server, role: &str) -> String {
    s.json(&["get", "clusterrole", role])["rules"].to_string()
}

fn audit_lines(s: &Server) -> Vec<Value> {
    let text = std::fs::read_to_string(s.data_dir().join("audit/audit.log")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn csr_user_is_granted_and_revoked_within_a_second() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    // Default roles are bootstrapped, and aggregation fills `view`.
    let admin = s.json(&["get", "clusterrole", "cluster-admin"]);
    assert_eq!(
        admin["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"],
        "true"
    );
    assert_eq!(
        admin["metadata"]["labels"]["kubernetes.io/bootstrapping"],
        "rbac-defaults"
    );
    s.ok(&["get", "clusterrolebinding", "cluster-admin"]);
    assert!(
        eventually(Duration::from_secs(20), || rule_resources(&s, "view")
            .contains("\"pods\"")),
        "view was never aggregated"
    );
    assert!(eventually(Duration::from_secs(20), || rule_resources(
        &s, "admin"
    )
    .contains("rolebindings")
        && rule_resources(&s, "admin").contains("\"pods\"")));

    // A user certificate from an approved CSR.
    let (pem, key) = csr_pem("alice", &["devs"]);
    let csr = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": "alice"},
        "spec": {"request": b64(&pem), "signerName": "kubernetes.io/kube-apiserver-client",
                 "usages": ["digital signature", "client auth"]}});
    s.ok_in(&["create", "-f", "-"], &csr.to_string());
    s.ok(&["certificate", "approve", "alice"]);
    let issued = || -> Option<String> {
        let v = s.json(&["get", "csr", "alice"]);
        let b = v["status"]["certificate"].as_str()?;
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).ok()?).ok()
    };
    assert!(eventually(Duration::from_secs(15), || issued().is_some()));
    let cert = issued().unwrap();
    let kc = kubeconfig(&s, tmp.path(), &cert, &key);
    s.ok(&["create", "namespace", "team-a"]);
    s.ok(&["create", "namespace", "team-b"]);

    // Denied, naming the decision.
    let out = as_user(&s, &kc, &["get", "pods", "-n", "team-a"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("forbidden"), "{err}");
    assert!(
        err.contains("User \"alice\" cannot list resource \"pods\""),
        "{err}"
    );
    assert!(err.contains("no policy permits it"), "{err}");

    // Granted within a second.
    s.ok(&[
        "create",
        "rolebinding",
        "alice-view",
        "--clusterrole=view",
        "--user=alice",
        "-n",
        "team-a",
    ]);
    let pods_a = "/api/v1/namespaces/team-a/pods";
    let took = time_until(Duration::from_secs(5), || {
        get_as(&s, &cert, &key, pods_a).0 == 200
    });
    let took = took.expect("the RoleBinding never took effect");
    eprintln!("grant took effect after {took:?}");
    assert!(took < Duration::from_secs(1), "grant took {took:?}");
    let out = as_user(&s, &kc, &["get", "pods", "-n", "team-a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Only in that namespace, and only reading.
    assert_eq!(
        get_as(&s, &cert, &key, "/api/v1/namespaces/team-b/pods").0,
        403
    );
    assert_eq!(get_as(&s, &cert, &key, "/api/v1/pods").0, 403);
    assert_eq!(
        get_as(&s, &cert, &key, "/api/v1/namespaces/team-a/secrets").0,
        403
    );
    let out = as_user(&s, &kc, &["create", "configmap", "x", "-n", "team-a"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no policy permits it"),
        "{}",
        stderr(&out)
    );

    // The audit line of an allowed request names the RBAC policy.
    let lines = audit_lines(&s);
    let allowed = lines
        .iter()
        .rev()
        .find(|l| {
            l["user"]["username"] == "alice"
                && l["verb"] == "list"
                && l["objectRef"]["namespace"] == "team-a"
                && l["responseStatus"]["code"] == 200
        })
        .expect("an audit line for alice's list");
    let policies = allowed["policies"].to_string();
    assert!(
        policies.contains("rbac/RoleBinding/team-a/alice-view/rule-"),
        "{policies}"
    );

    // Revoked within a second.
    s.ok(&["delete", "rolebinding", "alice-view", "-n", "team-a"]);
    let took = time_until(Duration::from_secs(5), || {
        get_as(&s, &cert, &key, pods_a).0 == 403
    })
    .expect("the revocation never took effect");
    eprintln!("revocation took effect after {took:?}");
    assert!(took < Duration::from_secs(1), "revocation took {took:?}");

    // A group binding through a ClusterRoleBinding works everywhere.
    s.ok(&[
        "create",
        "clusterrolebinding",
        "devs-view",
        "--clusterrole=view",
        "--group=devs",
    ]);
    assert!(eventually(Duration::from_secs(2), || get_as(
        &s,
        &cert,
        &key,
        "/api/v1/namespaces/team-b/pods"
    )
    .0 == 200));

    // Aggregation: a new ClusterRole labelled aggregate-to-view shows up in view (and edit,
    // admin), and through it grants alice the new resource.
    let widgets = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "widgets-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get", "list"]}]});
    s.ok_in(&["create", "-f", "-"], &widgets.to_string());
    assert!(eventually(Duration::from_secs(5), || {
        ["view", "edit", "admin"]
            .iter()
            .all(|r| rule_resources(&s, r).contains("widgets"))
    }));
    s.ok(&["delete", "clusterrole", "widgets-view"]);
    assert!(eventually(Duration::from_secs(5), || !rule_resources(
        &s, "view"
    )
    .contains("widgets")));
}

#[test]
fn service_accounts_resource_names_and_escalation() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    s.ok(&["create", "namespace", "apps"]);
    s.ok(&["create", "serviceaccount", "bot", "-n", "apps"]);
    s.ok(&["create", "configmap", "a", "-n", "apps"]);
    s.ok(&["create", "configmap", "b", "-n", "apps"]);
    s.ok(&[
        "create",
        "role",
        "cm-a",
        "--verb=get",
        "--resource=configmaps",
        "--resource-name=a",
        "-n",
        "apps",
    ]);
    s.ok(&[
        "create",
        "rolebinding",
        "bot-cm",
        "--role=cm-a",
        "--serviceaccount=apps:bot",
        "-n",
        "apps",
    ]);
    let token = s
        .ok(&["create", "token", "bot", "-n", "apps"])
        .trim()
        .to_string();
    assert!(eventually(Duration::from_secs(2), || as_token(
        &s,
        &token,
        &["get", "configmap", "a", "-n", "apps"]
    )
    .status
    .success()));
    let denied: [&[&str]; 4] = [
        &["get", "configmap", "b", "-n", "apps"],
        &["get", "configmaps", "-n", "apps"],
        &["get", "configmap", "a", "-n", "default"],
        &["delete", "configmap", "a", "-n", "apps"],
    ];
    for args in denied {
        let out = as_token(&s, &token, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains("forbidden"), "{}", stderr(&out));
    }

    // Escalation: carol may read (view) and write roles and bindings in `esc`.
    s.ok(&["create", "namespace", "esc"]);
    let writer = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "rbac-writer", "namespace": "esc"},
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"],
                   "verbs": ["create", "get", "list", "update", "patch", "delete"]}]});
    s.ok_in(&["create", "-f", "-"], &writer.to_string());
    s.ok(&[
        "create",
        "rolebinding",
        "carol-view",
        "--clusterrole=view",
        "--user=carol",
        "-n",
        "esc",
    ]);
    s.ok(&[
        "create",
        "rolebinding",
        "carol-writer",
        "--role=rbac-writer",
        "--user=carol",
        "-n",
        "esc",
    ]);
    assert!(
        eventually(Duration::from_secs(20), || rule_resources(&s, "view")
            .contains("\"pods\"")),
        "view was never aggregated"
    );
    let (cert, key) = s.client_cert("carol", &["team"]);
    let kc = kubeconfig(&s, tmp.path(), &cert, &key);
    let carol = |args: &[&str]| as_user(&s, &kc, args);
    assert!(eventually(Duration::from_secs(2), || carol(&[
        "get", "pods", "-n", "esc"
    ])
    .status
    .success()));

    for role in [
        "--clusterrole=admin",
        "--clusterrole=cluster-admin",
        "--role=rbac-writer",
    ] {
        let out = carol(&[
            "create",
            "rolebinding",
            "x",
            role,
            "--user=dave",
            "-n",
            "esc",
        ]);
        let err = stderr(&out);
        if role == "--role=rbac-writer" {
            // She holds every rule of rbac-writer.
            assert!(out.status.success(), "{err}");
            s.ok(&["delete", "rolebinding", "x", "-n", "esc"]);
            continue;
        }
        assert!(!out.status.success(), "binding {role} succeeded");
        assert!(err.contains("is forbidden"), "{err}");
        assert!(
            err.contains("user \"carol\" (groups=[")
                && err.contains("is attempting to grant RBAC permissions not currently held"),
            "{err}"
        );
    }
    assert!(!s
        .kubectl(&["get", "rolebinding", "x", "-n", "esc"])
        .status
        .success());
    let out = carol(&[
        "create",
        "role",
        "sec",
        "--verb=get",
        "--resource=secrets",
        "-n",
        "esc",
    ]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("roles.rbac.authorization.k8s.io \"sec\" is forbidden"),
        "{err}"
    );
    assert!(
        err.contains("{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}"),
        "{err}"
    );
    assert!(!s
        .kubectl(&["get", "role", "sec", "-n", "esc"])
        .status
        .success());
    // What she holds she may grant.
    let out = carol(&[
        "create",
        "role",
        "pods",
        "--verb=get,list",
        "--resource=pods",
        "-n",
        "esc",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = carol(&[
        "create",
        "rolebinding",
        "dave-view",
        "--clusterrole=view",
        "--user=dave",
        "-n",
        "esc",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // `bind` on the admin ClusterRole lets her bind it without holding it.
    let binder = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "binder", "namespace": "esc"},
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                   "resourceNames": ["admin"], "verbs": ["bind"]}]});
    s.ok_in(&["create", "-f", "-"], &binder.to_string());
    s.ok(&[
        "create",
        "rolebinding",
        "carol-binder",
        "--role=binder",
        "--user=carol",
        "-n",
        "esc",
    ]);
    assert!(eventually(Duration::from_secs(2), || carol(&[
        "create",
        "rolebinding",
        "dave-admin",
        "--clusterrole=admin",
        "--user=dave",
        "-n",
        "esc"
    ])
    .status
    .success()));
    // ... but not cluster-admin.
    let out = carol(&[
        "create",
        "rolebinding",
        "y",
        "--clusterrole=cluster-admin",
        "--user=dave",
        "-n",
        "esc",
    ]);
    assert!(!out.status.success());
}
