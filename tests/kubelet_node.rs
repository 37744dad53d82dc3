//! The node side of the kubelet, end to end on a real `rampart server` with its embedded
//! agent: node status (allocatable after `--system-reserved`/`--kube-reserved`, nodeInfo in
//! Kubernetes form), static pods from `--pod-manifest-path` with their mirror pods, hostPath
//! `type` checks, and hard eviction with a threshold lowered by `--eviction-hard` until it
//! is always crossed (PIDPressure: the condition and a pod `Evicted`).
//! Root only (skipped with a reason otherwise; `RAMPART_REQUIRE_PRIVILEGED=1` fails instead).

mod harness;
mod kubelet_support;

use std::path::Path;
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

fn start(tag: &str, extra: &[&str]) -> Node {
    let logs_dir = tempfile::tempdir().unwrap();
    let logs = logs_dir.path().to_path_buf();
    let name = format!("{tag}-{}", std::process::id());
    let cgroup_root = format!("rampart-test-{}-{tag}", std::process::id());
    let mut args = vec![
        "--node-name",
        &name,
        "--pod-log-dir",
        logs.to_str().unwrap(),
        "--kubelet-cgroup-root",
        &cgroup_root,
    ];
    args.extend_from_slice(extra);
    let server = Server::start_with_agent(&args);
    let cleanup = Cleanup {
        cgroup_root,
        data_dir: server.data_dir().to_path_buf(),
    };
    let registered = eventually(Duration::from_secs(60), || {
        server.kubectl(&["get", "node", &name]).status.success()
    });
    assert!(registered, "node {name} never registered");
    let tar = write(
        logs.parent().unwrap_or(Path::new("/tmp")),
        &format!("busybox-node-{tag}-{}.tar", std::process::id()),
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
        _logs_dir: logs_dir,
        _cleanup: cleanup,
    }
}

impl Node {
    fn get(&self, kind: &str, ns: &str, name: &str) -> Value {
        let o = self
            .server
            .kubectl(&["get", kind, "-n", ns, name, "-o", "json"]);
        if !o.status.success() {
            return Value::Null;
        }
        serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
    }

    fn wait_for(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        secs: u64,
        what: &str,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            last = self.get(kind, ns, name);
            if f(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "{kind} {ns}/{name}: {what} not reached in {secs}s; last: {:#}",
            last["status"]
        );
    }

    fn pod(&self, name: &str, script: &str, extra_spec: &str, extra_ctr: &str) -> String {
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
  terminationGracePeriodSeconds: 2
{extra_spec}  containers:
  - name: main
    image: busybox:test
    imagePullPolicy: Never
    command: ["sh", "-c", {script:?}]
{extra_ctr}"#,
            node = self.name
        )
    }
}

