//! Streaming subresources with the stock kubectl, end to end: a real `rampart server` with
//! its embedded agent, real containers, kubectl going through the apiserver to the kubelet
//! over mTLS. `kubectl port-forward` (WebSocket-tunnelled SPDY/3.1, what kubectl ≥ 1.31
//! speaks): two ports of one pod at once, several connections, a 1 MB body intact, and a
//! port nothing listens on reported with upstream's `error forwarding port` text.
//! Root only (skipped with a reason otherwise; `RAMPART_REQUIRE_PRIVILEGED=1` fails instead).

mod harness;
mod kubelet_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use harness::{eventually, kubectl_bin, Server};
use kubelet_support::*;
use serde_json::Value;

struct Node {
    server: Server,
    name: String,
    home: tempfile::TempDir,
    _logs_dir: tempfile::TempDir,
    _cleanup: Cleanup,
}

fn start() -> Node {
    let logs_dir = tempfile::tempdir().unwrap();
    let name = format!("ks-{}", std::process::id());
    let cgroup_root = format!("rampart-test-{}", std::process::id());
    let server = Server::start_with_agent(&[
        "--node-name",
        &name,
        "--pod-log-dir",
        logs_dir.path().to_str().unwrap(),
        "--kubelet-cgroup-root",
        &cgroup_root,
        "--kubelet-port",
        "0",
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
    // The kubelet serves once its kubelet-serving certificate is issued.
    let serving = eventually(Duration::from_secs(60), || {
        server
            .kubectl(&[
                "get",
                "--raw",
                &format!("/api/v1/nodes/{name}/proxy/healthz"),
            ])
            .status
            .success()
    });
    assert!(serving, "the kubelet API of {name} never answered");
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
    Node {
        server,
        name,
        home: tempfile::tempdir().unwrap(),
        _logs_dir: logs_dir,
        _cleanup: cleanup,
    }
}

/// A long-running kubectl with its stdout and stderr lines delivered as they come.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    /// Waits for a line containing `text`; returns it.
    fn wait_line(&mut self, text: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        if let Some(l) = self.seen.iter().find(|l| l.contains(text)) {
            return l.clone();
        }
        while Instant::now() < deadline {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(l.clone());
                if l.contains(text) {
                    return l;
                }
            }
        }
        panic!("kubectl never printed {text:?}; printed: {:#?}", self.seen);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn kubectl_spawn(&self, args: &[&str]) -> Running {
        let mut child = Command::new(kubectl_bin())
            .args(args)
            .env("KUBECONFIG", self.server.kubeconfig())
            .env("HOME", self.home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let (tx, rx) = mpsc::channel();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(l).is_err() {
                        return;
                    }
                }
            });
        }
        Running {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    fn wait_running(&self, name: &str) {
        let ok = eventually(Duration::from_secs(40), || {
            let o = self.server.kubectl(&["get", "pod", name, "-o", "json"]);
            serde_json::from_slice::<Value>(&o.stdout)
                .map(|p| p["status"]["containerStatuses"][0]["state"]["running"].is_object())
                .unwrap_or(false)
        });
        assert!(ok, "pod {name} never ran");
    }
}

/// The local port in kubectl's `Forwarding from 127.0.0.1:P -> R` line.
fn local_port(line: &str) -> u16 {
    line.split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no local port in {line:?}"))
}

/// GET `path` over plain HTTP/1.0 at 127.0.0.1:`port`; the body.
fn http_get(port: u16, path: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&all)));
    assert!(
        all.starts_with(b"HTTP/1.0 200") || all.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&all[..split])
    );
    all[split + 4..].to_vec()
}

#[test]
fn port_forward() {
    require_privileged!();
    let n = start();
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: pf
  namespace: default
spec:
  nodeName: {node}
  restartPolicy: Never
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:test
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir /a /b; echo port-a > /a/index.html; echo port-b > /b/index.html; head -c 1000000 /dev/zero | tr '\\0' x > /a/big; busybox httpd -p 8081 -h /b; exec busybox httpd -f -p 8080 -h /a"]
"#,
        node = n.name
    );
    n.server.ok_in(&["apply", "-f", "-"], &yaml);
    n.wait_running("pf");

    let mut pf = n.kubectl_spawn(&[
        "port-forward",
        "pod/pf",
        ":8080",
        ":8081",
        "--address",
        "127.0.0.1",
    ]);
    let a = local_port(&pf.wait_line("-> 8080", 30));
    let b = local_port(&pf.wait_line("-> 8081", 10));
    // The servers may still be starting: the first answer within a few seconds.
    let first = eventually(Duration::from_secs(10), || {
        std::panic::catch_unwind(|| http_get(a, "/index.html")).is_ok()
    });
    if !first {
        std::thread::sleep(Duration::from_secs(1));
        let later: Vec<String> = pf.lines.try_iter().collect();
        panic!(
            "no answer through the forwarded port; kubectl: {:#?} {later:#?}",
            pf.seen
        );
    }
    for _ in 0..3 {
        assert_eq!(http_get(a, "/index.html"), b"port-a\n");
        assert_eq!(http_get(b, "/index.html"), b"port-b\n");
    }
    // Many DATA frames both ways, byte for byte.
    let big = http_get(a, "/big");
    assert_eq!(big.len(), 1_000_000);
    assert!(big.iter().all(|c| *c == b'x'));
    // Two connections at once.
    let t = std::thread::spawn(move || http_get(b, "/index.html"));
    assert_eq!(http_get(a, "/index.html"), b"port-a\n");
    assert_eq!(t.join().unwrap(), b"port-b\n");
    drop(pf);

    // A port nothing listens on: the connection ends and kubectl shows the kubelet's error.
    let mut bad = n.kubectl_spawn(&["port-forward", "pod/pf", ":9999", "--address", "127.0.0.1"]);
    let c = local_port(&bad.wait_line("-> 9999", 30));
    let mut s = TcpStream::connect(("127.0.0.1", c)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    bad.wait_line("error forwarding port 9999 to pod default/pf", 20);
    drop(bad);

    // Upstream's checks at the apiserver: a pod without a host.
    n.server.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: nohost}\nspec:\n  schedulerName: none\n  containers: [{name: c, image: busybox:test}]\n",
    );
    let o = n.server.kubectl(&["port-forward", "pod/nohost", ":80"]);
    assert!(!o.status.success());
    n.server
        .ok(&["delete", "pod", "pf", "nohost", "--wait=false"]);
}
