//! Attack: cluster-scoped resources addressed under `/namespaces/<own>/...` (issue 12, item 1).
//!
//! Two hostile tenants — one with `view` in their own namespace, one with a Role granting every
//! verb on every resource *in* their own namespace — try get, list, watch, create, update,
//! patch (merge and server-side apply), delete and deletecollection of Namespaces, Nodes,
//! PersistentVolumes, StorageClasses, ClusterRoles, ClusterRoleBindings, CRDs and
//! cluster-scoped custom resources, plus the namespace's own subresources of *another*
//! namespace, all under `/namespaces/<own>/`. Upstream serves no such route: every attempt is a
//! 404 NotFound Status, the store revision does not move, nothing is changed, and the audit
//! lines name no object in the wrong scope. Namespaced resources addressed without a namespace
//! are 404/405 as upstream. The namespace's own `/status` and `/finalize` still work for an
//! admin. The server runs under an address-space cap and answers fast afterwards.

mod harness;

use std::time::{Duration, Instant};

use harness::{eventually, Identity, Raw, RawResponse, Server};
use serde_json::Value;

/// Address-space cap for the attacked server (see `Server::start_capped`).
const MEMORY_CAP: u64 = 6 << 30;

fn revision(s: &Server) -> u64 {
    let list = s
        .raw(Raw::get("/api/v1/namespaces/default/configmaps"))
        .json();
    list["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("list resourceVersion")
}

fn expect_status(what: &str, resp: &RawResponse, code: u16, reason: &str) {
    let body = String::from_utf8_lossy(&resp.body);
    assert_eq!(resp.status, code, "{what}: {body}");
    let status = resp.json();
    assert_eq!(status["kind"], "Status", "{what}: {status}");
    assert_eq!(status["code"], code, "{what}: {status}");
    assert_eq!(status["reason"], reason, "{what}: {status}");
}

/// The server is alive and a GET answers fast: the worst of 10 GETs (their p99) under
/// 100 ms. Measured up to three times, so one scheduling hiccup of a loaded CI machine is not
/// a failure while a server left slow by the attack still is.
fn assert_responsive(s: &mut Server) {
    assert!(s.alive(), "the server died");
    let mut worst = Duration::ZERO;
    for _ in 0..3 {
        worst = (0..10)
            .map(|_| {
                let t = Instant::now();
                let r = s.raw(Raw::get("/api/v1/namespaces/default"));
                assert_eq!(r.status, 200);
                t.elapsed()
            })
            .max()
            .unwrap_or_default();
        if worst < Duration::from_millis(100) {
            return;
        }
    }
    panic!("GET p99 {worst:?} after the attack");
}

fn apply(s: &Server, yaml: &str) {
    s.ok_in(&["apply", "-f", "-"], yaml);
}

/// Wait until the controllers' writes for `namespaces` (default ServiceAccount, root CA
/// ConfigMap) have landed, so the store revision only moves because of the test.
fn settle_namespaces(s: &Server, namespaces: &[&str]) {
    s.settle();
    let done = eventually(Duration::from_secs(30), || {
        namespaces.iter().all(|ns| {
            s.raw(Raw::get(&format!(
                "/api/v1/namespaces/{ns}/serviceaccounts/default"
            )))
            .status
                == 200
                && s.raw(Raw::get(&format!(
                    "/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt"
                )))
                .status
                    == 200
        })
    });
    assert!(done, "controllers did not populate {namespaces:?}");
    std::thread::sleep(Duration::from_millis(300));
}

const SETUP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: own}
---
apiVersion: v1
kind: Namespace
metadata: {name: other, labels: {pod-security.kubernetes.io/enforce: restricted}}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv1}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  hostPath: {path: /tmp/pv1}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: fast}
provisioner: example.com/none
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: target}
rules: [{apiGroups: [""], resources: [pods], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: target}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: target}
subjects: [{kind: User, name: nobody, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Cluster
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: viewer, namespace: own}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{kind: User, name: viewer, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: everything, namespace: own}
rules: [{apiGroups: ["*"], resources: ["*"], verbs: ["*"]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: owner, namespace: own}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: everything}
subjects: [{kind: User, name: owner, apiGroup: rbac.authorization.k8s.io}]
"#;

/// (API prefix, plural, an existing object's name) of the cluster-scoped targets.
const TARGETS: &[(&str, &str, &str)] = &[
    ("/api/v1", "namespaces", "other"),
    ("/api/v1", "nodes", "n1"),
    ("/api/v1", "persistentvolumes", "pv1"),
    ("/apis/storage.k8s.io/v1", "storageclasses", "fast"),
    (
        "/apis/rbac.authorization.k8s.io/v1",
        "clusterroles",
        "target",
    ),
    (
        "/apis/rbac.authorization.k8s.io/v1",
        "clusterrolebindings",
        "target",
    ),
    (
        "/apis/apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        "widgets.example.com",
    ),
    ("/apis/example.com/v1", "widgets", "w1"),
];

/// Every request the attack makes against one target (method, path, content type, body).
fn attack_requests(prefix: &str, plural: &str, name: &str, obj: &Value) -> Vec<Request> {
    let base = format!("{prefix}/namespaces/own/{plural}");
    let one = format!("{base}/{name}");
    let mut labelled = obj.clone();
    labelled["metadata"]["labels"]["pwned"] = Value::String("1".into());
    let put = serde_json::to_vec(&labelled).unwrap_or_default();
    let mut fresh = obj.clone();
    fresh["metadata"] = serde_json::json!({"name": format!("evil-{plural}")});
    let post = serde_json::to_vec(&fresh).unwrap_or_default();
    let merge = br#"{"metadata":{"labels":{"pwned":"1"},"finalizers":null}}"#.to_vec();
    let json_patch = br#"[{"op":"add","path":"/metadata/labels","value":{"pwned":"1"}}]"#.to_vec();
    let apply = format!(
        "apiVersion: {}\nkind: {}\nmetadata:\n  name: {name}\n  labels: {{pwned: \"1\"}}\n",
        obj["apiVersion"].as_str().unwrap_or("v1"),
        obj["kind"].as_str().unwrap_or("")
    )
    .into_bytes();
    let mut out = vec![
        Request::new("GET", &one, None, vec![]),
        Request::new("GET", &base, None, vec![]),
        Request::new(
            "GET",
            &format!("{base}?watch=1&timeoutSeconds=1"),
            None,
            vec![],
        ),
        Request::new(
            "GET",
            &format!("{base}?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3D{name}"),
            None,
            vec![],
        ),
        Request::new("HEAD", &one, None, vec![]),
        Request::new("PUT", &one, Some("application/json"), put.clone()),
        Request::new(
            "PATCH",
            &one,
            Some("application/merge-patch+json"),
            merge.clone(),
        ),
        Request::new(
            "PATCH",
            &one,
            Some("application/strategic-merge-patch+json"),
            merge.clone(),
        ),
        Request::new(
            "PATCH",
            &one,
            Some("application/json-patch+json"),
            json_patch,
        ),
        Request::new(
            "PATCH",
            &format!("{one}?fieldManager=attacker&force=true"),
            Some("application/apply-patch+yaml"),
            apply,
        ),
        Request::new("DELETE", &one, None, vec![]),
        Request::new("DELETE", &base, None, vec![]),
        Request::new("POST", &base, Some("application/json"), post),
        Request::new(
            "PUT",
            &format!("{one}/status"),
            Some("application/json"),
            put.clone(),
        ),
        Request::new(
            "PATCH",
            &format!("{one}/status"),
            Some("application/merge-patch+json"),
            merge,
        ),
    ];
    if plural == "namespaces" {
        out.push(Request::new(
            "PUT",
            &format!("{one}/finalize"),
            Some("application/json"),
            put,
        ));
    }
    out
}

struct Request {
    method: String,
    path: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Request {
    fn new(method: &str, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            content_type: content_type.map(str::to_string),
            body,
        }
    }
}

fn send(s: &Server, who: &(String, String), r: &Request) -> RawResponse {
    s.raw(Raw {
        method: &r.method,
        path: &r.path,
        content_type: r.content_type.as_deref(),
        body: &r.body,
        identity: Identity::Pem(&who.0, &who.1),
        headers: Vec::new(),
    })
}

fn get_as(s: &Server, who: &(String, String), path: &str) -> RawResponse {
    s.raw(Raw {
        identity: Identity::Pem(&who.0, &who.1),
        ..Raw::get(path)
    })
}

fn audit_lines(s: &Server) -> Vec<Value> {
    let text = std::fs::read_to_string(s.data_dir().join("audit/audit.log")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn cluster_scoped_resources_under_a_namespace_are_not_found_and_untouched() {
    let mut s = Server::start_capped(&[], MEMORY_CAP);
    apply(&s, SETUP);
    assert!(
        eventually(Duration::from_secs(20), || {
            s.raw(Raw::get("/apis/example.com/v1/widgets")).status == 200
        }),
        "the Widget CRD was not established"
    );
    apply(
        &s,
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 1}\n",
    );
    let viewer = s.client_cert("viewer", &[]);
    let owner = s.client_cert("owner", &[]);
    // The grants are live: the viewer reads its namespace's ConfigMaps, the owner may even
    // get its *own* Namespace object (a Role's namespaces rule covers the namespace itself,
    // as upstream) — but not another one by its real path.
    assert!(
        eventually(Duration::from_secs(10), || {
            get_as(&s, &viewer, "/api/v1/namespaces/own/configmaps").status == 200
                && get_as(&s, &owner, "/api/v1/namespaces/own").status == 200
        }),
        "RBAC grants did not take effect"
    );
    expect_status(
        "owner gets another namespace",
        &get_as(&s, &owner, "/api/v1/namespaces/other"),
        403,
        "Forbidden",
    );
    settle_namespaces(&s, &["own", "other"]);

    // The objects as they are before the attack.
    let originals: Vec<Value> = TARGETS
        .iter()
        .map(|(prefix, plural, name)| {
            let r = s.raw(Raw::get(&format!("{prefix}/{plural}/{name}")));
            assert_eq!(r.status, 200, "{plural}/{name}");
            r.json()
        })
        .collect();
    let before = revision(&s);
    let mut attempts = 0;
    for (who, cert) in [("viewer", &viewer), ("owner", &owner)] {
        for ((prefix, plural, name), obj) in TARGETS.iter().zip(&originals) {
            for r in attack_requests(prefix, plural, name, obj) {
                let resp = send(&s, cert, &r);
                attempts += 1;
                let what = format!("{} {} as {who}", r.method, r.path);
                if r.method == "HEAD" {
                    assert_eq!(resp.status, 404, "{what}");
                } else {
                    expect_status(&what, &resp, 404, "NotFound");
                }
            }
        }
    }
    // Even the cluster admin cannot reach them through such a path.
    for ((prefix, plural, name), obj) in TARGETS.iter().zip(&originals) {
        for r in attack_requests(prefix, plural, name, obj) {
            if r.method == "HEAD" {
                continue;
            }
            let resp = send(&s, &s.admin_identity(), &r);
            expect_status(
                &format!("admin {} {}", r.method, r.path),
                &resp,
                404,
                "NotFound",
            );
        }
    }
    // A stranger without credentials: 401, and its audit line names no wrong scope either.
    for r in attack_requests("/api/v1", "namespaces", "other", &originals[0]) {
        let resp = s.raw(Raw {
            method: &r.method,
            path: &r.path,
            content_type: r.content_type.as_deref(),
            body: &r.body,
            identity: Identity::None,
            headers: Vec::new(),
        });
        assert_eq!(resp.status, 401, "{} {}", r.method, r.path);
    }
    assert_eq!(revision(&s), before, "the store changed during the attack");
    for ((prefix, plural, name), obj) in TARGETS.iter().zip(&originals) {
        let now = s.raw(Raw::get(&format!("{prefix}/{plural}/{name}")));
        assert_eq!(now.status, 200, "{plural}/{name} is gone");
        let now = now.json();
        assert_eq!(
            now["metadata"]["resourceVersion"], obj["metadata"]["resourceVersion"],
            "{plural}/{name} changed"
        );
        assert!(now["metadata"]["labels"]["pwned"].is_null());
    }
    assert_eq!(
        s.raw(Raw::get("/api/v1/namespaces/other")).json()["metadata"]["labels"]
            ["pod-security.kubernetes.io/enforce"],
        "restricted"
    );

    // The audit lines of the attack name no object in a scope it does not live in.
    let lines = audit_lines(&s);
    let attack_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            let uri = l["requestURI"].as_str().unwrap_or("");
            TARGETS
                .iter()
                .any(|(p, plural, _)| uri.starts_with(&format!("{p}/namespaces/own/{plural}")))
        })
        .collect();
    assert!(
        attack_lines.len() >= attempts,
        "{} audit lines for {attempts} attempts",
        attack_lines.len()
    );
    for l in attack_lines {
        let code = l["responseStatus"]["code"].as_u64();
        assert!(matches!(code, Some(401 | 404)), "{l}");
        assert!(
            l["objectRef"].is_null() || l["objectRef"]["namespace"].is_null(),
            "audit line names a cluster-scoped object inside a namespace: {l}"
        );
    }
    assert_responsive(&mut s);
}

