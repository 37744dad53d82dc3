//! The kubelet API and `kubectl logs`, end to end: a real `rampart server` with its embedded
//! agent (kubelet API on a free port), real containers, the stock kubectl going through the
//! apiserver to the kubelet over mTLS; and the kubelet API reached directly with raw HTTPS
//! (anonymous → 401, a user without `nodes/proxy` → 403, the admin → served).
//! Root only (skipped with a reason otherwise; `RAMPART_REQUIRE_PRIVILEGED=1` fails instead).

mod harness;
mod kubelet_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{eventually, kubectl_bin, Server};
use kubelet_support::*;
use serde_json::Value;

struct Node {
    server: Server,
    name: String,
    _logs_dir: tempfile::TempDir,
    _cleanup: Cleanup,
}

fn start() -> Node {
    let logs_dir = tempfile::tempdir().unwrap();
    let name = format!("ka-{}", std::process::id());
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
    let ready = eventually(Duration::from_secs(60), || {
        let o = server.kubectl(&["get", "node", &name, "-o", "json"]);
        o.status.success()
            && serde_json::from_slice::<Value>(&o.stdout)
                .map(|n| {
                    n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
                        .as_u64()
                        .is_some_and(|p| p != 0 && p != 10250)
                        && n["status"]["conditions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
                .unwrap_or(false)
    });
    assert!(
        ready,
        "node {name} never became Ready with its kubelet port"
    );
    let tar = write(
        logs_dir.path().parent().unwrap_or(Path::new("/tmp")),
        &format!("busybox-ka-{}.tar", std::process::id()),
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
    Node {
        server,
        name,
        _logs_dir: logs_dir,
        _cleanup: cleanup,
    }
}

impl Node {
    /// A pod whose containers are `(name, script)`.
    fn pod(&self, name: &str, policy: &str, containers: &[(&str, &str)]) {
        let mut yaml = format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  nodeName: {node}
  restartPolicy: {policy}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
"#,
            node = self.name
        );
        for (c, script) in containers {
            yaml.push_str(&format!(
                "  - name: {c}\n    image: busybox:test\n    imagePullPolicy: Never\n    command: [\"sh\", \"-c\", {script:?}]\n"
            ));
        }
        self.server.ok_in(&["apply", "-f", "-"], &yaml);
    }

    fn wait_for(&self, name: &str, secs: u64, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let o = self.server.kubectl(&["get", "pod", name, "-o", "json"]);
            if o.status.success() {
                last = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
                if f(&last) {
                    return last;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "pod {name}: {what} not reached in {secs}s; last: {:#}",
            last["status"]
        );
    }

    fn running(&self, name: &str) {
        self.wait_for(name, 60, "Running", |p| p["status"]["phase"] == "Running");
    }

    /// `kubectl logs ARGS` once it gives `want_lines` lines (the kubelet may still be getting
    /// its serving certificate, and output takes a moment to reach the file).
    fn logs_until(&self, args: &[&str], ok: impl Fn(&str) -> bool) -> String {
        let mut full = vec!["logs"];
        full.extend_from_slice(args);
        let mut last = String::new();
        let done = eventually(Duration::from_secs(60), || {
            let o = self.server.kubectl(&full);
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            o.status.success() && ok(&String::from_utf8_lossy(&o.stdout))
        });
        assert!(
            done,
            "kubectl {full:?} never gave the expected output; last: {last}"
        );
        let o = self.server.kubectl(&full);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn node_json(&self) -> Value {
        self.server.json(&["get", "node", &self.name])
    }
}

#[test]
fn kubectl_logs_with_upstreams_options() {
    require_privileged!();
    let n = start();
    n.pod(
        "multi",
        "Never",
        &[
            ("a", "echo a1; echo a2; echo a3 >&2; sleep 3600"),
            ("b", "echo from-b; sleep 3600"),
        ],
    );
    n.running("multi");
    let out = n.logs_until(&["multi", "-c", "a"], |o| o.lines().count() == 3);
    assert_eq!(out, "a1\na2\na3\n");
    // Several containers and none named: kubectl defaults to the first one itself; the API
    // answers upstream's message, listing them.
    assert_eq!(n.server.ok(&["logs", "multi"]), "a1\na2\na3\n");
    let r = n.server.raw(harness::Raw::get(
        "/api/v1/namespaces/default/pods/multi/log",
    ));
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["message"],
        "a container name must be specified for pod multi, choose one of: [a b]"
    );
    assert_eq!(
        n.server.ok(&["logs", "multi", "-c", "a", "--tail=1"]),
        "a3\n"
    );
    assert_eq!(n.server.ok(&["logs", "multi", "-c", "a", "--tail=0"]), "");
    assert_eq!(
        n.server
            .ok(&["logs", "multi", "-c", "a", "--limit-bytes=4"]),
        "a1\na"
    );
    assert_eq!(
        n.server.ok(&["logs", "multi", "-c", "a", "--since=1h"]),
        "a1\na2\na3\n"
    );
    assert_eq!(
        n.server.ok(&[
            "logs",
            "multi",
            "-c",
            "a",
            "--since-time=2099-01-01T00:00:00Z"
        ]),
        ""
    );
    let ts = n.server.ok(&["logs", "multi", "-c", "b", "--timestamps"]);
    let (t, text) = ts.trim_end().split_once(' ').expect("timestamp and text");
    assert_eq!(text, "from-b");
    let t: jiff::Timestamp = t.parse().expect("an RFC 3339 timestamp");
    assert!(
        (jiff::Timestamp::now() - t).get_seconds().abs() < 120,
        "{t}"
    );
    let all = n.server.ok(&["logs", "multi", "--all-containers"]);
    for l in ["a1", "a2", "a3", "from-b"] {
        assert!(all.lines().any(|x| x == l), "{l} missing from {all}");
    }
    // Errors as upstream words them.
    let err = n.server.fails(&["logs", "multi", "-c", "nope"]);
    assert!(
        err.contains("container nope is not valid for pod multi"),
        "{err}"
    );
    let err = n.server.fails(&["logs", "multi", "-c", "a", "--previous"]);
    assert!(
        err.contains("previous terminated container \"a\" in pod \"multi\" not found"),
        "{err}"
    );
    let err = n.server.fails(&["logs", "ghost"]);
    assert!(err.contains("pods \"ghost\" not found"), "{err}");
    // Bad options: 422 as upstream's PodLogOptions validation, through the raw API.
    for (q, code) in [
        ("tailLines=-1", 422),
        ("limitBytes=0", 422),
        ("sinceSeconds=0", 422),
    ] {
        let path = format!("/api/v1/namespaces/default/pods/multi/log?container=a&{q}");
        let r = n.server.raw(harness::Raw::get(&path));
        assert_eq!(r.status, code, "{q}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["kind"], "Status");
    }
    n.server
        .ok(&["delete", "pod", "multi", "--wait=true", "--timeout=60s"]);
}

#[test]
fn kubectl_logs_follow_and_previous() {
    require_privileged!();
    let n = start();
    n.pod(
        "ticker",
        "Never",
        &[(
            "main",
            "i=0; while true; do i=$((i+1)); echo tick$i; sleep 0.2; done",
        )],
    );
    n.pod(
        "crash",
        "Always",
        &[(
            "main",
            "echo run-$(cat /proc/sys/kernel/random/uuid); sleep 1; exit 1",
        )],
    );
    n.running("ticker");
    n.logs_until(&["ticker"], |o| o.contains("tick2"));
    // Follow: lines keep coming, in order, through one request.
    let mut child = Command::new(kubectl_bin())
        .args(["logs", "-f", "ticker"])
        .env("KUBECONFIG", n.server.kubeconfig())
        .env("HOME", n.server.data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 25 && Instant::now() < deadline {
        match lines.next() {
            Some(Ok(l)) => seen.push(l),
            _ => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(seen.len(), 25, "follow stopped early: {seen:?}");
    for (i, l) in seen.iter().enumerate() {
        assert_eq!(l, &format!("tick{}", i + 1), "{seen:?}");
    }
    // Follow ends by itself when the container exits, with everything it wrote.
    n.pod(
        "short",
        "Never",
        &[("main", "echo first; sleep 5; echo second")],
    );
    n.running("short");
    n.logs_until(&["short"], |o| o.contains("first"));
    let started = Instant::now();
    let out = n.server.ok(&["logs", "-f", "short"]);
    assert_eq!(out, "first\nsecond\n");
    assert!(started.elapsed() < Duration::from_secs(20));
    // --previous: the attempt before the restart, which differs from the current one.
    n.wait_for("crash", 60, "a restart", |p| {
        p["status"]["containerStatuses"][0]["restartCount"]
            .as_u64()
            .is_some_and(|c| c >= 1)
    });
    let prev = n.logs_until(&["crash", "--previous"], |o| o.starts_with("run-"));
    let cur = n.logs_until(&["crash"], |o| o.starts_with("run-"));
    assert_eq!(prev.lines().count(), 1, "{prev}");
    assert_ne!(prev, cur, "--previous must show the earlier attempt");
    for p in ["ticker", "short", "crash"] {
        n.server
            .ok(&["delete", "pod", p, "--wait=true", "--timeout=60s"]);
    }
}

/// One HTTPS/1.1 GET straight to the kubelet API (trusting the cluster CA for a certificate
/// issued to the node's address).
fn kubelet_get(
    port: u16,
    node_ip: &str,
    ca_pem: &str,
    identity: Option<(String, String)>,
    path: &str,
) -> (u16, String) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(node_ip.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    // A refused handshake (an untrusted client certificate) fails here or on the read.
    if write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {node_ip}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return (0, String::new());
    }
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

#[test]
fn the_kubelet_api_authenticates_and_asks_the_apiserver() {
    require_privileged!();
    let n = start();
    let node = n.node_json();
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
    let ca = n.server.ca_pem();
    // The serving certificate arrives shortly after the node registers.
    let mut last = (0, String::new());
    let up = eventually(Duration::from_secs(60), || {
        last = kubelet_get(port, &ip, &ca, Some(n.server.admin_identity()), "/healthz");
        last.0 == 200
    });
    assert!(up, "the kubelet API never answered the admin: {last:?}");
    assert_eq!(last.1.trim_end(), "ok");
    // Anonymous: 401 whatever the path.
    for path in ["/healthz", "/containerLogs/default/x/y", "/stats/summary"] {
        let (code, body) = kubelet_get(port, &ip, &ca, None, path);
        assert_eq!(code, 401, "{path}: {body}");
    }
    // A user the cluster knows but who may not use nodes/proxy: 403 naming what was asked.
    let mallory = n.server.client_cert("mallory", &[]);
    let (code, body) = kubelet_get(
        port,
        &ip,
        &ca,
        Some(mallory.clone()),
        "/containerLogs/default/x/y",
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("Forbidden (user=mallory, verb=get, resource=nodes, subresource(s)=[proxy])"),
        "{body}"
    );
    let (code, body) = kubelet_get(port, &ip, &ca, Some(mallory), "/stats/summary");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("subresource(s)=[stats]"), "{body}");
    // The same user once granted nodes/proxy (RBAC, compiled into Cedar) gets through to the
    // handler, which answers for a pod that does not exist.
    n.server.ok_in(
        &["apply", "-f", "-"],
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: node-proxy}
rules:
- {apiGroups: [""], resources: [nodes/proxy], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: trudy-node-proxy}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: node-proxy}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: trudy}
"#,
    );
    // The kubelet caches denials for 30 s (upstream's default): ask it only once the
    // apiserver's answer has changed.
    let granted = eventually(Duration::from_secs(30), || {
        let o = n.server.kubectl(&[
            "auth",
            "can-i",
            "get",
            "nodes",
            "--subresource=proxy",
            "--as=trudy",
        ]);
        String::from_utf8_lossy(&o.stdout).trim() == "yes"
    });
    assert!(granted, "trudy's RBAC never took effect");
    let trudy = n.server.client_cert("trudy", &[]);
    let mut got = (0, String::new());
    let allowed = eventually(Duration::from_secs(30), || {
        got = kubelet_get(
            port,
            &ip,
            &ca,
            Some(trudy.clone()),
            "/containerLogs/default/ghost/c",
        );
        got.0 == 404
    });
    assert!(allowed, "trudy was not let through: {got:?}");
    assert!(got.1.contains("pods \\\"ghost\\\" not found"), "{}", got.1);
    // Through the apiserver: nodes/{name}/proxy/... reaches the same kubelet API as the
    // apiserver's kubelet client.
    let healthz = format!("/api/v1/nodes/{}/proxy/healthz", n.name);
    assert_eq!(n.server.ok(&["get", "--raw", &healthz]).trim_end(), "ok");
    let logs = format!(
        "/api/v1/nodes/{}/proxy/containerLogs/default/ghost/c",
        n.name
    );
    let r = n.server.raw(harness::Raw::get(&logs));
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    // ... and only for callers allowed nodes/proxy.
    let m = n.server.client_cert("mallory", &[]);
    let mut req = harness::Raw::get(&healthz);
    req.identity = harness::Identity::Pem(&m.0, &m.1);
    let r = n.server.raw(req);
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    // pods/exec opened with a GET (kubectl's WebSocket upgrade) needs `create`, not `get`.
    n.server.ok_in(
        &["apply", "-f", "-"],
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: exec-get-only}
rules:
- {apiGroups: [""], resources: [pods, pods/exec], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: eve-exec-get}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: exec-get-only}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: eve}
"#,
    );
    let eve = n.server.client_cert("eve", &[]);
    let exec = "/api/v1/namespaces/default/pods/any/exec?command=sh&stdout=true";
    let mut forbidden = (0, String::new());
    let refused = eventually(Duration::from_secs(30), || {
        // RBAC is compiled asynchronously: wait until `get pods` works for eve, then check.
        let mut get = harness::Raw::get("/api/v1/namespaces/default/pods/any");
        get.identity = harness::Identity::Pem(&eve.0, &eve.1);
        if n.server.raw(get).status != 404 {
            return false;
        }
        let mut req = harness::Raw::get(exec);
        req.identity = harness::Identity::Pem(&eve.0, &eve.1);
        req.headers = vec![
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
        ];
        let r = n.server.raw(req);
        forbidden = (r.status, String::from_utf8_lossy(&r.body).into_owned());
        true
    });
    assert!(refused, "eve's RBAC never took effect");
    assert_eq!(forbidden.0, 403, "{}", forbidden.1);
    assert!(
        forbidden
            .1
            .contains(r#"cannot create resource \"pods/exec\""#),
        "{}",
        forbidden.1
    );
    // A certificate from outside the cluster is no identity at all.
    let (code, _) = {
        use rcgen::{CertificateParams, DnType, KeyPair};
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, "system:kube-apiserver");
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let k = KeyPair::generate().unwrap();
        let c = p.self_signed(&k).unwrap();
        kubelet_get(
            port,
            &ip,
            &ca,
            Some((c.pem(), k.serialize_pem())),
            "/healthz",
        )
    };
    assert_ne!(code, 200, "a self-signed certificate must not get in");
}

/// kubectl with stdin, returning (exit code, stdout, stderr).
fn kubectl_stdin(n: &Node, args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(kubectl_bin())
        .args(args)
        .env("KUBECONFIG", n.server.kubeconfig())
        .env("HOME", n.server.data_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin).unwrap();
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kubectl_exec_and_cp() {
    require_privileged!();
    let n = start();
    n.pod("box", "Never", &[("main", "sleep 3600")]);
    n.pod("done", "Never", &[("main", "true")]);
    n.running("box");
    // The first exec may race the kubelet's serving certificate.
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(60), || {
        let o = n.server.kubectl(&["exec", "box", "--", "echo", "hello"]);
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o.status.success()
    });
    assert!(ok, "kubectl exec never worked: {last}");
    assert_eq!(last, "hello\n");
    // Exit codes propagate; stdout and stderr stay apart.
    let o = n.server.kubectl(&[
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(o.status.code(), Some(7), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert!(String::from_utf8_lossy(&o.stderr).contains("err"), "{o:?}");
    // stdin reaches the process, EOF included.
    let (code, out, err) = kubectl_stdin(
        &n,
        &["exec", "-i", "box", "--", "sh", "-c", "cat; echo end"],
        b"piped\n",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "piped\nend\n");
    // The exec'd process is as confined as the container: its PID namespace, seccomp, root.
    let o = n.server.ok(&[
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "grep Seccomp: /proc/self/status; cat /proc/1/cmdline; echo; id -u",
    ]);
    assert!(o.contains("Seccomp:\t2"), "{o}");
    assert!(
        o.contains("sleep\u{0}3600"),
        "PID 1 must be the container's process: {o}"
    );
    assert!(o.trim_end().ends_with('0'), "{o}");
    // kubectl cp both ways (exec of tar).
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.txt");
    std::fs::write(&src, "copied in\n").unwrap();
    n.server
        .ok(&["cp", src.to_str().unwrap(), "box:/tmp/in.txt"]);
    assert_eq!(
        n.server.ok(&["exec", "box", "--", "cat", "/tmp/in.txt"]),
        "copied in\n"
    );
    n.server.ok(&[
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "echo from pod > /tmp/out.txt",
    ]);
    let dst = dir.path().join("out.txt");
    n.server
        .ok(&["cp", "box:/tmp/out.txt", dst.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&dst).unwrap(), "from pod\n");
    // Bad input, as upstream words it.
    let err = n.server.fails(&["exec", "box", "-c", "nope", "--", "ls"]);
    assert!(
        err.contains("container nope is not valid for pod box"),
        "{err}"
    );
    n.wait_for("done", 60, "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    let err = n.server.fails(&["exec", "done", "--", "ls"]);
    assert!(
        err.contains("cannot exec into a container in a completed pod; current phase is Succeeded"),
        "{err}"
    );
    let err = n.server.fails(&["exec", "box", "--", "/no/such/command"]);
    assert!(err.contains("/no/such/command"), "{err}");
    let mut req = harness::Raw::get("/api/v1/namespaces/default/pods/box/exec?stdout=true");
    req.headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
    ];
    let r = n.server.raw(req);
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("you must specify at least 1 command"));
    for p in ["box", "done"] {
        n.server
            .ok(&["delete", "pod", p, "--wait=true", "--timeout=60s"]);
    }
}
