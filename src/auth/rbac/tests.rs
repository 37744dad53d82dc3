//! Compile semantics: RBAC objects → Cedar → decisions, as upstream's RBACAuthorizer.

use std::sync::Arc;

use cedar_policy::{PolicySet, ValidationMode, Validator};
use serde_json::{json, Value};

use super::*;
use crate::auth::cedar::{Authorizer, NodeGraph, PolicyFiles};
use crate::auth::{Attributes, UserInfo};

fn authorizer(objs: &[Value]) -> (Authorizer, compile::Output) {
    let schema = PolicyFiles::embedded().schema().expect("schema");
    let a = Authorizer::new(schema, NodeGraph::new());
    let mut o = Objects::default();
    for v in objs {
        o.apply(v);
    }
    let out = compile(&o);
    a.set_source("rbac", out.policies.clone());
    (a, out)
}

fn validate(policies: &[crate::auth::cedar::Compiled]) {
    let schema = PolicyFiles::embedded().schema().expect("schema");
    let set = PolicySet::from_policies(policies.iter().map(|c| c.policy.clone())).expect("set");
    let v = Validator::new(schema).validate(&set, ValidationMode::Strict);
    let errs: Vec<String> = v.validation_errors().map(|e| e.to_string()).collect();
    assert!(errs.is_empty(), "{errs:?}\n{set}");
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"kind": "ClusterRole", "metadata": {"name": name}, "rules": rules})
}

fn role(ns: &str, name: &str, rules: Value) -> Value {
    json!({"kind": "Role", "metadata": {"name": name, "namespace": ns}, "rules": rules})
}

fn rb(ns: &str, name: &str, kind: &str, role: &str, subjects: Value) -> Value {
    json!({"kind": "RoleBinding", "metadata": {"name": name, "namespace": ns},
           "roleRef": {"apiGroup": GROUP, "kind": kind, "name": role}, "subjects": subjects})
}

fn crb(name: &str, role: &str, subjects: Value) -> Value {
    json!({"kind": "ClusterRoleBinding", "metadata": {"name": name},
           "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role}, "subjects": subjects})
}

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        name: name.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..Default::default()
    }
}

/// (verb, group, resource, subresource, namespace, name)
type Req<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str);

fn allowed(a: &Authorizer, u: &UserInfo, r: Req<'_>) -> crate::auth::Decision {
    a.authorize(&Attributes {
        user: u,
        verb: r.0,
        resource_request: true,
        api_group: r.1,
        resource: r.2,
        subresource: r.3,
        namespace: r.4,
        name: r.5,
        path: "/x",
    })
}

fn url_allowed(a: &Authorizer, u: &UserInfo, verb: &str, path: &str) -> bool {
    a.authorize(&Attributes {
        user: u,
        verb,
        resource_request: false,
        api_group: "",
        resource: "",
        subresource: "",
        namespace: "",
        name: "",
        path,
    })
    .is_allowed()
}

#[test]
fn rules_decide_like_upstream() {
    // (rule, request, allowed) through a RoleBinding in "ns" for user "u".
    let cases: Vec<(Value, Req<'_>, bool)> = vec![
        (
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}),
            ("get", "", "pods", "", "ns", "p"),
            true,
        ),
        (
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}),
            ("list", "", "pods", "", "ns", ""),
            false,
        ),
        (
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}),
            ("get", "", "pods", "", "other", "p"),
            false,
        ),
        (
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}),
            ("get", "apps", "pods", "", "ns", "p"),
            false,
        ),
        (
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}),
            ("get", "", "pods", "log", "ns", "p"),
            false,
        ),
        (
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}),
            ("deletecollection", "", "pods", "", "ns", ""),
            true,
        ),
        (
            json!({"apiGroups": ["*"], "resources": ["deployments"], "verbs": ["get"]}),
            ("get", "apps", "deployments", "", "ns", "d"),
            true,
        ),
        (
            json!({"apiGroups": ["apps"], "resources": ["*"], "verbs": ["get"]}),
            ("get", "apps", "deployments", "scale", "ns", "d"),
            true,
        ),
        (
            json!({"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}),
            ("get", "", "pods", "log", "ns", "p"),
            true,
        ),
        (
            json!({"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}),
            ("get", "", "pods", "", "ns", "p"),
            false,
        ),
        (
            json!({"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["update"]}),
            ("update", "apps", "deployments", "scale", "ns", "d"),
            true,
        ),
        (
            json!({"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["update"]}),
            ("update", "apps", "deployments", "", "ns", "d"),
            false,
        ),
        (
            json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["get", "list"]}),
            ("get", "", "configmaps", "", "ns", "a"),
            true,
        ),
        (
            json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["get", "list"]}),
            ("get", "", "configmaps", "", "ns", "b"),
            false,
        ),
        // resourceNames never match collection requests (list, create without a name).
        (
            json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["list", "create"]}),
            ("list", "", "configmaps", "", "ns", ""),
            false,
        ),
        (
            json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["list", "create"]}),
            ("create", "", "configmaps", "", "ns", ""),
            false,
        ),
        // Verbs outside the schema never match; no apiGroups never matches.
        (
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["frobnicate"]}),
            ("get", "", "pods", "", "ns", "p"),
            false,
        ),
        (
            json!({"resources": ["pods"], "verbs": ["get"]}),
            ("get", "", "pods", "", "ns", "p"),
            false,
        ),
        // A RoleBinding never grants cluster-scoped requests.
        (
            json!({"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}),
            ("get", "", "nodes", "", "", "n"),
            false,
        ),
    ];
    for (i, (rule, req, want)) in cases.into_iter().enumerate() {
        let (a, out) = authorizer(&[
            role("ns", "r", json!([rule.clone()])),
            rb(
                "ns",
                "b",
                "Role",
                "r",
                json!([{"kind": "User", "name": "u"}]),
            ),
        ]);
        validate(&out.policies);
        let d = allowed(&a, &user("u", &[]), req);
        assert_eq!(d.is_allowed(), want, "case {i}: {rule} {req:?}: {d:?}");
        if want {
            assert_eq!(d.policies(), ["rbac/RoleBinding/ns/b/rule-0"], "case {i}");
        }
        // Someone else never gets it.
        assert!(!allowed(&a, &user("v", &[]), req).is_allowed(), "case {i}");
    }
}

