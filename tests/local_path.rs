//! Local-path provisioning through the real API (no root needed): a `rampart server` ships
//! k3s's default `local-path` StorageClass; a claim without a class gets it; the claim waits
//! for its first consumer; a pod placed on a node binds it to a new hostPath volume
//! `pvc-<uid>` under `--default-local-storage-path` with that node's affinity; deleting the
//! claim deletes the volume. (Mounting the volume in the kubelet is not done yet.)

mod harness;

use std::time::Duration;

use harness::{eventually, Server};

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
