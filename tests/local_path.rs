//! Local-path provisioning through the real API (no root needed): a `rampart server` ships
//! k3s's default `local-path` StorageClass; a claim without a class gets it; the claim waits
//! for its first consumer; a pod placed on a node binds it to a new hostPath volume
//! `pvc-<uid>` under `--default-local-storage-path` with that node's affinity; deleting the
//! claim deletes the volume. The node authorizer lets a node read exactly the claims of its
//! pods and the volumes bound to them (pod → pvc → pv). As root with the embedded kubelet: a
//! pod the scheduler places (it writes `volume.kubernetes.io/selected-node`) writes into its
//! claim, is deleted, and a second pod reads the data back from the volume under the
//! configured storage path; the deleted pod's own volume directories are gone, the claim's
//! data is not.

mod harness;
mod kubelet_support;

use std::path::Path;
use std::time::Duration;

use harness::{eventually, Identity, Raw, Server};
use kubelet_support::*;
use serde_json::Value;

#[test]
fn a_claim_is_provisioned_on_its_first_consumers_node() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("volumes-here");
    let s = Server::start_with(&["--default-local-storage-path", storage.to_str().unwrap()]);
    let found = eventually(Duration::from_secs(30), || {
        s.kubectl(&["get", "storageclass", "local-path"])
            .status
            .success()
    });
    assert!(found, "no local-path StorageClass");
    let sc = s.json(&["get", "storageclass", "local-path"]);
    assert_eq!(sc["provisioner"], "rancher.io/local-path");
    assert_eq!(sc["volumeBindingMode"], "WaitForFirstConsumer");
    assert_eq!(sc["reclaimPolicy"], "Delete");
    assert_eq!(
        sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
    let out = s.ok(&["get", "storageclass", "--no-headers"]);
    assert!(out.contains("local-path (default)"), "{out}");

    s.ok_in(
        &["apply", "-f", "-"],
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 128Mi}}
"#,
    );
    let classed = eventually(Duration::from_secs(20), || {
        s.json(&["get", "pvc", "data"])["spec"]["storageClassName"] == "local-path"
    });
    assert!(classed, "{:#}", s.json(&["get", "pvc", "data"]));
    // No consumer yet: nothing is provisioned.
    std::thread::sleep(Duration::from_secs(2));
    let pvc = s.json(&["get", "pvc", "data"]);
    assert!(pvc["spec"]["volumeName"].is_null(), "{pvc:#}");
    assert_eq!(s.ok(&["get", "pv", "-o", "name"]).trim(), "");

    s.ok_in(
        &["apply", "-f", "-"],
        r#"apiVersion: v1
kind: Pod
metadata: {name: user, namespace: default}
spec:
  nodeName: lp-node
  containers: [{name: c, image: busybox}]
  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]
"#,
    );
    let bound = eventually(Duration::from_secs(30), || {
        s.json(&["get", "pvc", "data"])["status"]["phase"] == "Bound"
    });
    let pvc = s.json(&["get", "pvc", "data"]);
    assert!(bound, "{pvc:#}");
    let uid = pvc["metadata"]["uid"].as_str().unwrap();
    let pv_name = format!("pvc-{uid}");
    assert_eq!(pvc["spec"]["volumeName"], pv_name.as_str());
    assert_eq!(
        pvc["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        "lp-node"
    );
    assert_eq!(pvc["status"]["capacity"]["storage"], "128Mi", "{pvc:#}");
    let pv = s.json(&["get", "pv", &pv_name]);
    assert_eq!(
        pv["spec"]["hostPath"]["path"],
        storage
            .join(format!("{pv_name}_default_data"))
            .to_str()
            .unwrap(),
        "{pv:#}"
    );
    assert_eq!(pv["spec"]["claimRef"]["uid"], uid);
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
            ["values"][0],
        "lp-node"
    );
    let phase_bound = eventually(Duration::from_secs(10), || {
        s.json(&["get", "pv", &pv_name])["status"]["phase"] == "Bound"
    });
    assert!(phase_bound, "{:#}", s.json(&["get", "pv", &pv_name]));
    let out = s.ok(&["get", "pvc", "data", "--no-headers"]);
    assert!(out.contains("Bound") && out.contains(&pv_name), "{out}");

    // The claim goes (its pod first): the Delete volume goes with it.
    s.ok(&["delete", "pod", "user", "--grace-period=0", "--force"]);
    s.ok(&["delete", "pvc", "data", "--wait=false"]);
    let gone = eventually(Duration::from_secs(30), || {
        !s.kubectl(&["get", "pv", &pv_name]).status.success()
    });
    assert!(gone, "{:#}", s.json(&["get", "pv", &pv_name]));
}

