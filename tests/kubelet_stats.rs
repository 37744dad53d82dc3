//! Resource usage end to end: a real `rampart server` with its embedded agent runs a pod whose
//! container burns CPU under a 200m limit next to an idle one; the kubelet's `/stats/summary`
//! and `/metrics/resource` (read through the apiserver's `nodes/proxy` with the stock kubectl,
//! and straight from the kubelet as a user granted only `nodes/stats`) must show that
//! container's CPU rate near its limit and the idle one's near zero, with memory figures
//! from the pod's cgroups.
//! Root only (skipped with a reason otherwise; `RAMPART_REQUIRE_PRIVILEGED=1` fails instead).

mod harness;
mod kubelet_support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use harness::{eventually, Server};
use kubelet_support::*;
use serde_json::Value;

pub struct Node {
    pub server: Server,
    pub name: String,
    _logs_dir: tempfile::TempDir,
    _cleanup: Cleanup,
}

/// A server with its agent, busybox imported, and pod `default/burn` running: container
/// `burn` spins under a 200m CPU limit, container `idle` sleeps.
pub fn start_with_burner() -> Node {
    let logs_dir = tempfile::tempdir().unwrap();
    let name = format!("ks-{}", std::process::id());
    let cleanup_root = format!("rampart-test-{}", std::process::id());
    let server = Server::start_with_agent(&[
        "--node-name",
        &name,
        "--pod-log-dir",
        logs_dir.path().to_str().unwrap(),
        "--kubelet-cgroup-root",
        &cleanup_root,
        "--kubelet-port",
        "0",
    ]);
    let cleanup = Cleanup {
        cgroup_root: cleanup_root,
        data_dir: server.data_dir().to_path_buf(),
    };
    let tar = write(
        logs_dir.path().parent().unwrap_or(Path::new("/tmp")),
        &format!("busybox-ks-{}.tar", std::process::id()),
        &docker_archive("busybox:test", &[busybox_layer()]),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["images", "import", "--data-dir"])
        .arg(server.data_dir().join("agent"))
        .arg(&tar)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&tar);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node = Node {
        server,
        name,
        _logs_dir: logs_dir,
        _cleanup: cleanup,
    };
    let pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: burn, namespace: default, labels: {{app: burn}}}}
spec:
  nodeName: {node}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: burn
    image: busybox:test
    imagePullPolicy: Never
    command: ["sh", "-c", "while :; do :; done"]
    resources: {{limits: {{cpu: 200m}}}}
  - name: idle
    image: busybox:test
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#,
        node = node.name
    );
    // The node registers shortly after the server answers.
    let applied = eventually(Duration::from_secs(60), || {
        node.server
            .kubectl_in(&["apply", "-f", "-"], Some(&pod))
            .status
            .success()
    });
    assert!(applied, "pod burn was never accepted");
    let running = eventually(Duration::from_secs(90), || {
        let o = node.server.kubectl(&["get", "pod", "burn", "-o", "json"]);
        o.status.success()
            && serde_json::from_slice::<Value>(&o.stdout)
                .map(|p| p["status"]["phase"] == "Running")
                .unwrap_or(false)
    });
    assert!(running, "pod burn never ran");
    node
}

