//! `kubectl auth can-i` / `whoami` and the access review APIs (SelfSubjectAccessReview,
//! SubjectAccessReview, LocalSubjectAccessReview, SelfSubjectRulesReview) against a real
//! server, as admin and as a plain certificate user; user impersonation (`kubectl --as`).

mod harness;

use harness::{Identity, Raw, Server};

/// A kubeconfig for a client certificate user `cn` (files under the server's data dir).
fn kubeconfig_for(s: &Server, cn: &str, orgs: &[&str]) -> String {
    let (cert, key) = s.client_cert(cn, orgs);
    let dir = s.data_dir();
    let (cert_path, key_path) = (dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key")));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let kc = dir.join(format!("{cn}.kubeconfig"));
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{}', certificate-authority: '{}'}}}}]\nusers: [{{name: u, user: {{client-certificate: '{}', client-key: '{}'}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u, namespace: default}}}}]\ncurrent-context: x\n",
            s.port,
            dir.join("pki/ca-bundle.crt").display(),
            cert_path.display(),
            key_path.display()
        ),
    )
    .unwrap();
    kc.display().to_string()
}

fn kubectl_as(s: &Server, kc: &str, args: &[&str]) -> std::process::Output {
    let mut full = vec!["--kubeconfig", kc];
    full.extend_from_slice(args);
    s.kubectl(&full)
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn post(s: &Server, identity: Identity<'_>, path: &str, body: &str) -> harness::RawResponse {
    s.raw(Raw {
        identity,
        ..Raw::send("POST", path, "application/json", body.as_bytes())
    })
}

#[test]
fn can_i_and_whoami_as_admin_and_as_a_plain_user() {
    let s = Server::start();
    assert_eq!(s.ok(&["auth", "can-i", "get", "pods"]).trim(), "yes");
    assert_eq!(s.ok(&["auth", "can-i", "*", "*"]).trim(), "yes");
    let list = s.ok(&["auth", "can-i", "--list"]);
    assert!(list.contains("*.*"), "{list}");
    let who = s.ok(&["auth", "whoami", "-o", "json"]);
    assert!(
        who.contains("\"admin\"") && who.contains("system:masters"),
        "{who}"
    );

    let kc = kubeconfig_for(&s, "carol", &["devs"]);
    let o = kubectl_as(&s, &kc, &["auth", "can-i", "get", "pods"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("no"),
        "{}",
        text(&o)
    );
    // Asking about oneself is allowed for everyone, and answered by the basic-user policy.
    let o = kubectl_as(
        &s,
        &kc,
        &[
            "auth",
            "can-i",
            "create",
            "selfsubjectaccessreviews.authorization.k8s.io",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = kubectl_as(&s, &kc, &["auth", "can-i", "get", "/healthz"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = kubectl_as(&s, &kc, &["auth", "whoami"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("carol") && t.contains("devs"), "{t}");
    // The rules list: the self reviews and discovery, marked incomplete.
    let o = kubectl_as(&s, &kc, &["auth", "can-i", "--list"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{t}"
    );
    assert!(t.contains("/healthz") && !t.contains("*.*"), "{t}");
    assert!(t.contains("incomplete"), "{t}");
}

#[test]
fn subject_access_review_is_for_permitted_callers_only() {
    let s = Server::start();
    let sar = |user: &str, groups: &str, verb: &str| {
        format!(
            r#"{{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{{"user":"{user}","groups":[{groups}],"resourceAttributes":{{"verb":"{verb}","resource":"secrets","namespace":"default"}}}}}}"#
        )
    };
    let path = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
    let r = post(&s, Identity::Admin, path, &sar("dave", "", "get"));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["kind"], "SubjectAccessReview");
    assert_eq!(v["status"]["allowed"], false, "{v}");
    let r = post(
        &s,
        Identity::Admin,
        path,
        &sar("erin", r#""system:masters""#, "delete"),
    );
    let v = r.json();
    assert_eq!(v["status"]["allowed"], true, "{v}");
    // Both the built-in system:masters policy and the default cluster-admin binding (RBAC is
    // compiled before the server reports ready) permit it; the reason names every one.
    let reason = v["status"]["reason"].as_str().unwrap_or_default();
    let mut ids: Vec<&str> = reason
        .strip_prefix("allowed by policy ")
        .unwrap_or_default()
        .split(", ")
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [
            "rbac/ClusterRoleBinding/cluster-admin/rule-0",
            "system/masters"
        ],
        "{reason}"
    );
    // The kube-proxy's rights, asked by an admin: services yes, secrets no.
    let proxy = |res: &str| {
        format!(
            r#"{{"kind":"SubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{{"user":"system:kube-proxy:n1","groups":["system:node-proxier"],"resourceAttributes":{{"verb":"list","resource":"{res}"}}}}}}"#
        )
    };
    assert_eq!(
        post(&s, Identity::Admin, path, &proxy("services")).json()["status"]["allowed"],
        true
    );
    assert_eq!(
        post(&s, Identity::Admin, path, &proxy("secrets")).json()["status"]["allowed"],
        false
    );
    // Neither user nor group: invalid.
    let r = post(
        &s,
        Identity::Admin,
        path,
        r#"{"kind":"SubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{"resourceAttributes":{"verb":"get","resource":"pods"}}}"#,
    );
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));

    // A plain user may not ask about others.
    let (cert, key) = s.client_cert("frank", &[]);
    let r = post(
        &s,
        Identity::Pem(&cert, &key),
        path,
        &sar("dave", "", "get"),
    );
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("subjectaccessreviews"), "{msg}");
    // ... but about themselves, yes.
    let r = post(
        &s,
        Identity::Pem(&cert, &key),
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        r#"{"kind":"SelfSubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{"nonResourceAttributes":{"path":"/version","verb":"get"}}}"#,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["status"]["allowed"], true, "{v}");
    // The system policy and the default RBAC discovery bindings both allow it.
    let reason = v["status"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("allowed by policy ") && reason.contains("system/discovery"),
        "{v}"
    );
    // Both attribute kinds at once: invalid.
    let r = post(
        &s,
        Identity::Pem(&cert, &key),
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        r#"{"kind":"SelfSubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{"nonResourceAttributes":{"path":"/version","verb":"get"},"resourceAttributes":{"verb":"get","resource":"pods"}}}"#,
    );
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    // Nothing is stored: the reviews cannot be listed.
    let r = s.raw(Raw::get(path));
    assert_eq!(r.status, 405, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn local_subject_access_review_must_match_the_url_namespace() {
    let s = Server::start();
    let lsar = |ns: &str| {
        format!(
            r#"{{"kind":"LocalSubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{{"user":"gina","groups":["system:masters"],"resourceAttributes":{{"verb":"get","resource":"pods","namespace":"{ns}"}}}}}}"#
        )
    };
    let path = "/apis/authorization.k8s.io/v1/namespaces/default/localsubjectaccessreviews";
    let r = post(&s, Identity::Admin, path, &lsar("default"));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["status"]["allowed"], true, "{v}");
    assert_eq!(v["metadata"]["namespace"], "default");
    let r = post(&s, Identity::Admin, path, &lsar("kube-system"));
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains("spec.resourceAttributes.namespace must match namespace: default"),
        "{msg}"
    );
}

#[test]
fn impersonation_needs_the_impersonate_verb() {
    let s = Server::start();
    // Admin (system:masters) may impersonate; the answer is then the impersonated user's.
    let o = s.kubectl(&["auth", "can-i", "create", "pods", "--as=bob"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("no"));
    let who = s.ok(&[
        "auth",
        "whoami",
        "--as=bob",
        "--as-group=devs",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&who).unwrap();
    assert_eq!(v["status"]["userInfo"]["username"], "bob", "{v}");
    let groups = v["status"]["userInfo"]["groups"].to_string();
    assert!(
        groups.contains("devs") && groups.contains("system:authenticated"),
        "{groups}"
    );
    assert_eq!(
        s.ok(&[
            "auth",
            "can-i",
            "get",
            "pods",
            "--as=bob",
            "--as-group=system:masters"
        ])
        .trim(),
        "yes"
    );
    // uid and extra are impersonated too (each needs its own `impersonate` grant), and reach
    // the authorizer and the audit line.
    let who = s.ok(&[
        "auth",
        "whoami",
        "--as=bob",
        "--as-uid=bob-uid-1",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&who).unwrap();
    assert_eq!(v["status"]["userInfo"]["uid"], "bob-uid-1", "{v}");
    let r = s.raw(harness::Raw {
        headers: vec![
            ("Impersonate-User", "bob"),
            ("Impersonate-Extra-example.com%2fteam", "payments"),
            ("Impersonate-Extra-example.com%2fteam", "billing"),
        ],
        ..harness::Raw::send(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            "application/json",
            br#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
        )
    });
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(
        v["status"]["userInfo"]["extra"]["example.com/team"],
        serde_json::json!(["payments", "billing"]),
        "{v}"
    );
    let r = s.raw(harness::Raw {
        headers: vec![
            ("Impersonate-User", "bob"),
            ("Impersonate-Extra-bad%zz", "x"),
        ],
        ..harness::Raw::get("/api/v1/namespaces")
    });
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let err = s.fails(&["get", "pods", "--as=bob"]);
    assert!(err.contains("User \"bob\" cannot list"), "{err}");

    // A user without `impersonate` is refused, naming what they tried.
    let kc = kubeconfig_for(&s, "henry", &[]);
    let o = kubectl_as(&s, &kc, &["get", "pods", "--as=system:admin"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("User \"henry\" cannot impersonate resource \"users\""),
        "{t}"
    );
    // ... including escalating by group alone (refused: groups need a user).
    let o = kubectl_as(
        &s,
        &kc,
        &["get", "pods", "--as=henry", "--as-group=system:masters"],
    );
    assert!(!o.status.success());

    // The audit line keeps the real user and records the impersonated one.
    let audit = std::fs::read_to_string(s.data_dir().join("audit/audit.log")).unwrap();
    let line = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["impersonatedUser"]["username"] == "bob")
        .expect("an audit line for the impersonated request");
    assert_eq!(line["user"]["username"], "admin");
}

#[test]
fn rules_review_lists_name_scoped_cedar_grants() {
    // A hand-written Cedar grant limited to one object: probing the collection cannot see
    // it, probing with the names the policy mentions does.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("authz")).unwrap();
    std::fs::write(
        dir.path().join("authz/carol.cedar"),
        "@id(\"ops/carol-app-config\")\npermit (principal == k8s::User::\"carol\", action in [k8s::Action::\"get\", k8s::Action::\"update\"], resource is k8s::Resource)\nwhen { resource.apiGroup == \"\" && resource.resource == \"configmaps\" && resource.namespace == \"default\" && resource.name == \"app-config\" };\n",
    )
    .unwrap();
    let s = Server::start_with(&["--policy-dir", dir.path().to_str().unwrap()]);
    let kc = kubeconfig_for(&s, "carol", &[]);

    let o = kubectl_as(&s, &kc, &["auth", "can-i", "--list", "-n", "default"]);
    let listing = text(&o);
    assert!(o.status.success(), "{listing}");
    let line = listing
        .lines()
        .find(|l| l.contains("configmaps"))
        .unwrap_or_else(|| panic!("no configmaps rule in:\n{listing}"));
    assert!(line.contains("[app-config]"), "{line}");
    assert!(line.contains("[get update]"), "{line}");

    // The rule is what the authorizer decides: allowed by name, not for the collection or
    // another name, and not in another namespace.
    let can = |args: &[&str]| kubectl_as(&s, &kc, &[&["auth", "can-i"], args].concat());
    assert!(can(&["get", "configmaps/app-config", "-n", "default"])
        .status
        .success());
    assert!(!can(&["get", "configmaps", "-n", "default"])
        .status
        .success());
    assert!(!can(&["get", "configmaps/other", "-n", "default"])
        .status
        .success());
    let o = kubectl_as(&s, &kc, &["auth", "can-i", "--list", "-n", "kube-system"]);
    assert!(!text(&o).contains("app-config"), "{}", text(&o));

    // The review says it is incomplete (Cedar may grant on facts probing cannot see).
    let r = post(
        &s,
        Identity::Pem(
            &std::fs::read_to_string(s.data_dir().join("carol.crt")).unwrap(),
            &std::fs::read_to_string(s.data_dir().join("carol.key")).unwrap(),
        ),
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectRulesReview","spec":{"namespace":"default"}}"#,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["status"]["incomplete"], true, "{v}");
    let rules = v["status"]["resourceRules"].as_array().unwrap();
    assert!(
        rules
            .iter()
            .any(|r| r["resourceNames"] == serde_json::json!(["app-config"])
                && r["resources"] == serde_json::json!(["configmaps"])
                && r["verbs"] == serde_json::json!(["get", "update"])),
        "{v}"
    );
}