fn claim_yaml(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 64Mi}}}}\n"
    )
}

fn bound_volume(s: &Server, claim: &str) -> String {
    let bound = eventually(Duration::from_secs(30), || {
        s.json(&["get", "pvc", claim])["status"]["phase"] == "Bound"
    });
    let pvc = s.json(&["get", "pvc", claim]);
    assert!(bound, "{pvc:#}");
    pvc["spec"]["volumeName"].as_str().unwrap().to_string()
}

/// Upstream's node authorizer edges pod → pvc → pv, seen from two nodes' identities.
#[test]
fn a_node_reads_only_its_pods_claims_and_their_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("vols");
    let s = Server::start_with(&["--default-local-storage-path", storage.to_str().unwrap()]);
    for c in ["mine", "theirs", "unused"] {
        s.ok_in(&["apply", "-f", "-"], &claim_yaml(c));
    }
    for (pod, node, claim) in [("p1", "n1", "mine"), ("p2", "n2", "theirs")] {
        s.ok_in(
            &["apply", "-f", "-"],
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: default}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: busybox}}]\n  volumes: [{{name: d, persistentVolumeClaim: {{claimName: {claim}}}}}]\n"
            ),
        );
    }
    let pv_mine = bound_volume(&s, "mine");
    let pv_theirs = bound_volume(&s, "theirs");
    let (c1, k1) = s.client_cert("system:node:n1", &["system:nodes"]);
    let get = |path: &str| {
        s.raw(Raw {
            identity: Identity::Pem(&c1, &k1),
            ..Raw::get(path)
        })
        .status
    };
    let claims = "/api/v1/namespaces/default/persistentvolumeclaims";
    let table: Vec<(String, u16)> = vec![
        (format!("{claims}/mine"), 200),
        (format!("/api/v1/persistentvolumes/{pv_mine}"), 200),
        (format!("{claims}/theirs"), 403),
        (format!("/api/v1/persistentvolumes/{pv_theirs}"), 403),
        (format!("{claims}/unused"), 403),
        (claims.to_string(), 403),
        ("/api/v1/persistentvolumes".to_string(), 403),
    ];
    // The graph follows the store: allow it a moment to see the bindings.
    let ok = eventually(Duration::from_secs(5), || {
        table.iter().all(|(path, want)| get(path) == *want)
    });
    let got: Vec<(String, u16, u16)> = table.iter().map(|(p, w)| (p.clone(), *w, get(p))).collect();
    assert!(ok, "(path, want, got): {got:#?}");
    // The pod goes: its node loses the claim and the volume.
    s.ok(&["delete", "pod", "p1", "--grace-period=0", "--force"]);
    let gone = eventually(Duration::from_secs(5), || {
        get(&format!("{claims}/mine")) == 403
            && get(&format!("/api/v1/persistentvolumes/{pv_mine}")) == 403
    });
    assert!(gone, "access to the claim and volume ends with the pod");
}

struct Node {
    server: Server,
    storage: tempfile::TempDir,
    _logs_dir: tempfile::TempDir,
    _cleanup: Cleanup,
}

fn start_node() -> Node {
    let logs_dir = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let name = format!("lp-{}", std::process::id());
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
        "--default-local-storage-path",
        storage.path().to_str().unwrap(),
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
        &format!("busybox-lp-{}.tar", std::process::id()),
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
        storage,
        _logs_dir: logs_dir,
        _cleanup: cleanup,
    }
}

fn wait_phase(s: &Server, pod: &str, phase: &str) -> Value {
    let ok = eventually(Duration::from_secs(60), || {
        s.json(&["get", "pod", pod])["status"]["phase"] == phase
    });
    let p = s.json(&["get", "pod", pod]);
    assert!(ok, "pod {pod} never reached {phase}: {:#}", p["status"]);
    p
}