fn raw(n: &Node, path: &str) -> Option<String> {
    let o = n.server.kubectl(&["get", "--raw", path]);
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn container<'a>(summary: &'a Value, pod: &str, name: &str) -> Option<&'a Value> {
    summary["pods"]
        .as_array()?
        .iter()
        .find(|p| p["podRef"]["name"] == pod && p["podRef"]["namespace"] == "default")?
        ["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

/// A sample's value in Prometheus text (`name{labels} value timestamp`).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

#[test]
fn stats_summary_and_resource_metrics_show_a_burning_container() {
    require_privileged!();
    let n = start_with_burner();
    let summary_path = format!("/api/v1/nodes/{}/proxy/stats/summary", n.name);
    // A rate needs two readings at least a second apart: poll until the burner shows one.
    let mut last = Value::Null;
    let seen = eventually(Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(1200));
        last = raw(&n, &summary_path)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null);
        container(&last, "burn", "burn")
            .and_then(|c| c["cpu"]["usageNanoCores"].as_u64())
            .is_some_and(|v| v > 100_000_000)
    });
    assert!(
        seen,
        "the burning container never showed > 100m CPU: {last:#}"
    );
    let burn = container(&last, "burn", "burn").unwrap();
    let idle = container(&last, "burn", "idle").expect("idle container in the summary");
    let burn_cores = burn["cpu"]["usageNanoCores"].as_u64().unwrap();
    // The 200m CFS quota bounds it (with slack for the window's edges).
    assert!(burn_cores < 300_000_000, "over the limit: {burn_cores}");
    let idle_cores = idle["cpu"]["usageNanoCores"].as_u64().unwrap_or(0);
    assert!(idle_cores < 20_000_000, "idle container busy: {idle_cores}");
    assert!(burn["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap() > 0);
    assert!(burn["startTime"].is_string(), "{burn:#}");
    let ws = burn["memory"]["workingSetBytes"].as_u64().unwrap();
    let usage = burn["memory"]["usageBytes"].as_u64().unwrap();
    assert!(ws > 0 && ws <= usage, "working set {ws} vs usage {usage}");
    // The pod is the sum of its containers (and more: its own group's overhead).
    let pod = last["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "burn")
        .unwrap();
    assert!(
        pod["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap()
            >= burn["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap()
    );
    assert_eq!(
        pod["podRef"]["uid"],
        n.server.json(&["get", "pod", "burn"])["metadata"]["uid"]
    );
    // The node: the whole machine, at least the burner's rate.
    assert_eq!(last["node"]["nodeName"], n.name.as_str());
    assert!(
        last["node"]["cpu"]["usageCoreNanoSeconds"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(last["node"]["memory"]["workingSetBytes"].as_u64().unwrap() > ws);
    assert!(last["node"]["memory"]["availableBytes"].as_u64().is_some());

    // /metrics/resource: the cumulative counters in Prometheus text.
    let text = raw(
        &n,
        &format!("/api/v1/nodes/{}/proxy/metrics/resource", n.name),
    )
    .expect("metrics/resource");
    let burn_s = sample(
        &text,
        "container_cpu_usage_seconds_total{container=\"burn\",namespace=\"default\",pod=\"burn\"}",
    )
    .unwrap_or_else(|| panic!("no burn CPU series in:\n{text}"));
    assert!(burn_s > 0.1, "{burn_s}");
    assert!(sample(&text, "node_cpu_usage_seconds_total").unwrap() > burn_s);
    assert!(
        sample(
            &text,
            "container_memory_working_set_bytes{container=\"idle\",namespace=\"default\",pod=\"burn\"}"
        )
        .unwrap()
            > 0.0
    );
    assert!(sample(
        &text,
        "pod_memory_working_set_bytes{namespace=\"default\",pod=\"burn\"}"
    )
    .is_some());
    assert_eq!(sample(&text, "resource_scrape_error"), Some(0.0));
    assert!(text.contains("# TYPE container_cpu_usage_seconds_total counter"));

    // Straight to the kubelet: a user granted only nodes/stats reads the summary, and is
    // refused nodes/metrics (the kubelet asks the apiserver for each subresource).
    let node = n.server.json(&["get", "node", &n.name]);
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap() as u16;
    let ip = node["status"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .unwrap()
        .to_string();
    n.server.ok_in(
        &["apply", "-f", "-"],
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: node-stats-only}
rules:
- {apiGroups: [""], resources: [nodes/stats], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: statsy-node-stats}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: node-stats-only}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: statsy}
"#,
    );
    let granted = eventually(Duration::from_secs(30), || {
        let o = n.server.kubectl(&[
            "auth",
            "can-i",
            "get",
            "nodes",
            "--subresource=stats",
            "--as=statsy",
        ]);
        String::from_utf8_lossy(&o.stdout).trim() == "yes"
    });
    assert!(granted, "the RBAC grant never took effect");
    let statsy = n.server.client_cert("statsy", &[]);
    let ca = n.server.ca_pem();
    let (code, body) = kubelet_get(port, &ip, &ca, statsy.clone(), "/stats/summary");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(container(&v, "burn", "idle").is_some(), "{v:#}");
    let (code, body) = kubelet_get(port, &ip, &ca, statsy, "/metrics/resource");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("subresource(s)=[metrics]"), "{body}");
}

/// One HTTPS/1.1 GET straight to the kubelet API as `identity`.
fn kubelet_get(
    port: u16,
    node_ip: &str,
    ca_pem: &str,
    (cert, key): (String, String),
    path: &str,
) -> (u16, String) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap(),
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    let name = ServerName::try_from(node_ip.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {node_ip}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (code, body)
}

/// A raw GET through kubectl (`--raw` cannot be combined with `-o json`).
fn raw_json(server: &Server, path: &str) -> Value {
    let out = server.ok(&["get", "--raw", path]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{path}: {e}: {out}"))
}

/// Millicores from a `kubectl top` cell ("201m", or "1" for whole cores).
fn millicores(cell: &str) -> Option<u64> {
    match cell.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => cell.parse::<u64>().ok().map(|c| c * 1000),
    }
}

#[test]
fn kubectl_top_reads_the_metrics_api() {
    require_privileged!();
    let n = start_with_burner();
    // Discovery lists the group (kubectl top checks it first), with its local APIService.
    let groups = raw_json(&n.server, "/apis");
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "metrics.k8s.io" && g["preferredVersion"]["version"] == "v1beta1"),
        "{groups:#}"
    );
    let svc = n
        .server
        .json(&["get", "apiservice", "v1beta1.metrics.k8s.io"]);
    assert!(svc["spec"].get("service").is_none(), "local: {svc:#}");
    // The scraper needs two rounds for a CPU rate.
    let mut last = String::new();
    let topped = eventually(Duration::from_secs(60), || {
        let o = n
            .server
            .kubectl(&["top", "pod", "burn", "--containers", "--no-headers"]);
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        // POD NAME CPU MEMORY
        o.status.success()
            && last.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() == 4 && f[1] == "burn" && millicores(f[2]).is_some_and(|m| m >= 100)
            })
    });
    assert!(
        topped,
        "kubectl top pod --containers never showed the burner: {last}"
    );
    let line = last
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("burn"))
        .unwrap();
    let cpu = millicores(line.split_whitespace().nth(2).unwrap()).unwrap();
    assert!(cpu <= 300, "above the 200m limit: {line}");
    assert!(
        line.split_whitespace().nth(3).unwrap().ends_with("Mi"),
        "{line}"
    );
    let idle = last
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("idle"))
        .unwrap_or_else(|| panic!("no idle container in {last}"));
    assert!(
        millicores(idle.split_whitespace().nth(2).unwrap()).unwrap() < 20,
        "{idle}"
    );
    // Pod level: the sum.
    let out = n
        .server
        .ok(&["top", "pod", "--no-headers", "-l", "app=burn"]);
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(f[0], "burn", "{out}");
    assert!(millicores(f[1]).unwrap() >= 100, "{out}");
    // The node: at least the burner.
    let out = n.server.ok(&["top", "node", "--no-headers"]);
    let line = out
        .lines()
        .find(|l| l.starts_with(&n.name))
        .unwrap_or_else(|| panic!("node {} not in {out}", n.name));
    let f: Vec<&str> = line.split_whitespace().collect();
    assert!(millicores(f[1]).unwrap() >= 100, "{line}");
    assert!(f[2].ends_with('%') && f[4].ends_with('%'), "{line}");

    // The objects as metrics-server shapes them; selectors; 404 for what is not measured.
    let pm = raw_json(
        &n.server,
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burn",
    );
    assert_eq!(pm["kind"], "PodMetrics");
    assert_eq!(pm["metadata"]["labels"]["app"], "burn");
    assert!(pm["timestamp"].is_string() && pm["window"].as_str().unwrap().ends_with('s'));
    assert!(pm["containers"][0]["usage"]["cpu"]
        .as_str()
        .unwrap()
        .ends_with('n'));
    let none = raw_json(
        &n.server,
        "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=app%3Dnope",
    );
    assert_eq!(none["kind"], "PodMetricsList");
    assert_eq!(none["items"].as_array().unwrap().len(), 0, "{none:#}");
    let some = raw_json(
        &n.server,
        "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=app%3Dburn",
    );
    assert_eq!(some["items"].as_array().unwrap().len(), 1, "{some:#}");
    let nm = raw_json(
        &n.server,
        &format!("/apis/metrics.k8s.io/v1beta1/nodes/{}", n.name),
    );
    assert_eq!(nm["kind"], "NodeMetrics");
    assert!(nm["usage"]["memory"].as_str().unwrap().ends_with("Ki"));
    let err = n.server.fails(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/ghost",
    ]);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
    let err = n.server.fails(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=%3D%3D%3D",
    ]);
    assert!(err.contains("BadRequest") || err.contains("400"), "{err}");
    // Read-only, as metrics-server: writes are refused and change nothing.
    let body = n.server.data_dir().join("pm.json");
    std::fs::write(
        &body,
        r#"{"apiVersion":"metrics.k8s.io/v1beta1","kind":"PodMetrics","metadata":{"name":"x"}}"#,
    )
    .unwrap();
    let path = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods";
    let err = n
        .server
        .fails(&["create", "--raw", path, "-f", body.to_str().unwrap()]);
    assert!(
        err.contains("MethodNotAllowed") || err.contains("405"),
        "{err}"
    );
    let err = n
        .server
        .fails(&["delete", "--raw", &format!("{path}/burn")]);
    assert!(
        err.contains("MethodNotAllowed") || err.contains("405"),
        "{err}"
    );
    assert_eq!(
        raw_json(&n.server, &format!("{path}/burn"))["kind"],
        "PodMetrics"
    );

    // Authorization: `view` includes system:aggregated-metrics-reader; nobody else reads.
    n.server.ok_in(
        &["apply", "-f", "-"],
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: viewer, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: viewer}
"#,
    );
    let can = |user: &str| {
        let o = n.server.kubectl(&[
            "auth",
            "can-i",
            "list",
            "pods.metrics.k8s.io",
            "-n",
            "default",
            &format!("--as={user}"),
        ]);
        String::from_utf8_lossy(&o.stdout).trim() == "yes"
    };
    assert!(
        eventually(Duration::from_secs(30), || can("viewer")),
        "view does not read pod metrics"
    );
    assert!(!can("stranger"));
    let o = n.server.kubectl(&["top", "pod", "burn", "--as=stranger"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
