//! Probes, lifecycle hooks, sidecars, restarts and termination reasons, end to end: one real
//! `rampart server` with its embedded agent, busybox pods created with the stock kubectl and
//! `spec.nodeName` set, real containers. Servers the probes and hooks talk to are the pods'
//! own busybox `httpd`/`nc`, or (for gRPC and the preStop ordering, which busybox cannot
//! serve) small servers of this test reached by `hostNetwork` pods in a privileged namespace.
//! Every case runs at once on the one server; each is checked in turn, bounded by deadlines.
//! Root only (skipped with a reason otherwise; `RAMPART_REQUIRE_PRIVILEGED=1` fails instead).

mod harness;
mod kubelet_support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{eventually, Server};
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
    let logs = logs_dir.path().to_path_buf();
    let name = format!("kp-{}", std::process::id());
    let cgroup_root = format!("rampart-test-{}", std::process::id());
    let server = Server::start_with_agent(&[
        "--node-name",
        &name,
        "--pod-log-dir",
        logs.to_str().unwrap(),
        "--kubelet-cgroup-root",
        &cgroup_root,
    ]);
    let cleanup = Cleanup {
        cgroup_root,
        data_dir: server.data_dir().to_path_buf(),
    };
    let ready = eventually(Duration::from_secs(60), || {
        let o = server.kubectl(&["get", "node", &name, "-o", "json"]);
        o.status.success()
            && serde_json::from_slice::<Value>(&o.stdout)
                .map(|n| {
                    n["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
                .unwrap_or(false)
    });
    assert!(ready, "node {name} never became Ready");
    let tar = write(
        logs.parent().unwrap_or(Path::new("/tmp")),
        &format!("busybox-probes-{}.tar", std::process::id()),
        &docker_archive("busybox:test", &[busybox_layer()]),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
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
    server.ok(&["create", "namespace", "hostnet"]);
    server.ok(&[
        "label",
        "namespace",
        "hostnet",
        "pod-security.kubernetes.io/enforce=privileged",
    ]);
    Node {
        server,
        name,
        _logs_dir: logs_dir,
        _cleanup: cleanup,
    }
}

/// A pod with one container `main` running `script`; `extra` is YAML indented as the
/// container's fields, `pod_extra` as the pod spec's.
fn pod(
    node: &str,
    ns: &str,
    name: &str,
    policy: &str,
    script: &str,
    extra: &str,
    pod_extra: &str,
) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
spec:
  nodeName: {node}
  restartPolicy: {policy}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 3
{pod_extra}  containers:
  - name: main
    image: busybox:test
    imagePullPolicy: Never
    command: ["sh", "-c", {script:?}]
{extra}"#
    )
}

impl Node {
    fn get(&self, ns: &str, name: &str) -> Value {
        let o = self
            .server
            .kubectl(&["get", "pod", "-n", ns, name, "-o", "json"]);
        if !o.status.success() {
            return Value::Null;
        }
        serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
    }

    /// Polls (every 100 ms) until `f` holds; returns the pod.
    fn wait_for(
        &self,
        ns: &str,
        name: &str,
        secs: u64,
        what: &str,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            last = self.get(ns, name);
            if f(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "pod {ns}/{name}: {what} not reached in {secs}s; last: {:#}",
            last["status"]
        );
    }

    fn events(&self, ns: &str, name: &str) -> Vec<Value> {
        let v = self.server.json(&[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "json",
        ]);
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// Waits for an event with `reason` whose message contains `text`.
    fn wait_event(&self, ns: &str, name: &str, reason: &str, text: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let evs = self.events(ns, name);
            if let Some(e) = evs.iter().find(|e| {
                e["reason"] == reason && e["message"].as_str().unwrap_or_default().contains(text)
            }) {
                return e.clone();
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = evs
                    .iter()
                    .map(|e| format!("{}: {}", e["reason"], e["message"]))
                    .collect();
                panic!("{ns}/{name}: no {reason} event containing {text:?}; seen: {seen:#?}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn delete(&self, ns: &str, name: &str) {
        self.server.ok(&[
            "delete",
            "pod",
            "-n",
            ns,
            name,
            "--wait=true",
            "--timeout=60s",
        ]);
    }
}

fn cs(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

fn condition(p: &Value, kind: &str) -> String {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn ready_transition(p: &Value) -> Value {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| c["lastTransitionTime"].clone())
        .unwrap_or(Value::Null)
}

fn restarts(p: &Value) -> u64 {
    cs(p)["restartCount"].as_u64().unwrap_or(0)
}

fn ts(v: &Value) -> jiff::Timestamp {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {v}"))
}

/// A gRPC health server (grpc.health.v1.Health/Check over h2c) on this host (all local
/// addresses: a hostNetwork pod's probe dials its pod IP, the node's address) answering
/// SERVING or NOT_SERVING as `serving` says; counts the checks it answered.
fn grpc_health(serving: Arc<AtomicBool>, checks: Arc<Mutex<u32>>) -> u16 {
    let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let serving = serving.clone();
                let checks = checks.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(s).await else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                        let status = if serving.load(Ordering::SeqCst) { 1 } else { 2 };
                        *checks.lock().unwrap() += 1;
                        let resp = http::Response::builder()
                            .status(200)
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let Ok(mut send) = respond.send_response(resp, false) else {
                            return;
                        };
                        let _ = send
                            .send_data(bytes::Bytes::from(vec![0, 0, 0, 0, 2, 8, status]), false);
                        let mut tr = http::HeaderMap::new();
                        tr.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let _ = send.send_trailers(tr);
                    }
                });
            }
        });
    });
    port
}

