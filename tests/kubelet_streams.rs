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

/// A pod of one busybox container on this node; `extra` is more of the container's fields.
fn pod_yaml(node: &str, name: &str, command: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  nodeName: {node}
  restartPolicy: Never
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:test
    imagePullPolicy: Never
    command: ["sh", "-c", {command:?}]
{extra}"#
    )
}

fn text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `kubectl run -i --rm` (stdin piped, `stdinOnce`), `kubectl attach` with and without
/// stdin, detaching, and `attach -it` to a `tty: true` container through a pty.
#[test]
fn run_and_attach() {
    require_privileged!();
    let n = start();

    // run -i --rm: the container reads our stdin to its end (stdinOnce: EOF when kubectl
    // closes it), kubectl prints its output, propagates its exit code and deletes the pod.
    let o = n.server.kubectl_in(
        &[
            "run",
            "rin",
            "-i",
            "--rm",
            "--restart=Never",
            "--image=busybox:test",
            "--image-pull-policy=Never",
            "--overrides",
            &format!(r#"{{"spec":{{"nodeName":"{}"}}}}"#, n.name),
            "--",
            "sh",
            "-c",
            "tr a-z A-Z; exit 3",
        ],
        Some("hello from stdin\nsecond line\n"),
    );
    let all = text(&o);
    assert!(
        all.contains("HELLO FROM STDIN\nSECOND LINE"),
        "run -i output: {all}"
    );
    assert_eq!(o.status.code(), Some(3), "{all}");
    let gone = eventually(Duration::from_secs(30), || {
        !n.server.kubectl(&["get", "pod", "rin"]).status.success()
    });
    assert!(gone, "--rm did not delete the pod");

    // attach -i to a container that keeps stdin (no stdinOnce): lines in, answers out; the
    // session ends with the container.
    n.server.ok_in(
        &["apply", "-f", "-"],
        &pod_yaml(
            &n.name,
            "att",
            "while read l; do echo \"got $l\"; [ \"$l\" = quit ] && exit 0; done",
            "    stdin: true\n",
        ),
    );
    n.wait_running("att");
    let o = n
        .server
        .kubectl_in(&["attach", "-i", "att"], Some("one\nquit\n"));
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    assert!(all.contains("got one\ngot quit"), "{all}");

    // attach without stdin sees live output; detaching leaves the container running and a
    // second session works.
    n.server.ok_in(
        &["apply", "-f", "-"],
        &pod_yaml(
            &n.name,
            "tick",
            "i=0; while true; do echo tick $i; echo tock $i >&2; i=$((i+1)); sleep 0.2; done",
            "",
        ),
    );
    n.wait_running("tick");
    for _ in 0..2 {
        let mut a = n.kubectl_spawn(&["attach", "tick"]);
        a.wait_line("tick ", 30);
        a.wait_line("tock ", 10);
        drop(a);
    }
    let o = n.server.kubectl(&[
        "get",
        "pod",
        "tick",
        "-o",
        "jsonpath={.status.containerStatuses[0].state.running.startedAt}",
    ]);
    assert!(
        !o.stdout.is_empty(),
        "detaching stopped the container: {}",
        text(&o)
    );

    // Upstream's checks at the apiserver: an unknown container.
    let o = n.server.kubectl(&["attach", "tick", "-c", "nope"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("nope"), "{}", text(&o));

    // attach -it to a tty container: a shell on the container's own terminal, resized.
    n.server.ok_in(
        &["apply", "-f", "-"],
        &pod_yaml(
            &n.name,
            "tty",
            "exec sh",
            "    stdin: true\n    tty: true\n",
        ),
    );
    n.wait_running("tty");
    let mut cmd = Command::new(kubectl_bin());
    cmd.args(["attach", "-it", "tty"])
        .env("KUBECONFIG", n.server.kubeconfig())
        .env("HOME", n.home.path());
    let mut t = kubelet_support::pty::Pty::spawn(cmd, 30, 90);
    assert!(
        t.expect("If you don't see a command prompt", 30),
        "{}",
        t.seen
    );
    t.write("echo ab$((2+3))cd\r");
    assert!(
        t.expect("ab5cd", 20),
        "no answer from the shell: {}",
        t.seen
    );
    assert_stty_size(&mut t, 30, 90);
    t.resize(45, 120);
    assert_stty_size(&mut t, 45, 120);
    t.write("exit 0\r");
    assert!(
        t.wait(30).is_some(),
        "kubectl attach did not end: {}",
        t.seen
    );

    n.server
        .ok(&["delete", "pod", "att", "tick", "tty", "--wait=false"]);
}

/// `kubectl run -it --rm --restart=Never` (`tty: true`, `stdinOnce: true`) with piped input:
/// when the input ends the container's terminal hangs up (upstream's stdinOnce EOF, which a
/// pty gets as a hang-up), so the shell exits, kubectl returns and `--rm` deletes the pod.
#[test]
fn run_tty_stdin_once_ends_with_its_input() {
    require_privileged!();
    let n = start();
    let overrides = format!(r#"{{"spec":{{"nodeName":"{}"}}}}"#, n.name);
    let mut child = Command::new(kubectl_bin())
        .args([
            "run",
            "rtty",
            "-it",
            "--rm",
            "--restart=Never",
            "--image=busybox:test",
            "--image-pull-policy=Never",
            "--overrides",
            &overrides,
            "--",
            "sh",
        ])
        .env("KUBECONFIG", n.server.kubeconfig())
        .env("HOME", n.home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"echo answer-$((6*7))\n").unwrap();
        // Dropped: kubectl's input ends here, and it closes the container's stdin.
    }
    let o = harness::wait_bounded(child, Duration::from_secs(90), "kubectl run -it");
    let all = text(&o);
    assert!(
        all.contains("answer-42"),
        "the shell never ran the input: {all}"
    );
    let gone = eventually(Duration::from_secs(30), || {
        !n.server.kubectl(&["get", "pod", "rtty"]).status.success()
    });
    assert!(gone, "--rm did not delete the pod: {all}");
}

/// `stty size` until it prints `rows cols` (a resize travels asynchronously).
fn assert_stty_size(t: &mut kubelet_support::pty::Pty, rows: u16, cols: u16) {
    let want = format!("{rows} {cols}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        t.write("stty size\r");
        if t.expect(&format!("\n{want}"), 2) {
            return;
        }
    }
    panic!("stty size never printed {want}: {}", t.seen);
}

/// `kubectl exec -it` through a pty (prompt, echo, resize, exit code) and `kubectl cp` both
/// ways (exec + tar).
#[test]
fn exec_tty_and_cp() {
    require_privileged!();
    let n = start();
    n.server.ok_in(
        &["apply", "-f", "-"],
        &pod_yaml(&n.name, "shell", "exec sleep 3600", ""),
    );
    n.wait_running("shell");

    let mut cmd = Command::new(kubectl_bin());
    cmd.args(["exec", "-it", "shell", "--", "sh"])
        .env("KUBECONFIG", n.server.kubeconfig())
        .env("HOME", n.home.path());
    let mut t = kubelet_support::pty::Pty::spawn(cmd, 24, 80);
    // busybox sh's prompt for root on a terminal.
    assert!(t.expect("# ", 30), "no prompt: {}", t.seen);
    t.write("echo ab$((2+3))cd\r");
    // The shell's answer (the typed line's echo can arrive split by the line editor's redraw
    // escapes, so only the evaluated result is checked: it cannot come from the echo).
    assert!(t.expect("ab5cd", 10), "no answer: {}", t.seen);
    assert_stty_size(&mut t, 24, 80);
    t.resize(50, 132);
    assert_stty_size(&mut t, 50, 132);
    t.write("exit 7\r");
    assert_eq!(t.wait(30), Some(7), "exit code of exec -it: {}", t.seen);

    // cp into the pod: a file and a directory.
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("hello.txt");
    let body: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&file, &body).unwrap();
    std::fs::create_dir(local.path().join("d")).unwrap();
    std::fs::write(local.path().join("d/inner"), "inner\n").unwrap();
    n.server
        .ok(&["cp", file.to_str().unwrap(), "shell:/tmp/hello.txt"]);
    let got = n
        .server
        .ok(&["exec", "shell", "--", "cat", "/tmp/hello.txt"]);
    assert_eq!(got, body);
    n.server.ok(&[
        "cp",
        local.path().join("d").to_str().unwrap(),
        "shell:/tmp/d",
    ]);
    let got = n.server.ok(&["exec", "shell", "--", "cat", "/tmp/d/inner"]);
    assert_eq!(got, "inner\n");

    // cp out of the pod: a file the image holds and the file copied in.
    let out = local.path().join("passwd");
    n.server
        .ok(&["cp", "shell:/etc/passwd", out.to_str().unwrap()]);
    let passwd = std::fs::read_to_string(&out).unwrap();
    assert!(passwd.starts_with("root:x:0:0:"), "{passwd}");
    let back = local.path().join("back.txt");
    n.server
        .ok(&["cp", "shell:/tmp/hello.txt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), body);

    n.server.ok(&["delete", "pod", "shell", "--wait=false"]);
}