fn claim_pod(name: &str, script: &str, read_only: bool) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  restartPolicy: Never
  securityContext: {{fsGroup: 2345}}
  containers:
  - name: c
    image: busybox:test
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "{script}"]
    volumeMounts: [{{name: d, mountPath: /data}}, {{name: scratch, mountPath: /scratch}}]
  volumes:
  - {{name: d, persistentVolumeClaim: {{claimName: data, readOnly: {read_only}}}}}
  - {{name: scratch, emptyDir: {{}}}}
"#
    )
}

#[test]
fn a_pod_writes_its_claim_and_the_next_pod_reads_it() {
    require_privileged!();
    let n = start_node();
    let s = &n.server;
    s.ok_in(&["apply", "-f", "-"], &claim_yaml("data"));
    // No nodeName: the scheduler places the pod and selects the claim's node.
    s.ok_in(
        &["apply", "-f", "-"],
        &claim_pod(
            "writer",
            "echo persisted > /data/file && ls -ln /data/file && touch /scratch/x",
            false,
        ),
    );
    let p = wait_phase(s, "writer", "Succeeded");
    let node = p["spec"]["nodeName"].as_str().unwrap().to_string();
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let pvc = s.json(&["get", "pvc", "data"]);
    assert_eq!(
        pvc["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        node.as_str(),
        "{pvc:#}"
    );
    let pv_name = bound_volume(s, "data");
    let pv = s.json(&["get", "pv", &pv_name]);
    let path = pv["spec"]["hostPath"]["path"].as_str().unwrap().to_string();
    assert!(
        Path::new(&path).starts_with(n.storage.path()),
        "{path} is not under {}",
        n.storage.path().display()
    );
    assert_eq!(
        std::fs::read_to_string(Path::new(&path).join("file")).unwrap(),
        "persisted\n"
    );
    // fsGroup: the file the container created carries the pod's group.
    let logs = s.ok(&["logs", "writer"]);
    assert!(logs.contains(" 2345 "), "{logs}");
    let pod_dir = s.data_dir().join("agent").join("pods").join(&uid);
    s.ok(&["delete", "pod", "writer", "--wait=true", "--timeout=60s"]);
    let removed = eventually(Duration::from_secs(30), || !pod_dir.exists());
    assert!(removed, "{} was not removed", pod_dir.display());
    // Its tmpfs volumes (the injected kube-api-access token volume) went with it.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(uid.as_str()),
        "mounts of the deleted pod left: {mounts}"
    );
    assert!(
        Path::new(&path).join("file").is_file(),
        "the claim's data went with the pod"
    );

    // A second pod reads it back, through a read-only claim.
    s.ok_in(
        &["apply", "-f", "-"],
        &claim_pod(
            "reader",
            "cat /data/file; touch /data/nope 2>/dev/null && echo WRITABLE || echo READONLY",
            true,
        ),
    );
    wait_phase(s, "reader", "Succeeded");
    let logs = s.ok(&["logs", "reader"]);
    assert!(
        logs.contains("persisted") && logs.contains("READONLY"),
        "{logs}"
    );
    s.ok(&["delete", "pod", "reader", "--wait=true", "--timeout=60s"]);
}

#[test]
fn a_pod_waits_for_an_unbound_claim() {
    require_privileged!();
    let n = start_node();
    let s = &n.server;
    // A claim of a class with immediate binding that nothing provisions: the pod, placed by
    // nodeName (no scheduler), waits in ContainerCreating with FailedMount.
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: stuck, namespace: default}\nspec:\n  storageClassName: nothing\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Mi}}\n",
    );
    let node = s.json(&["get", "nodes"])["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    s.ok_in(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: waiting, namespace: default}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: busybox:test, imagePullPolicy: Never, command: [sleep, '100']}}]\n  volumes: [{{name: d, persistentVolumeClaim: {{claimName: stuck}}}}]\n"
        ),
    );
    let failed = eventually(Duration::from_secs(30), || {
        s.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=waiting",
        ])
        .contains("FailedMount")
    });
    let events = s.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=waiting",
    ]);
    assert!(failed, "{events}");
    assert!(
        events.contains("error processing PVC default/stuck: PVC is not bound"),
        "{events}"
    );
    let p = s.json(&["get", "pod", "waiting"]);
    assert_eq!(p["status"]["phase"], "Pending", "{:#}", p["status"]);
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "ContainerCreating",
        "{:#}",
        p["status"]
    );
    s.ok(&["delete", "pod", "waiting", "--grace-period=0", "--force"]);
}
