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