/// A plain HTTP server on loopback recording each request's path in arrival order.
fn recorder(seen: Arc<Mutex<Vec<String>>>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(&s);
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            if let Some(path) = line.split(' ').nth(1) {
                seen.lock().unwrap().push(path.to_string());
            }
            let mut w = &s;
            let _ =
                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    port
}

const TRAP: &str = "trap 'exit 0' TERM; while true; do sleep 0.2; done";

#[test]
fn probes_hooks_sidecars_and_restarts() {
    require_privileged!();
    let n = start();
    let node = n.name.clone();
    let serving = Arc::new(AtomicBool::new(true));
    let checks = Arc::new(Mutex::new(0u32));
    let grpc_port = grpc_health(serving.clone(), checks.clone());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec_port = recorder(seen.clone());

    // Readiness (httpGet) flips Ready: not ready during the initial delay, ready while
    // /healthz answers 200, unready once it is 404; tcpSocket liveness keeps passing.
    n.server.ok_in(&["apply", "-f", "-"], &pod(&node, "default", "ready", "Always",
        "mkdir /w; echo ok > /w/healthz; (sleep 10; rm /w/healthz) & exec busybox httpd -f -p 8080 -h /w",
        r#"    readinessProbe:
      httpGet: {path: /healthz, port: web, httpHeaders: [{name: X-Probe, value: "1"}]}
      initialDelaySeconds: 3
      periodSeconds: 1
      failureThreshold: 1
    livenessProbe:
      tcpSocket: {port: 8080}
      initialDelaySeconds: 2
      periodSeconds: 1
      failureThreshold: 1
    ports: [{name: web, containerPort: 8080}]
"#, ""));
    // Liveness (tcpSocket) failing: killed and restarted.
    n.server.ok_in(
        &["apply", "-f", "-"],
        &pod(
            &node,
            "default",
            "live",
            "Always",
            TRAP,
            r#"    livenessProbe:
      tcpSocket: {port: 9999}
      periodSeconds: 1
      failureThreshold: 2
"#,
            "",
        ),
    );
    // Startup probe gates liveness: the server comes up after 3 s, and a liveness probe
    // with failureThreshold 1 would have killed it had it run before startup passed.
    n.server.ok_in(
        &["apply", "-f", "-"],
        &pod(
            &node,
            "default",
            "startup",
            "Always",
            "mkdir /w; echo hi > /w/index.html; sleep 3; exec busybox httpd -f -p 8080 -h /w",
            r#"    startupProbe:
      httpGet: {path: /index.html, port: 8080}
      periodSeconds: 1
      failureThreshold: 30
    livenessProbe:
      httpGet: {path: /index.html, port: 8080}
      periodSeconds: 1
      failureThreshold: 1
"#,
            "",
        ),
    );
    // gRPC liveness against this test's health server (hostNetwork: the pod's namespace is
    // the host's, where the server listens).
    n.server.ok_in(
        &["apply", "-f", "-"],
        &pod(
            &node,
            "hostnet",
            "grpc",
            "Always",
            TRAP,
            &format!(
                r#"    livenessProbe:
      grpc: {{port: {grpc_port}}}
      periodSeconds: 1
      failureThreshold: 2
"#
            ),
            "  hostNetwork: true\n",
        ),
    );
    // postStart failing: FailedPostStartHook, the container is killed (it ignores SIGTERM, so
    // SIGKILL after the grace period; policy Never: Failed).
    n.server.ok_in(
        &["apply", "-f", "-"],
        &pod(
            &node,
            "default",
            "poststart",
            "Never",
            "while true; do sleep 0.2; done",
            r#"    lifecycle:
      postStart:
        httpGet: {path: /started, port: 9998}
"#,
            "",
        ),
    );
    // preStop before SIGTERM: the hook hits the recorder, then the TERM trap does.
    n.server.ok_in(&["apply", "-f", "-"], &pod(&node, "hostnet", "prestop", "Always",
        &format!("trap 'busybox wget -q -O /dev/null http://127.0.0.1:{rec_port}/term; exit 0' TERM; while true; do sleep 0.2; done"),
        &format!(r#"    lifecycle:
      preStop:
        httpGet: {{path: /prestop, port: {rec_port}, host: 127.0.0.1}}
"#), "  hostNetwork: true\n"));
    // Sidecar: started before the next init container without waiting for it to finish,
    // running alongside the main container, stopped after it.
    n.server.ok_in(
        &["apply", "-f", "-"],
        &pod(
            &node,
            "default",
            "sidecar",
            "Never",
            "sleep 2; echo main-done",
            "",
            r#"  initContainers:
  - name: side
    image: busybox:test
    imagePullPolicy: Never
    restartPolicy: Always
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
  - name: setup
    image: busybox:test
    imagePullPolicy: Never
    command: ["sh", "-c", "echo setup"]
"#,
        ),
    );
    // OOM: a 16 MiB limit and a shell string of 64 MB.
    n.server.ok_in(
        &["apply", "-f", "-"],
        &pod(
            &node,
            "default",
            "oom",
            "Never",
            "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo survived",
            r#"    resources:
      limits: {memory: 16Mi}
"#,
            "",
        ),
    );
    // Termination messages: the file, and the log tail on error.
    n.server.ok_in(
        &["apply", "-f", "-"],
        &pod(
            &node,
            "default",
            "msg",
            "Never",
            "printf bye > /dev/termination-log; exit 1",
            "",
            "",
        ),
    );
    n.server.ok_in(
        &["apply", "-f", "-"],
        &pod(
            &node,
            "default",
            "fallback",
            "Never",
            "echo first-line; echo last-line; exit 2",
            "    terminationMessagePolicy: FallbackToLogsOnError\n",
            "",
        ),
    );
    // Back-off: the first restart at once, the next 10 s later.
    n.server.ok_in(
        &["apply", "-f", "-"],
        &pod(&node, "default", "backoff", "Always", "exit 1", "", ""),
    );

    // --- readiness
    let ready = n.wait_for("default", "ready", 30, "Ready", |p| {
        condition(p, "Ready") == "True"
    });
    assert_eq!(cs(&ready)["ready"], true);
    assert_eq!(condition(&ready, "ContainersReady"), "True");
    // Not ready before initialDelaySeconds (3 s) had passed since the container started.
    let since_start = ts(&ready_transition(&ready))
        .duration_since(ts(&cs(&ready)["state"]["running"]["startedAt"]))
        .as_secs_f64();
    assert!(
        since_start >= 2.0,
        "ready {since_start}s after the start: {:#}",
        ready["status"]
    );
    let unready = n.wait_for("default", "ready", 30, "unready after /healthz went", |p| {
        condition(p, "Ready") == "False"
    });
    assert_eq!(cs(&unready)["ready"], false);
    assert!(
        cs(&unready)["state"]["running"].is_object(),
        "readiness must not restart: {:#}",
        unready["status"]
    );
    assert_eq!(
        restarts(&unready),
        0,
        "the passing tcpSocket liveness probe restarted it"
    );
    n.wait_event(
        "default",
        "ready",
        "Unhealthy",
        "Readiness probe failed: HTTP probe failed with statuscode: 404",
        10,
    );

    // --- liveness
    let p = n.wait_for("default", "live", 40, "restarted by liveness", |p| {
        restarts(p) >= 1
    });
    assert!(
        cs(&p)["lastState"]["terminated"].is_object(),
        "{:#}",
        p["status"]
    );
    n.wait_event(
        "default",
        "live",
        "Killing",
        "Container main failed liveness probe, will be restarted",
        10,
    );
    // Upstream dials the pod's IP (loopback only while a pod has none).
    let live_ip = p["status"]["podIP"]
        .as_str()
        .unwrap_or("127.0.0.1")
        .to_string();
    n.wait_event(
        "default",
        "live",
        "Unhealthy",
        &format!("Liveness probe failed: dial tcp {live_ip}:9999: connect: connection refused"),
        10,
    );

    // --- startup gates liveness
    let started = n.wait_for("default", "startup", 30, "running", |p| {
        cs(p)["state"]["running"].is_object()
    });
    let early =
        jiff::Timestamp::now().duration_since(ts(&cs(&started)["state"]["running"]["startedAt"]));
    if early.as_secs_f64() < 2.0 {
        assert_eq!(
            cs(&started)["started"],
            false,
            "started before its startup probe: {:#}",
            started["status"]
        );
    }
    let p = n.wait_for("default", "startup", 30, "started and ready", |p| {
        cs(p)["started"] == true && cs(p)["ready"] == true
    });
    std::thread::sleep(Duration::from_secs(2));
    let p2 = n.get("default", "startup");
    assert_eq!(
        restarts(&p2),
        0,
        "liveness ran before startup passed: {:#}",
        p["status"]
    );

    // --- gRPC
    let p = n.wait_for("hostnet", "grpc", 30, "running", |p| {
        cs(p)["state"]["running"].is_object()
    });
    assert!(
        eventually(Duration::from_secs(15), || *checks.lock().unwrap() >= 2),
        "the gRPC health server was never asked"
    );
    assert_eq!(restarts(&p), 0);
    serving.store(false, Ordering::SeqCst);
    n.wait_for("hostnet", "grpc", 30, "restarted after NOT_SERVING", |p| {
        restarts(p) >= 1
    });
    n.wait_event(
        "hostnet",
        "grpc",
        "Unhealthy",
        "service unhealthy (responded with \"NOT_SERVING\")",
        10,
    );

    // --- postStart failure
    let p = n.wait_for("default", "poststart", 40, "Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert!(
        cs(&p)["state"]["terminated"].is_object(),
        "{:#}",
        p["status"]
    );
    n.wait_event(
        "default",
        "poststart",
        "FailedPostStartHook",
        "HTTP lifecycle hook (/started)",
        10,
    );

    // --- preStop before SIGTERM
    n.wait_for("hostnet", "prestop", 30, "running", |p| {
        cs(p)["state"]["running"].is_object()
    });
    n.delete("hostnet", "prestop");
    let order = seen.lock().unwrap().clone();
    assert_eq!(
        order,
        ["/prestop", "/term"],
        "preStop must run before SIGTERM"
    );

    // --- sidecar
    let p = n.wait_for("default", "sidecar", 40, "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    let inits = p["status"]["initContainerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(inits.len(), 2, "{:#}", p["status"]);
    let side = &inits[0]["state"]["terminated"];
    let setup = &inits[1]["state"]["terminated"];
    let main = &cs(&p)["state"]["terminated"];
    assert_eq!(setup["exitCode"], 0, "{:#}", p["status"]);
    assert_eq!(main["exitCode"], 0, "{:#}", p["status"]);
    assert!(
        side.is_object(),
        "sidecar not stopped after the main container: {:#}",
        p["status"]
    );
    assert!(
        ts(&side["startedAt"]) <= ts(&setup["startedAt"]),
        "sidecar started after the next init container"
    );
    assert!(
        ts(&setup["startedAt"]) < ts(&side["finishedAt"]),
        "the next init container waited for the sidecar to finish"
    );
    assert!(
        ts(&side["finishedAt"]) >= ts(&main["finishedAt"]),
        "sidecar stopped before the main container: {:#}",
        p["status"]
    );
    assert_eq!(inits[0]["restartCount"], 0, "{:#}", p["status"]);

    // --- OOMKilled
    let p = n.wait_for("default", "oom", 40, "Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    let t = &cs(&p)["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{:#}", p["status"]);
    assert_eq!(t["exitCode"], 137, "{:#}", p["status"]);

    // --- termination messages
    let p = n.wait_for("default", "msg", 30, "Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(
        cs(&p)["state"]["terminated"]["message"],
        "bye",
        "{:#}",
        p["status"]
    );
    let p = n.wait_for("default", "fallback", 30, "Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    let m = cs(&p)["state"]["terminated"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        m.contains("first-line") && m.ends_with("last-line"),
        "{m:?}"
    );

    // --- back-off timing
    let p = n.wait_for("default", "backoff", 40, "second restart", |p| {
        restarts(p) >= 2
    });
    let c = cs(&p);
    let prev_end = ts(&c["lastState"]["terminated"]["finishedAt"]);
    let st = &c["state"];
    let next_start = st["running"]["startedAt"]
        .as_str()
        .or(st["terminated"]["startedAt"].as_str())
        .map(|s| s.parse::<jiff::Timestamp>().unwrap());
    if let Some(next) = next_start {
        let gap = next.duration_since(prev_end).as_secs_f64();
        assert!(
            gap >= 9.0,
            "second restart after {gap}s, not the 10 s back-off: {c:#}"
        );
    }

    for name in [
        "ready",
        "live",
        "startup",
        "poststart",
        "sidecar",
        "oom",
        "msg",
        "fallback",
        "backoff",
    ] {
        n.server.ok(&["delete", "pod", name, "--wait=false"]);
    }
    n.server
        .ok(&["delete", "pod", "-n", "hostnet", "grpc", "--wait=false"]);
    let gone = eventually(Duration::from_secs(60), || {
        n.server
            .ok(&["get", "pods", "-A", "-o", "name"])
            .trim()
            .is_empty()
    });
    assert!(gone, "pods left: {}", n.server.ok(&["get", "pods", "-A"]));
}

/// Exec probes and exec hooks, run inside the container by its shim: readiness by exit code
/// both ways with the command's output in the event, a liveness command outliving
/// `timeoutSeconds` killed and reported as upstream's timeout, postStart seen by the
/// container, preStop before SIGTERM (order written to a hostPath), a failing postStart with
/// upstream's message (command, exit code, stderr) failing the pod.
#[test]
fn exec_probes_and_hooks() {
    require_privileged!();
    let n = start();
    let node = n.name.clone();
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap().to_string();

    n.server.ok_in(
        &["apply", "-f", "-"],
        &pod(
            &node,
            "default",
            "exready",
            "Always",
            "sleep 2; echo yes > /tmp/ready; sleep 5; busybox rm /tmp/ready; exec sleep 3600",
            r#"    readinessProbe:
      exec: {command: ["cat", "/tmp/ready"]}
      periodSeconds: 1
      failureThreshold: 1
"#,
            "",
        ),
    );
    n.server.ok_in(
        &["apply", "-f", "-"],
        &pod(
            &node,
            "default",
            "extimeout",
            "Always",
            TRAP,
            r#"    livenessProbe:
      exec: {command: ["sh", "-c", "sleep 30"]}
      timeoutSeconds: 1
      periodSeconds: 1
      failureThreshold: 2
"#,
            "",
        ),
    );
    n.server.ok_in(
        &["apply", "-f", "-"],
        &pod(
            &node,
            "hostnet",
            "exhooks",
            "Always",
            "trap 'echo term >> /out/order; exit 0' TERM; until [ -f /tmp/hook ]; do sleep 0.1; done; cat /tmp/hook > /out/seen; while true; do sleep 0.2; done",
            r#"    lifecycle:
      postStart:
        exec: {command: ["sh", "-c", "echo from-poststart > /tmp/hook"]}
      preStop:
        exec: {command: ["sh", "-c", "echo prestop >> /out/order"]}
    volumeMounts: [{name: out, mountPath: /out}]
"#,
            &format!("  volumes: [{{name: out, hostPath: {{path: {out_dir}}}}}]\n"),
        ),
    );
    n.server.ok_in(
        &["apply", "-f", "-"],
        &pod(
            &node,
            "default",
            "exfail",
            "Never",
            "while true; do sleep 0.2; done",
            r#"    lifecycle:
      postStart:
        exec: {command: ["sh", "-c", "echo oops >&2; exit 3"]}
"#,
            "",
        ),
    );

    // --- readiness by exit code, both ways
    n.wait_for("default", "exready", 30, "Ready", |p| {
        condition(p, "Ready") == "True"
    });
    let p = n.wait_for(
        "default",
        "exready",
        30,
        "unready after the file went",
        |p| condition(p, "Ready") == "False" && cs(p)["started"] == true,
    );
    assert_eq!(restarts(&p), 0, "{:#}", p["status"]);
    n.wait_event(
        "default",
        "exready",
        "Unhealthy",
        "Readiness probe failed: cat: can't open '/tmp/ready': No such file or directory",
        10,
    );

    // --- a liveness command past timeoutSeconds: timed out, killed, the container restarted
    n.wait_for("default", "extimeout", 40, "restarted by liveness", |p| {
        restarts(p) >= 1
    });
    n.wait_event(
        "default",
        "extimeout",
        "Unhealthy",
        "Liveness probe failed: command \"sh -c sleep 30\" timed out",
        10,
    );
    let fails: Vec<Value> = n
        .events("default", "extimeout")
        .into_iter()
        .filter(|e| e["reason"] == "Unhealthy")
        .collect();
    assert!(!fails.is_empty());

    // --- postStart ran in the container (it waits for the hook's file and prints it)
    n.wait_for("hostnet", "exhooks", 30, "running", |p| {
        cs(p)["state"]["running"].is_object()
    });
    // Read through the hostPath, not `kubectl logs`: this checks the hook, not the log path
    // (which has its own tests and, in a loaded full run, waits on the kubelet's serving cert).
    let seen = out.path().join("seen");
    let logged = eventually(Duration::from_secs(40), || {
        std::fs::read_to_string(&seen).is_ok_and(|t| t.contains("from-poststart"))
    });
    assert!(logged, "postStart's file never seen by the container");
    n.delete("hostnet", "exhooks");
    let order = std::fs::read_to_string(out.path().join("order")).unwrap_or_default();
    assert_eq!(order, "prestop\nterm\n", "preStop must run before SIGTERM");

    // --- a failing postStart: upstream's message, the container killed, policy Never: Failed
    let p = n.wait_for("default", "exfail", 40, "Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert!(
        cs(&p)["state"]["terminated"].is_object(),
        "{:#}",
        p["status"]
    );
    n.wait_event(
        "default",
        "exfail",
        "FailedPostStartHook",
        "Exec lifecycle hook ([sh -c echo oops >&2; exit 3]) for Container \"main\" in Pod \"exfail\" failed - error: command 'sh -c echo oops >&2; exit 3' exited with 3: oops\n, message: \"oops\\n\"",
        10,
    );

    for name in ["exready", "extimeout", "exfail"] {
        n.server.ok(&["delete", "pod", name, "--wait=false"]);
    }
    let gone = eventually(Duration::from_secs(60), || {
        n.server
            .ok(&["get", "pods", "-A", "-o", "name"])
            .trim()
            .is_empty()
    });
    assert!(gone, "pods left: {}", n.server.ok(&["get", "pods", "-A"]));
}