#[test]
fn subjects_and_bindings() {
    let rules = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]);
    let (a, out) = authorizer(&[
        cluster_role("reader", rules),
        crb("all", "reader", json!([{"kind": "Group", "name": "devs"}])),
        rb(
            "ns",
            "sa",
            "ClusterRole",
            "reader",
            json!([
                {"kind": "ServiceAccount", "name": "bot"},
                {"kind": "ServiceAccount", "name": "other", "namespace": "ns2"},
                {"kind": "User", "name": "system:serviceaccount:ns3:named"},
            ]),
        ),
        rb(
            "ns",
            "missing",
            "Role",
            "nope",
            json!([{"kind": "User", "name": "x"}]),
        ),
    ]);
    validate(&out.policies);
    let get = |ns| ("get", "", "pods", "", ns, "p");
    let d = allowed(&a, &user("alice", &["devs"]), get("any"));
    assert!(d.is_allowed());
    assert_eq!(d.policies(), ["rbac/ClusterRoleBinding/all/rule-0"]);
    assert!(allowed(
        &a,
        &user("alice", &["devs"]),
        ("get", "", "pods", "", "", "")
    )
    .is_allowed());
    let sa = |ns: &str, n: &str| {
        user(
            &format!("system:serviceaccount:{ns}:{n}"),
            &["system:serviceaccounts"],
        )
    };
    assert!(allowed(&a, &sa("ns", "bot"), get("ns")).is_allowed());
    assert!(!allowed(&a, &sa("ns", "bot"), get("ns2")).is_allowed());
    assert!(allowed(&a, &sa("ns2", "other"), get("ns")).is_allowed());
    assert!(!allowed(&a, &sa("ns", "other"), get("ns")).is_allowed());
    assert!(allowed(&a, &sa("ns3", "named"), get("ns")).is_allowed());
    // A missing role grants nothing, and is not an error.
    assert!(!allowed(&a, &user("x", &[]), get("ns")).is_allowed());
    // The index agrees.
    let rules = out.index.rules(&user("alice", &["devs"]), "ns");
    assert_eq!(rules.len(), 1);
    assert_eq!(out.index.rules(&sa("ns", "bot"), "ns").len(), 1);
    assert!(out.index.rules(&sa("ns", "bot"), "").is_empty());
    assert!(out.index.rules(&user("x", &[]), "ns").is_empty());
    let (res, non) = out.index.rules_for(&user("alice", &["devs"]), "");
    assert_eq!(res.len(), 1);
    assert!(non.is_empty());
}