#[test]
fn namespaced_resources_need_their_namespace_and_namespace_subresources_still_work() {
    let mut s = Server::start_capped(&[], MEMORY_CAP);
    apply(
        &s,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: fin}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: keep, namespace: default}\ndata: {a: \"1\"}\n",
    );
    settle_namespaces(&s, &["fin"]);
    let before = revision(&s);
    let cm =
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"default"}}"#;
    let cases: Vec<(&str, &str, &[u8], u16, &str)> = vec![
        ("POST", "/api/v1/configmaps", cm, 405, "MethodNotAllowed"),
        ("DELETE", "/api/v1/configmaps", b"", 405, "MethodNotAllowed"),
        ("GET", "/api/v1/configmaps/keep", b"", 404, "NotFound"),
        ("DELETE", "/api/v1/configmaps/keep", b"", 404, "NotFound"),
        ("PUT", "/api/v1/configmaps/keep", cm, 404, "NotFound"),
        (
            "GET",
            "/api/v1/namespaces//configmaps",
            b"",
            404,
            "NotFound",
        ),
        (
            "DELETE",
            "/api/v1/namespaces//configmaps",
            b"",
            404,
            "NotFound",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps/keep/status/x",
            b"",
            404,
            "NotFound",
        ),
        (
            "POST",
            "/apis/authorization.k8s.io/v1/localsubjectaccessreviews",
            b"{}",
            404,
            "NotFound",
        ),
        (
            "POST",
            "/apis/authorization.k8s.io/v1/namespaces/default/selfsubjectaccessreviews",
            b"{}",
            404,
            "NotFound",
        ),
    ];
    for (method, path, body, code, reason) in cases {
        let r = s.raw(Raw::send(method, path, "application/json", body));
        expect_status(&format!("{method} {path}"), &r, code, reason);
    }
    // All-namespace list and watch stay served.
    assert_eq!(s.raw(Raw::get("/api/v1/configmaps")).status, 200);
    assert_eq!(
        s.raw(Raw::get("/api/v1/configmaps?watch=1&timeoutSeconds=1"))
            .status,
        200
    );
    assert_eq!(revision(&s), before, "the store changed");
    assert_eq!(
        s.raw(Raw::get("/api/v1/namespaces/default/configmaps/keep"))
            .status,
        200
    );

    // The namespace's own subresources at /api/v1/namespaces/{name}/{status,finalize}.
    let ns = s.raw(Raw::get("/api/v1/namespaces/fin/status"));
    assert_eq!(ns.status, 200);
    let mut ns = ns.json();
    ns["status"]["conditions"] = serde_json::json!([{
        "type": "NamespaceDeletionDiscoveryFailure", "status": "False",
        "reason": "ResourcesDiscovered", "message": "ok",
        "lastTransitionTime": "2026-01-01T00:00:00Z"
    }]);
    let r = s.raw(Raw::send(
        "PUT",
        "/api/v1/namespaces/fin/status",
        "application/json",
        &serde_json::to_vec(&ns).unwrap(),
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let mut ns = r.json();
    ns["spec"]["finalizers"] = serde_json::json!(["kubernetes", "example.com/hold"]);
    let r = s.raw(Raw::send(
        "PUT",
        "/api/v1/namespaces/fin/finalize",
        "application/json",
        &serde_json::to_vec(&ns).unwrap(),
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let got = s.raw(Raw::get("/api/v1/namespaces/fin")).json();
    assert_eq!(
        got["spec"]["finalizers"],
        serde_json::json!(["kubernetes", "example.com/hold"])
    );
    assert_eq!(
        got["status"]["conditions"][0]["type"],
        "NamespaceDeletionDiscoveryFailure"
    );
    assert_responsive(&mut s);
}