fn ki(q: &Value) -> i64 {
    q.as_str()
        .and_then(|s| s.strip_suffix("Ki"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a Ki quantity: {q}"))
}

fn condition<'a>(obj: &'a Value, kind: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

#[test]
fn node_status_static_pods_and_host_paths() {
    require_privileged!();
    let manifests = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let n = start(
        "kn",
        &[
            "--system-reserved",
            "cpu=100m,memory=100Mi",
            "--kube-reserved",
            "memory=50Mi",
            "--eviction-hard",
            "memory.available<10Mi",
            "--pod-manifest-path",
            manifests.path().to_str().unwrap(),
        ],
    );
    // --- node status (the first status write follows registration)
    let mut node = n.server.json(&["get", "node", &n.name, "-o", "json"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while node["status"]["capacity"]["memory"].is_null() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        node = n.server.json(&["get", "node", &n.name, "-o", "json"]);
    }
    let st = &node["status"];
    let cap_mem = ki(&st["capacity"]["memory"]);
    assert_eq!(
        ki(&st["allocatable"]["memory"]),
        cap_mem - 160 * 1024,
        "{st:#}"
    );
    let cpus: i64 = st["capacity"]["cpu"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        st["allocatable"]["cpu"],
        format!("{}m", cpus * 1000 - 100),
        "{st:#}"
    );
    let server_version =
        n.server.json(&["version", "-o", "json"])["serverVersion"]["gitVersion"].clone();
    assert_eq!(st["nodeInfo"]["kubeletVersion"], server_version, "{st:#}");
    assert!(st["nodeInfo"]["kubeletVersion"]
        .as_str()
        .unwrap()
        .starts_with("v1."));
    assert!(st["nodeInfo"]["containerRuntimeVersion"]
        .as_str()
        .unwrap()
        .starts_with("rampart://"));
    assert_eq!(condition(&node, "MemoryPressure")["status"], "False");
    let table = n.server.ok(&["get", "node", &n.name]);
    assert!(table.contains("v1.37"), "{table}");

    // --- static pod: mirror pod created, edited, removed
    let manifest = |image_arg: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {{app: web}}\nspec:\n  automountServiceAccountToken: false\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox:test\n    imagePullPolicy: Never\n    command: [\"sh\", \"-c\", \"echo {image_arg}; trap 'exit 0' TERM; while true; do sleep 0.2; done\"]\n"
        )
    };
    std::fs::write(manifests.path().join("web.yaml"), manifest("v1")).unwrap();
    let mirror = format!("web-{}", n.name);
    let p = n.wait_for("pod", "default", &mirror, 40, "mirror pod Running", |p| {
        p["status"]["phase"] == "Running"
    });
    let ann = &p["metadata"]["annotations"];
    assert!(ann["kubernetes.io/config.mirror"].is_string(), "{ann:#}");
    assert_eq!(ann["kubernetes.io/config.source"], "file");
    assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(p["metadata"]["ownerReferences"][0]["name"], n.name.as_str());
    let uid1 = p["metadata"]["uid"].as_str().unwrap().to_string();
    std::fs::write(manifests.path().join("web.yaml"), manifest("v2")).unwrap();
    let p = n.wait_for(
        "pod",
        "default",
        &mirror,
        40,
        "edited mirror pod Running",
        |p| {
            p["metadata"]["uid"].as_str().is_some_and(|u| u != uid1)
                && p["status"]["phase"] == "Running"
        },
    );
    let cmd = p["spec"]["containers"][0]["command"][2]
        .as_str()
        .unwrap_or_default();
    assert!(cmd.contains("echo v2"), "{cmd}");
    std::fs::remove_file(manifests.path().join("web.yaml")).unwrap();
    let gone = eventually(Duration::from_secs(40), || {
        !n.server.kubectl(&["get", "pod", &mirror]).status.success()
    });
    assert!(gone, "mirror pod outlived its manifest");

    // --- hostPath types (Pod Security baseline refuses hostPath: the namespace opts out, as
    // an operator running such pods would)
    n.server.ok(&[
        "label",
        "namespace",
        "default",
        "pod-security.kubernetes.io/enforce=privileged",
        "--overwrite",
    ]);
    let dir = host.path().join("made");
    let file = host.path().join("file");
    std::fs::write(&file, "from-the-host").unwrap();
    let vols = format!(
        "  volumes:\n  - name: made\n    hostPath: {{path: {}, type: DirectoryOrCreate}}\n  - name: file\n    hostPath: {{path: {}, type: File}}\n",
        dir.display(),
        file.display()
    );
    let mounts = "    volumeMounts:\n    - {name: made, mountPath: /made}\n    - {name: file, mountPath: /file}\n";
    n.server.ok_in(
        &["apply", "-f", "-"],
        &n.pod("hp", "cat /file; echo written > /made/out", &vols, mounts),
    );
    n.wait_for("pod", "default", "hp", 40, "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    assert_eq!(
        std::fs::read_to_string(dir.join("out")).unwrap(),
        "written\n"
    );
    // A mismatch: a file where a directory is required.
    let bad = format!(
        "  volumes:\n  - name: d\n    hostPath: {{path: {}, type: Directory}}\n",
        file.display()
    );
    n.server.ok_in(
        &["apply", "-f", "-"],
        &n.pod(
            "hpbad",
            "true",
            &bad,
            "    volumeMounts:\n    - {name: d, mountPath: /d}\n",
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = format!(
        "hostPath type check failed: {} is not a directory",
        file.display()
    );
    loop {
        let ev = n.server.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=hpbad,reason=FailedMount",
            "-o",
            "json",
        ]);
        if ev.contains(&want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no FailedMount event with {want:?}: {ev}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let p = n.get("pod", "default", "hpbad");
    assert_eq!(p["status"]["phase"], "Pending", "{:#}", p["status"]);
    // --- a secret update reaches a running pod (the `..data` swap)
    n.server.ok(&[
        "create",
        "secret",
        "generic",
        "live",
        "--from-literal=key=one",
    ]);
    let out = host.path().join("out");
    let vols = format!(
        "  volumes:\n  - name: s\n    secret: {{secretName: live}}\n  - name: out\n    hostPath: {{path: {}, type: DirectoryOrCreate}}\n",
        out.display()
    );
    let mounts =
        "    volumeMounts:\n    - {name: s, mountPath: /s}\n    - {name: out, mountPath: /out}\n";
    n.server.ok_in(
        &["apply", "-f", "-"],
        &n.pod(
            "reader",
            "while true; do cat /s/key > /out/seen; sleep 0.3; done",
            &vols,
            mounts,
        ),
    );
    let seen = |want: &str| std::fs::read_to_string(out.join("seen")).is_ok_and(|s| s == want);
    assert!(
        eventually(Duration::from_secs(40), || seen("one")),
        "the pod never saw the secret"
    );
    n.server.ok(&[
        "patch",
        "secret",
        "live",
        "-p",
        r#"{"stringData":{"key":"two"}}"#,
    ]);
    assert!(
        eventually(Duration::from_secs(40), || seen("two")),
        "the secret update never reached the running pod: {:?}",
        std::fs::read_to_string(out.join("seen"))
    );
    for name in ["hp", "hpbad", "reader"] {
        n.server
            .ok(&["delete", "pod", name, "--wait=true", "--timeout=60s"]);
    }
}

#[test]
fn pressure_sets_the_condition_and_evicts() {
    require_privileged!();
    // A pid.available threshold of pid_max is always crossed.
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap();
    let threshold = format!("pid.available<{}", pid_max.trim());
    let n = start("ke", &["--eviction-hard", &threshold]);
    let node = n.wait_for("node", "default", &n.name, 40, "PIDPressure", |node| {
        condition(node, "PIDPressure")["status"] == "True"
    });
    assert_eq!(
        condition(&node, "PIDPressure")["reason"],
        "KubeletHasInsufficientPID"
    );
    // Without a memory threshold nothing is subtracted from memory for eviction.
    assert_eq!(
        node["status"]["allocatable"]["memory"],
        node["status"]["capacity"]["memory"]
    );
    n.server.ok_in(
        &["apply", "-f", "-"],
        &n.pod(
            "victim",
            "trap 'exit 0' TERM; while true; do sleep 0.2; done",
            "",
            "",
        ),
    );
    let p = n.wait_for("pod", "default", "victim", 60, "Evicted", |p| {
        p["status"]["reason"] == "Evicted"
    });
    assert_eq!(p["status"]["phase"], "Failed");
    let msg = p["status"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("The node was low on resource: pids."),
        "{msg}"
    );
    assert!(
        p["status"]["containerStatuses"][0]["state"]["terminated"].is_object(),
        "{:#}",
        p["status"]
    );
    assert_eq!(
        condition(&p, "DisruptionTarget")["reason"],
        "TerminationByKubelet"
    );
    n.server
        .ok(&["delete", "pod", "victim", "--wait=true", "--timeout=60s"]);
}