#[test]
fn non_resource_urls() {
    let rules = json!([{"nonResourceURLs": ["/metrics", "/logs/*", "/we*ird*"], "verbs": ["get"]}]);
    let (a, out) = authorizer(&[
        cluster_role("urls", rules),
        crb("c", "urls", json!([{"kind": "User", "name": "u"}])),
        rb(
            "ns",
            "r",
            "ClusterRole",
            "urls",
            json!([{"kind": "User", "name": "v"}]),
        ),
    ]);
    validate(&out.policies);
    let u = user("u", &[]);
    assert!(url_allowed(&a, &u, "get", "/metrics"));
    assert!(!url_allowed(&a, &u, "post", "/metrics"));
    assert!(!url_allowed(&a, &u, "get", "/metrics/x"));
    assert!(url_allowed(&a, &u, "get", "/logs/"));
    assert!(url_allowed(&a, &u, "get", "/logs/kubelet.log"));
    assert!(!url_allowed(&a, &u, "get", "/logs"));
    // `*` inside the prefix is literal.
    assert!(url_allowed(&a, &u, "get", "/we*irdness"));
    assert!(!url_allowed(&a, &u, "get", "/weXirdness"));
    // Only through ClusterRoleBindings.
    assert!(!url_allowed(&a, &user("v", &[]), "get", "/metrics"));
    let (a, out) = authorizer(&[
        cluster_role("all", json!([{"nonResourceURLs": ["*"], "verbs": ["*"]}])),
        crb("c", "all", json!([{"kind": "User", "name": "u"}])),
    ]);
    validate(&out.policies);
    assert!(url_allowed(&a, &u, "put", "/anything"));
}

#[test]
fn client_strings_are_escaped() {
    let nasty = "a\"b\\c\n*d' || true || \"";
    let rules = json!([{"apiGroups": [nasty], "resources": [nasty, format!("{nasty}/{nasty}")],
                        "resourceNames": [nasty], "verbs": ["get"]},
                       {"nonResourceURLs": [format!("{nasty}*"), nasty], "verbs": ["get"]}]);
    let (a, out) = authorizer(&[
        cluster_role(nasty, rules),
        crb(
            nasty,
            nasty,
            json!([{"kind": "User", "name": nasty}, {"kind": "Group", "name": nasty},
                                 {"kind": "ServiceAccount", "name": nasty, "namespace": nasty}]),
        ),
        rb(
            nasty,
            nasty,
            "ClusterRole",
            nasty,
            json!([{"kind": "User", "name": nasty}]),
        ),
    ]);
    assert_eq!(out.policies.len(), 3, "every rule compiles");
    validate(&out.policies);
    let u = user(nasty, &[]);
    assert!(allowed(&a, &u, ("get", nasty, nasty, "", nasty, nasty)).is_allowed());
    assert!(!allowed(&a, &u, ("get", nasty, nasty, "", nasty, "other")).is_allowed());
    assert!(!allowed(
        &a,
        &user("other", &[]),
        ("get", nasty, nasty, "", nasty, nasty)
    )
    .is_allowed());
    assert!(url_allowed(&a, &u, "get", nasty));
    assert!(url_allowed(&a, &u, "get", &format!("{nasty}/more")));
    assert!(!url_allowed(&a, &u, "get", "/other"));
}

#[test]
fn compiles_ten_thousand_bindings_quickly() {
    let mut objs = vec![cluster_role(
        "view",
        json!([{"apiGroups": [""], "resources": ["pods", "services"], "verbs": ["get", "list", "watch"]},
               {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]}]),
    )];
    for i in 0..10_000 {
        objs.push(rb(
            &format!("ns{}", i % 100),
            &format!("b{i}"),
            "ClusterRole",
            "view",
            json!([{"kind": "User", "name": format!("user{i}")}]),
        ));
    }
    let mut o = Objects::default();
    for v in &objs {
        o.apply(v);
    }
    let started = std::time::Instant::now();
    let out = compile(&o);
    let elapsed = started.elapsed();
    assert_eq!(out.policies.len(), 20_000);
    eprintln!("compiled 10,000 bindings (20,000 policies) in {elapsed:?}");
    // A change to one binding recompiles only that binding.
    let mut cache = compile::Cache::default();
    let _ = compile::compile_cached(&o, &mut cache);
    o.apply(&rb(
        "ns0",
        "b0",
        "ClusterRole",
        "view",
        json!([{"kind": "User", "name": "someone"}]),
    ));
    let started = std::time::Instant::now();
    let again = compile::compile_cached(&o, &mut cache);
    eprintln!("recompiled after one change in {:?}", started.elapsed());
    assert_eq!(again.policies.len(), 20_000);
    let schema = PolicyFiles::embedded().schema().expect("schema");
    let a = Arc::new(Authorizer::new(schema, NodeGraph::new()));
    a.set_source("rbac", out.policies);
    let u = user("user4242", &["system:authenticated"]);
    assert!(allowed(&a, &u, ("list", "", "pods", "", "ns42", "")).is_allowed());
    assert!(!allowed(&a, &u, ("list", "", "pods", "", "ns43", "")).is_allowed());
}
