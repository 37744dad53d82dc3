//! The garbage collector and the namespace controller (`src/controllers/garbage_collector.rs`,
//! `namespace.rs`), end to end with the stock kubectl: a Deployment's delete cascades to its
//! ReplicaSets and pods (background and foreground), `--cascade=orphan` leaves them without an
//! owner, a dependent whose owner never existed is collected, and a deleted namespace is
//! emptied (built-ins and custom resources) and then removed.
//!
//! Pods do not run here (no kubelet, no nodes): the counts are of pods that exist and are not
//! being deleted, whatever a scheduler does with them.

mod harness;

use std::time::Duration;

use harness::{eventually, Server};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn names(s: &Server, kind: &str, ns: &str, selector: &str) -> Vec<String> {
    let list = s.json(&["get", kind, "-n", ns, "-l", selector]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

fn deployment(s: &Server, name: &str, ns: &str, replicas: u32) {
    s.ok(&[
        "create",
        "deployment",
        name,
        "--image=nginx:1.27",
        &format!("--replicas={replicas}"),
        "-n",
        ns,
    ]);
    let sel = format!("app={name}");
    assert!(
        eventually(WAIT, || names(s, "rs", ns, &sel).len() == 1
            && names(s, "pods", ns, &sel).len() == replicas as usize),
        "deployment {name} never got its ReplicaSet and {replicas} pods"
    );
}

#[test]
fn deleting_a_deployment_cascades_or_orphans() {
    let s = Server::start();
    s.settle();

    // Background (kubectl's default): the ReplicaSet and pods follow the Deployment.
    deployment(&s, "bg", "default", 2);
    s.ok(&["delete", "deployment", "bg"]);
    assert!(
        eventually(WAIT, || names(&s, "rs", "default", "app=bg").is_empty()
            && names(&s, "pods", "default", "app=bg").is_empty()),
        "background cascade left dependents"
    );

    // Foreground: the Deployment is gone only once its dependents are.
    deployment(&s, "fg", "default", 2);
    s.ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--wait=true",
        "--timeout=30s",
    ]);
    assert!(!s.kubectl(&["get", "deploy", "fg"]).status.success());
    assert!(
        s.json(&["get", "rs", "-l", "app=fg"])["items"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "foreground deletion returned before the ReplicaSet was gone"
    );

    // Orphan: the ReplicaSet and its pods stay, no longer owned by the Deployment.
    deployment(&s, "or", "default", 2);
    let rs_before = names(&s, "rs", "default", "app=or");
    let pods_before = names(&s, "pods", "default", "app=or");
    s.ok(&[
        "delete",
        "deployment",
        "or",
        "--cascade=orphan",
        "--wait=true",
    ]);
    assert!(!s.kubectl(&["get", "deploy", "or"]).status.success());
    let rs = s.json(&["get", "rs", &rs_before[0]]);
    assert!(
        rs["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "orphaned ReplicaSet still owned: {}",
        rs["metadata"]
    );
    // Barrier: scale the orphaned set to 3 and wait for the third pod, so the controllers have
    // handled everything the orphaning caused; the two original pods must still be there.
    s.ok(&["scale", "rs", &rs_before[0], "--replicas=3"]);
    assert!(
        eventually(WAIT, || names(&s, "pods", "default", "app=or").len() == 3),
        "the orphaned ReplicaSet is not managed any more"
    );
    let pods_after = names(&s, "pods", "default", "app=or");
    assert!(
        pods_before.iter().all(|p| pods_after.contains(p)),
        "orphaned pods were deleted: {pods_before:?} vs {pods_after:?}"
    );
}

#[test]
fn dangling_dependents_are_collected() {
    let s = Server::start();
    s.settle();
    // An owner that never existed (uid nobody has): the collector verifies and deletes.
    s.ok_in(
        &["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dangling","ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"ghost","uid":"00000000-0000-0000-0000-000000000001"}]}}"#,
    );
    // A dependent with one live and one missing owner keeps living, minus the dead reference.
    s.ok(&["create", "configmap", "alive"]);
    let uid = s.ok(&["get", "cm", "alive", "-o", "jsonpath={.metadata.uid}"]);
    s.ok_in(
        &["create", "-f", "-"],
        &format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"half","ownerReferences":[{{"apiVersion":"v1","kind":"ConfigMap","name":"alive","uid":"{uid}"}},{{"apiVersion":"v1","kind":"ConfigMap","name":"ghost","uid":"00000000-0000-0000-0000-000000000002"}}]}}}}"#
        ),
    );
    assert!(
        eventually(WAIT, || !s
            .kubectl(&["get", "cm", "dangling"])
            .status
            .success()),
        "a dependent of a missing owner was not collected"
    );
    assert!(
        eventually(WAIT, || {
            let half = s.json(&["get", "cm", "half"]);
            half["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|r| r.len() == 1 && r[0]["name"] == "alive")
        }),
        "the dead reference was not dropped"
    );
    // Deleting the live owner then takes it.
    s.ok(&["delete", "cm", "alive"]);
    assert!(eventually(WAIT, || !s
        .kubectl(&["get", "cm", "half"])
        .status
        .success()));
}

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

#[test]
fn deleting_a_namespace_empties_and_removes_it() {
    let s = Server::start();
    s.settle();
    s.ok_in(&["apply", "-f", "-"], CRD);
    assert!(eventually(WAIT, || s
        .kubectl(&["get", "widgets", "-A"])
        .status
        .success()));
    s.ok(&["create", "namespace", "doomed"]);
    s.ok(&["create", "configmap", "c", "-n", "doomed"]);
    s.ok(&["create", "secret", "generic", "s", "-n", "doomed"]);
    s.ok(&[
        "create",
        "service",
        "clusterip",
        "svc",
        "--tcp=80:80",
        "-n",
        "doomed",
    ]);
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: doomed}\n",
    );
    deployment(&s, "app", "doomed", 2);
    // A finalizer someone else owns holds the namespace until it is removed.
    s.ok_in(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, namespace: doomed, finalizers: [example.com/hold]}\n",
    );
    s.ok(&["delete", "namespace", "doomed", "--wait=false"]);
    assert!(
        eventually(WAIT, || {
            let cms = s.json(&["get", "cm", "-n", "doomed"]);
            cms["items"]
                .as_array()
                .is_some_and(|a| a.len() == 1 && a[0]["metadata"]["name"] == "held")
                && s.json(&["get", "widgets", "-n", "doomed"])["items"]
                    .as_array()
                    .is_some_and(|a| a.is_empty())
                && s.json(&["get", "pods", "-n", "doomed"])["items"]
                    .as_array()
                    .is_some_and(|a| a.is_empty())
        }),
        "the namespace was not emptied"
    );
    let ns: Value = s.json(&["get", "ns", "doomed"]);
    assert_eq!(ns["status"]["phase"], "Terminating");
    s.ok(&[
        "patch",
        "cm",
        "held",
        "-n",
        "doomed",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    assert!(
        eventually(WAIT, || !s
            .kubectl(&["get", "ns", "doomed"])
            .status
            .success()),
        "the namespace was never removed"
    );
    // The Service's cluster IP went back to the pool with it.
    assert!(s.json(&["get", "svc", "-A"])["items"]
        .as_array()
        .is_some_and(|a| a.iter().all(|o| o["metadata"]["namespace"] != "doomed")));
}
