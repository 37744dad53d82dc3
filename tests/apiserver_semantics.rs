//! API semantics kubectl exercises only indirectly, checked over raw HTTPS: pagination from one
//! snapshot, generateName, dryRun, field selectors, the status/binding/eviction subresources,
//! and namespace termination.

mod harness;

use std::time::Duration;

use harness::{eventually, Raw, Server};
use serde_json::{json, Value};

fn post(s: &Server, path: &str, body: &Value) -> (u16, Value) {
    let bytes = body.to_string();
    let r = s.raw(Raw::send(
        "POST",
        path,
        "application/json",
        bytes.as_bytes(),
    ));
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

fn get(s: &Server, path: &str) -> (u16, Value) {
    let r = s.raw(Raw::get(path));
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "p"}},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
}

#[test]
fn pagination_reads_one_snapshot() {
    let s = Server::start();
    let cms = "/api/v1/namespaces/default/configmaps";
    for i in 0..7 {
        let (code, _) = post(
            &s,
            cms,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}")}}),
        );
        assert_eq!(code, 201);
    }
    let (_, first) = get(&s, &format!("{cms}?limit=3"));
    let rv = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut names: Vec<String> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 3);
    // A write after the first page is not seen by later pages.
    post(
        &s,
        cms,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c3a"}}),
    );
    let mut token = first["metadata"]["continue"].as_str().unwrap().to_string();
    loop {
        let (code, page) = get(&s, &format!("{cms}?limit=3&continue={token}"));
        assert_eq!(code, 200, "{page}");
        assert_eq!(page["metadata"]["resourceVersion"].as_str().unwrap(), rv);
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match page["metadata"]["continue"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_string(),
            _ => break,
        }
    }
    // Every namespace also holds the root CA ConfigMap (root-ca-cert-publisher).
    names.retain(|n| n != "kube-root-ca.crt");
    assert_eq!(names, (0..7).map(|i| format!("c{i}")).collect::<Vec<_>>());
    // kubectl pages with --chunk-size and still sees everything.
    let listed = s.ok(&["get", "cm", "--chunk-size=2", "-o", "name"]);
    assert_eq!(
        listed
            .lines()
            .filter(|l| l.starts_with("configmap/c"))
            .count(),
        8
    );
}

#[test]
fn generate_name_dry_run_and_field_selectors() {
    let s = Server::start();
    let pods = "/api/v1/namespaces/default/pods";
    let (code, made) = post(
        &s,
        pods,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    );
    assert_eq!(code, 201, "{made}");
    let name = made["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    assert_eq!(made["status"]["phase"], "Pending");
    assert_eq!(made["spec"]["restartPolicy"], "Always");
    // dryRun validates and answers, but stores nothing.
    let (code, dry) = post(&s, &format!("{pods}?dryRun=All"), &pod("dry"));
    assert_eq!(code, 201, "{dry}");
    assert_eq!(get(&s, &format!("{pods}/dry")).0, 404);
    // Bind one pod to a node, then select by spec.nodeName.
    post(&s, pods, &pod("bound"));
    let (code, _) = post(
        &s,
        &format!("{pods}/bound/binding"),
        &json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": "bound"}, "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}}),
    );
    assert_eq!(code, 201);
    let (code, again) = post(
        &s,
        &format!("{pods}/bound/binding"),
        &json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": "bound"}, "target": {"name": "node-2"}}),
    );
    assert_eq!(code, 409, "{again}");
    let (_, on_node) = get(&s, &format!("{pods}?fieldSelector=spec.nodeName%3Dnode-1"));
    let names: Vec<&str> = on_node["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["bound"]);
    let (_, not_on_node) = get(
        &s,
        &format!("{pods}?fieldSelector=spec.nodeName!%3Dnode-1,metadata.name!%3D{name}"),
    );
    assert!(
        not_on_node["items"].as_array().unwrap().is_empty(),
        "{not_on_node}"
    );
}

