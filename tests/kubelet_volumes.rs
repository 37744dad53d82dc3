//! Pod volumes as seen from inside containers, end to end with a real `rampart server` and
//! its embedded agent: the pod's `fsGroup` on emptyDir/configMap/secret volumes (group,
//! setgid, group-readable secrets for a non-root user, files created later inheriting the
//! group), the process's groups (`id`: primary, supplementalGroups, fsGroup — upstream's
//! order), kubelet-written volumes mounted read-only; `subPath` and `subPathExpr` (a path
//! created on demand, symlinks inside the volume followed) and CVE-2021-25741's case: an init
//! container plants a symlink to `/` in a shared emptyDir and a container mounting it by
//! subPath gets upstream's `CreateContainerConfigError`, never the host's root.
//! Root only (skipped with a reason otherwise; `RAMPART_REQUIRE_PRIVILEGED=1` fails instead).

mod harness;
mod kubelet_support;

use std::path::Path;
use std::time::Duration;

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
    let name = format!("kv-{}", std::process::id());
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
    // `kubectl logs` goes through the kubelet API, served once its certificate is issued.
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
        &format!("busybox-kv-{}.tar", std::process::id()),
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
    fn pod(&self, name: &str) -> Value {
        let o = self.server.kubectl(&["get", "pod", name, "-o", "json"]);
        serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
    }

    /// Waits for the pod's phase to be `phase`; the pod.
    fn wait_phase(&self, name: &str, phase: &str) -> Value {
        let ok = eventually(Duration::from_secs(60), || {
            self.pod(name)["status"]["phase"] == phase
        });
        let p = self.pod(name);
        assert!(ok, "pod {name} never reached {phase}: {:#}", p["status"]);
        p
    }
}

#[test]
fn fs_group_and_groups() {
    require_privileged!();
    let n = start();
    n.server.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {key: hello}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: sec}\nstringData: {token: s3cret}\n",
    );
    // Everything the container sees is printed, one fact per line.
    let script = [
        "id",
        "stat -c 'ed %a %g' /ed",
        "touch /ed/new && stat -c 'ednew %g' /ed/new",
        "stat -L -c 'cm %a %g' /cm/key",
        "stat -c 'cmdir %a %g' /cm",
        "stat -L -c 'sec %a %g' /sec/token",
        "echo \"secret $(cat /sec/token)\"",
        "touch /cm/x 2>/dev/null && echo cm-writable || echo cm-readonly",
        "echo done",
    ]
    .join("; ");
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: fsg
  namespace: default
spec:
  nodeName: {node}
  restartPolicy: Never
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  securityContext:
    runAsUser: 1000
    runAsGroup: 3000
    fsGroup: 2000
    supplementalGroups: [4000]
    fsGroupChangePolicy: OnRootMismatch
  volumes:
  - name: ed
    emptyDir: {{}}
  - name: cm
    configMap: {{name: cm}}
  - name: sec
    secret: {{secretName: sec, defaultMode: 0400}}
  containers:
  - name: c
    image: busybox:test
    imagePullPolicy: Never
    command: ["sh", "-c", {script:?}]
    volumeMounts:
    - {{name: ed, mountPath: /ed}}
    - {{name: cm, mountPath: /cm}}
    - {{name: sec, mountPath: /sec}}
"#,
        node = n.name
    );
    n.server.ok_in(&["apply", "-f", "-"], &yaml);
    n.wait_phase("fsg", "Succeeded");
    let logs = n.server.ok(&["logs", "fsg"]);
    let has = |line: &str| {
        assert!(
            logs.lines().any(|l| l.trim() == line),
            "missing {line:?} in:\n{logs}"
        )
    };
    // Upstream's (containerd's) groups: primary, supplementalGroups, fsGroup, sorted.
    has("uid=1000 gid=3000 groups=2000,3000,4000");
    // emptyDir: 0777 + setgid, the fsGroup's; new files inherit the group.
    has("ed 2777 2000");
    has("ednew 2000");
    // configMap: group-readable, the directory setgid; mounted read-only.
    has("cm 644 2000");
    has("cmdir 2755 2000");
    has("cm-readonly");
    // A 0400 secret becomes 0440 for the group: readable by the non-root user.
    has("sec 440 2000");
    has("secret s3cret");
    has("done");
    n.server.ok(&["delete", "pod", "fsg", "--wait=false"]);
}

#[test]
fn sub_path_safe_and_expr() {
    require_privileged!();
    let n = start();
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: sp
  namespace: default
spec:
  nodeName: {node}
  restartPolicy: Never
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  volumes:
  - name: shared
    emptyDir: {{}}
  initContainers:
  - name: plant
    image: busybox:test
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /s/dir/inner && echo inside > /s/dir/inner/f && ln -s / /s/escape && ln -s dir /s/inlink"]
    volumeMounts:
    - {{name: shared, mountPath: /s}}
  containers:
  - name: ok
    image: busybox:test
    imagePullPolicy: Never
    command: ["sh", "-c", "cat /m/f; cat /viasym/f; touch /byname/made; ls /all/sp; ls /all/made/deep && echo created; sleep 3600"]
    env:
    - name: POD
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    volumeMounts:
    - {{name: shared, mountPath: /m, subPath: dir/inner}}
    - {{name: shared, mountPath: /viasym, subPath: inlink/inner}}
    - {{name: shared, mountPath: /byname, subPathExpr: "$(POD)"}}
    - {{name: shared, mountPath: /deep, subPath: made/deep}}
    - {{name: shared, mountPath: /all}}
  - name: bad
    image: busybox:test
    imagePullPolicy: Never
    command: ["sh", "-c", "ls /host; sleep 3600"]
    volumeMounts:
    - {{name: shared, mountPath: /host, subPath: escape}}
  - name: missing
    image: busybox:test
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    volumeMounts:
    - {{name: shared, mountPath: /x, subPathExpr: "$(NOPE)"}}
"#,
        node = n.name
    );
    n.server.ok_in(&["apply", "-f", "-"], &yaml);
    let status = |c: &str| -> Value {
        n.pod("sp")["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == c)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let ok = eventually(Duration::from_secs(60), || {
        status("ok")["state"]["running"].is_object()
            && status("bad")["state"]["waiting"]["reason"] == "CreateContainerConfigError"
            && status("missing")["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    });
    assert!(ok, "{:#}", n.pod("sp")["status"]);
    // Upstream's words: the detail (which could describe the host) stays in the agent's log.
    assert_eq!(
        status("bad")["state"]["waiting"]["message"],
        "failed to prepare subPath for volumeMount \"shared\" of container \"bad\""
    );
    assert_eq!(
        status("missing")["state"]["waiting"]["message"],
        "missing value for NOPE"
    );
    let logs = eventually(Duration::from_secs(20), || {
        n.server
            .kubectl(&["logs", "sp", "-c", "ok"])
            .stdout
            .ends_with(b"created\n")
    });
    let text = n.server.ok(&["logs", "sp", "-c", "ok"]);
    assert!(logs, "{text}");
    // The file through a plain subPath and through a symlink inside the volume; the
    // subPathExpr directory created and named after the pod; a missing subPath created.
    assert_eq!(text, "inside\ninside\nmade\ncreated\n");
    n.server.ok(&["delete", "pod", "sp", "--wait=false"]);
}
