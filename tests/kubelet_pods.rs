//! Pods run on the server's embedded agent, end to end: a real `rampart server`, images
//! imported with `rampart images import`, pods created with the stock kubectl and
//! `spec.nodeName` set (no scheduler needed), real containers (namespaces, overlayfs,
//! cgroups, seccomp), status read back from the API, CRI log files read from disk.
//! Root only (skipped with a reason otherwise; `RAMPART_REQUIRE_PRIVILEGED=1` fails instead).
//! Every test removes its pods; a guard kills whatever processes and cgroups remain.

mod harness;
mod kubelet_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::{eventually, Server};
use kubelet_support::*;
use serde_json::Value;

struct Node {
    server: Server,
    name: String,
    logs: PathBuf,
    _logs_dir: tempfile::TempDir,
    cleanup: Cleanup,
}

fn start() -> Node {
    let logs_dir = tempfile::tempdir().unwrap();
    let logs = logs_dir.path().to_path_buf();
    let name = format!("kn-{}", std::process::id());
    let cleanup_root = format!("rampart-test-{}", std::process::id());
    let server = Server::start_with_agent(&[
        "--node-name",
        &name,
        "--pod-log-dir",
        logs.to_str().unwrap(),
        "--kubelet-cgroup-root",
        &cleanup_root,
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
        &format!("busybox-{}.tar", std::process::id()),
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
    Node {
        server,
        name,
        logs,
        _logs_dir: logs_dir,
        cleanup,
    }
}

impl Node {
    fn pod_yaml(&self, name: &str, policy: &str, script: &str, extra: &str) -> String {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  nodeName: {node}
  restartPolicy: {policy}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 3
  containers:
  - name: main
    image: busybox:test
    imagePullPolicy: Never
    command: ["sh", "-c", {script:?}]
{extra}"#,
            node = self.name
        )
    }

    fn create(&self, yaml: &str) {
        self.server.ok_in(&["apply", "-f", "-"], yaml);
    }

    /// Poll the pod (every 100 ms) until `f` holds; returns the pod.
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

    fn log_file(&self, pod: &Value, ctr: &str, attempt: u32) -> PathBuf {
        self.logs
            .join(format!(
                "default_{}_{}",
                pod["metadata"]["name"].as_str().unwrap(),
                pod["metadata"]["uid"].as_str().unwrap()
            ))
            .join(ctr)
            .join(format!("{attempt}.log"))
    }

    /// The text of a CRI log (the 4th field of each line).
    fn log_text(&self, pod: &Value, ctr: &str) -> String {
        std::fs::read_to_string(self.log_file(pod, ctr, 0))
            .unwrap_or_default()
            .lines()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn delete(&self, name: &str) {
        self.server
            .ok(&["delete", "pod", name, "--wait=true", "--timeout=60s"]);
    }

    fn qos_dir(&self, uid: &str) -> String {
        format!("besteffort/pod{uid}")
    }
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or_default()
}

fn state(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]["state"]
}

#[test]
fn a_pod_runs_exits_and_reports_like_upstream() {
    require_privileged!();
    let n = start();
    n.create(&n.pod_yaml("hello", "Never", "echo hi; sleep 1; exit 3", ""));
    let running = n.wait_for("hello", 30, "Running", |p| phase(p) == "Running");
    assert!(
        state(&running)["running"]["startedAt"].is_string(),
        "{:#}",
        running["status"]
    );
    let done = n.wait_for("hello", 30, "Failed", |p| phase(p) == "Failed");
    let st = &done["status"];
    let t = &st["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["exitCode"], 3, "{st:#}");
    assert_eq!(t["reason"], "Error", "{st:#}");
    assert_eq!(st["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(st["qosClass"], "BestEffort");
    let node = n.server.json(&["get", "node", &n.name, "-o", "json"]);
    let internal = node["status"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .map(|a| a["address"].clone())
        .unwrap();
    assert_eq!(st["hostIP"], internal, "{st:#}");
    assert!(st["startTime"].is_string());
    let cond = |k: &str| {
        st["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == k)
            .map(|c| c["status"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(cond("PodScheduled").as_deref(), Some("True"));
    assert_eq!(cond("Initialized").as_deref(), Some("True"));
    assert_eq!(cond("Ready").as_deref(), Some("False"));
    // The CRI log: "<time> stdout F hi".
    let raw = std::fs::read_to_string(n.log_file(&done, "main", 0)).unwrap();
    let line = raw.lines().next().unwrap_or_default();
    let f: Vec<&str> = line.splitn(4, ' ').collect();
    assert_eq!(f.len(), 4, "{raw}");
    assert!(
        f[0].parse::<jiff::Timestamp>().is_ok(),
        "bad timestamp in {line}"
    );
    assert_eq!(&f[1..], ["stdout", "F", "hi"]);
    // Events as upstream names them.
    let ev = n.server.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=hello",
        "-o",
        "json",
    ]);
    for reason in ["Pulled", "Created", "Started"] {
        assert!(
            ev.contains(&format!("\"reason\": \"{reason}\"")),
            "no {reason} event: {ev}"
        );
    }
    // The pod's shim stopped once it was terminal; its cgroups are gone.
    let uid = done["metadata"]["uid"].as_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(10), || n.cleanup.shims().is_empty()),
        "shim still running"
    );
    assert!(
        !Path::new(&format!(
            "/sys/fs/cgroup/memory/{}/{}",
            n.cleanup.cgroup_root,
            n.qos_dir(&uid)
        ))
        .exists(),
        "pod cgroup left behind"
    );
    n.delete("hello");
}

#[test]
fn hardening_is_visible_from_inside() {
    require_privileged!();
    let n = start();
    let script = "grep -E '^(Seccomp|CapEff|CapBnd|NoNewPrivs):' /proc/self/status; \
                  echo kcore=$(wc -c < /proc/kcore 2>/dev/null || echo absent); \
                  echo interrupts=$(wc -c < /proc/interrupts); \
                  echo firmware=$(ls -A /sys/firmware | wc -l); \
                  echo sys=$(echo x 2>&1 > /proc/sys/kernel/domainname || echo refused); \
                  mount -t tmpfs none /tmp 2>/dev/null && echo mount=allowed || echo mount=refused; \
                  echo fds=$(ls /proc/self/fd | tr '\\n' ' '); \
                  echo uid=$(id -u); echo host=$(hostname); echo done";
    n.create(&n.pod_yaml("hard", "Never", script, ""));
    let done = n.wait_for("hard", 30, "Succeeded", |p| phase(p) == "Succeeded");
    let log = n.log_text(&done, "main");
    let val = |k: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {k} in log:\n{log}"))
    };
    assert_eq!(val("Seccomp:"), "2", "{log}");
    // containerd's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
    // NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
    assert_eq!(val("CapEff:"), "00000000a80425fb", "{log}");
    assert_eq!(val("CapBnd:"), "00000000a80425fb", "{log}");
    assert_eq!(val("NoNewPrivs:"), "0", "{log}");
    // Masked as runc does (this kernel may have no /proc/kcore at all).
    let kcore = val("kcore=");
    assert!(
        kcore == "0" || (kcore == "absent" && !Path::new("/proc/kcore").exists()),
        "/proc/kcore not masked: {log}"
    );
    assert_eq!(
        val("interrupts="),
        "0",
        "/proc/interrupts not masked: {log}"
    );
    assert_eq!(val("firmware="), "0", "/sys/firmware not masked: {log}");
    assert_eq!(val("mount="), "refused", "{log}");
    assert_eq!(val("uid="), "0");
    assert_eq!(val("host="), "hard");
    // Only stdio and the directory `ls` itself opened.
    let fds: Vec<&str> = log
        .lines()
        .find_map(|l| l.strip_prefix("fds="))
        .unwrap()
        .split_whitespace()
        .collect();
    assert!(
        fds.iter().all(|f| ["0", "1", "2", "3"].contains(f)),
        "leaked fds: {fds:?}"
    );
    assert!(
        val("sys=").contains("Read-only file system"),
        "/proc/sys writable: {log}"
    );
    n.delete("hard");
}

#[test]
fn graceful_delete_and_restart_backoff() {
    require_privileged!();
    let n = start();
    // A container that handles SIGTERM: deleting must take well under the 3 s grace.
    n.create(&n.pod_yaml(
        "term",
        "Always",
        "trap 'echo got-term; exit 0' TERM; while true; do sleep 0.2; done",
        "",
    ));
    let running = n.wait_for("term", 30, "Running", |p| {
        phase(p) == "Running" && state(p)["running"].is_object()
    });
    let uid = running["metadata"]["uid"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    n.delete("term");
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "graceful delete took {took:?}"
    );
    assert!(
        eventually(Duration::from_secs(10), || n.cleanup.shims().is_empty()),
        "shim left after delete"
    );
    assert!(
        !n.server.data_dir().join("agent/pods").join(&uid).exists(),
        "pod directory left"
    );
    for c in ["memory", "pids", "cpu"] {
        let p = format!(
            "/sys/fs/cgroup/{c}/{}/{}",
            n.cleanup.cgroup_root,
            n.qos_dir(&uid)
        );
        assert!(!Path::new(&p).exists(), "{p} left behind");
    }

    // Restarts with back-off: exits at once, restartPolicy Always.
    n.create(&n.pod_yaml("crash", "Always", "echo crash; exit 1", ""));
    let p = n.wait_for("crash", 40, "CrashLoopBackOff", |p| {
        let cs = &p["status"]["containerStatuses"][0];
        cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
            && cs["restartCount"].as_u64() >= Some(1)
    });
    let cs = &p["status"]["containerStatuses"][0];
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1, "{cs:#}");
    assert!(
        cs["state"]["waiting"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("back-off 10s"),
        "{cs:#}"
    );
    n.delete("crash");
}

#[test]
fn containers_survive_an_agent_kill() {
    require_privileged!();
    let mut n = start();
    n.create(&n.pod_yaml("steady", "Always", "while true; do sleep 1; done", ""));
    let before = n.wait_for("steady", 30, "Running", |p| state(p)["running"].is_object());
    let uid = before["metadata"]["uid"].as_str().unwrap().to_string();
    let rel = format!("{}/main-0", n.qos_dir(&uid));
    let pid = n.cleanup.init_pid(&rel);
    assert!(pid.is_some(), "no container process in its cgroup");
    // kill -9 of the server (and so of its embedded agent).
    let mut child = n.server.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        n.cleanup.init_pid(&rel),
        pid,
        "the container did not survive the agent"
    );
    n.server.boot();
    // Re-adopted: same process, same start time, no restart.
    std::thread::sleep(Duration::from_secs(3));
    let after = n.wait_for("steady", 30, "Running after restart", |p| {
        state(p)["running"].is_object()
    });
    assert_eq!(
        n.cleanup.init_pid(&rel),
        pid,
        "container replaced after the restart"
    );
    let cs = &after["status"]["containerStatuses"][0];
    assert_eq!(cs["restartCount"], 0, "{cs:#}");
    assert_eq!(
        state(&after)["running"]["startedAt"],
        state(&before)["running"]["startedAt"],
        "the container was restarted"
    );
    n.delete("steady");
}

#[test]
fn default_pods_get_their_service_account_volume() {
    require_privileged!();
    let n = start();
    // No automountServiceAccountToken: false here — admission injects kube-api-access-*
    // (projected token, kube-root-ca.crt, namespace) and the kubelet must fill it.
    let yaml = n
        .pod_yaml(
            "sa",
            "Never",
            "d=/var/run/secrets/kubernetes.io/serviceaccount; echo ns=$(cat $d/namespace); \
             echo ca=$(grep -c 'BEGIN CERTIFICATE' $d/ca.crt); echo token=$(cut -d. -f1 $d/token | wc -c); \
             echo fs=$(grep \" $d \" /proc/self/mountinfo | grep -c tmpfs)",
            "",
        )
        .replace("  automountServiceAccountToken: false\n", "");
    n.create(&yaml);
    let done = n.wait_for("sa", 30, "Succeeded", |p| phase(p) == "Succeeded");
    let log = n.log_text(&done, "main");
    assert!(log.contains("ns=default"), "{log}");
    assert!(!log.contains("ca=0") && log.contains("ca="), "{log}");
    let token_len: usize = log
        .lines()
        .find_map(|l| l.strip_prefix("token="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(token_len > 10, "no JWT header in the token: {log}");
    assert!(
        log.contains("fs=1"),
        "the token volume is not on tmpfs: {log}"
    );
    let uid = done["metadata"]["uid"].as_str().unwrap().to_string();
    // A terminal pod is deleted at once by the API; the agent cleans up right after.
    n.delete("sa");
    let gone = eventually(Duration::from_secs(10), || {
        !std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .contains(&uid)
    });
    assert!(gone, "a volume mount outlived its pod");
}