#[test]
fn status_subresource_and_eviction() {
    let s = Server::start();
    let pods = "/api/v1/namespaces/default/pods";
    // A scheduler no one runs: the default scheduler would write this pending pod's
    // PodScheduled condition and race the resourceVersions this test sends.
    let mut unscheduled = pod("st");
    unscheduled["spec"]["schedulerName"] = json!("manual");
    let (_, p) = post(&s, pods, &unscheduled);
    // The main resource ignores status changes; /status takes only status.
    let mut changed = p.clone();
    changed["status"]["phase"] = json!("Running");
    changed["metadata"]["labels"]["extra"] = json!("x");
    let body = changed.to_string();
    let r = s.raw(Raw::send(
        "PUT",
        &format!("{pods}/st/status"),
        "application/json",
        body.as_bytes(),
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (_, now) = get(&s, &format!("{pods}/st"));
    assert_eq!(now["status"]["phase"], "Running");
    assert!(
        now["metadata"]["labels"].get("extra").is_none(),
        "status updates must not change metadata"
    );
    let mut spec_try = now.clone();
    spec_try["status"]["phase"] = json!("Failed");
    let body = spec_try.to_string();
    assert_eq!(
        s.raw(Raw::send(
            "PUT",
            &format!("{pods}/st"),
            "application/json",
            body.as_bytes()
        ))
        .status,
        200
    );
    assert_eq!(
        get(&s, &format!("{pods}/st")).1["status"]["phase"],
        "Running"
    );
    // Eviction of an unscheduled pod deletes it.
    let (code, _) = post(
        &s,
        &format!("{pods}/st/eviction"),
        &json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "st"}}),
    );
    assert_eq!(code, 201);
    assert_eq!(get(&s, &format!("{pods}/st")).0, 404);
    // The log of a pod that is gone is a NotFound, as upstream's.
    let logs = s.raw(Raw::get(&format!("{pods}/st/log")));
    assert_eq!(logs.status, 404, "{}", String::from_utf8_lossy(&logs.body));
    assert_eq!(logs.json()["reason"], "NotFound");
}

#[test]
fn terminating_namespaces_refuse_content_and_finish() {
    let s = Server::start();
    s.ok(&["create", "namespace", "doomed"]);
    s.ok(&["create", "configmap", "inside", "-n", "doomed"]);
    s.ok(&[
        "create",
        "deployment",
        "d",
        "--image=busybox",
        "-n",
        "doomed",
    ]);
    s.ok(&["delete", "namespace", "doomed", "--wait=false"]);
    // While it terminates (or once gone) no new content is accepted.
    let (code, v) = post(
        &s,
        "/api/v1/namespaces/doomed/configmaps",
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}}),
    );
    assert!(code == 403 || code == 404, "{code} {v}");
    assert!(
        eventually(Duration::from_secs(20), || !s
            .kubectl(&["get", "ns", "doomed"])
            .status
            .success()),
        "namespace never finished terminating"
    );
    assert!(s
        .ok(&[
            "get",
            "cm",
            "-A",
            "-o",
            "name",
            "--field-selector",
            "metadata.namespace=doomed"
        ])
        .trim()
        .is_empty());
}

#[test]
fn services_get_cluster_ips_and_node_ports() {
    let s = Server::start();
    let k = s.json(&["get", "svc", "kubernetes", "-n", "default"]);
    assert_eq!(k["spec"]["clusterIP"], "10.43.0.1");
    s.ok(&["create", "service", "nodeport", "web", "--tcp=80:8080"]);
    let svc = s.json(&["get", "svc", "web"]);
    let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.43.") && ip != "10.43.0.1", "{ip}");
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&node_port), "{node_port}");
    // The address is claimed by an IPAddress object and survives an apply without it.
    s.ok(&["get", "ipaddresses", &ip]);
    s.ok(&["label", "svc", "web", "x=y"]);
    assert_eq!(
        s.json(&["get", "svc", "web"])["spec"]["clusterIP"],
        ip.as_str()
    );
    // Asking for a taken address is refused; headless services get none.
    let taken = format!(
        r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"dup"}},"spec":{{"clusterIP":"{ip}","ports":[{{"port":1}}]}}}}"#
    );
    let err = String::from_utf8_lossy(&s.kubectl_in(&["create", "-f", "-"], Some(&taken)).stderr)
        .to_string();
    assert!(err.contains("already allocated"), "{err}");
    s.ok(&[
        "create",
        "service",
        "clusterip",
        "headless",
        "--clusterip=None",
    ]);
    assert_eq!(
        s.json(&["get", "svc", "headless"])["spec"]["clusterIP"],
        "None"
    );
    let table = s.ok(&["get", "svc", "web"]);
    assert!(table.contains(&ip) && table.contains("NodePort"), "{table}");
    s.ok(&["delete", "svc", "web"]);
    assert!(
        !s.kubectl(&["get", "ipaddresses", &ip]).status.success(),
        "address released"
    );
}

#[test]
fn watches_with_selectors_see_objects_enter_and_leave() {
    let s = Server::start();
    s.ok(&["create", "configmap", "sel"]);
    let rv = s.ok(&[
        "get",
        "cm",
        "sel",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    s.ok(&["label", "cm", "sel", "pick=yes"]);
    s.ok(&["annotate", "cm", "sel", "touched=1"]);
    s.ok(&["label", "cm", "sel", "pick-"]);
    let r = s.raw(Raw::get(&format!(
        "/api/v1/namespaces/default/configmaps?watch=true&labelSelector=pick%3Dyes&resourceVersion={rv}&timeoutSeconds=1"
    )));
    let types: Vec<String> = r
        .body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(types, vec!["ADDED", "MODIFIED", "DELETED"]);
}
