//! The Deployment and ReplicaSet controllers end to end with the stock kubectl: create, scale
//! 1→5→1, `set image` rolling out a new ReplicaSet, `rollout status|history|undo
//! --to-revision|pause|resume|restart`, Recreate, the progress deadline, and the events
//! `kubectl describe` shows.
//!
//! No kubelet runs: the test plays its part and marks pods Running and Ready through the
//! `status` subresource (`ready_all`), which is what lets a rollout progress. Counts are of pods
//! that exist and are not being deleted, so a scheduler binding them changes nothing.

mod harness;

use std::time::Duration;

use harness::{eventually, Raw, Server};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(40);

/// Live (not being deleted) objects of `kind` with label selector `sel`.
fn live(s: &Server, kind: &str, sel: &str) -> Vec<Value> {
    s.json(&["get", kind, "-l", sel])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

/// Play the kubelet: every live pod matching `sel` becomes Running and Ready.
fn ready_all(s: &Server, sel: &str) {
    for pod in live(s, "pods", sel) {
        if pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        }) {
            continue;
        }
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let now = "2026-01-01T00:00:00Z";
        let body = json!({"status": {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            ],
        }})
        .to_string();
        let path = format!("/api/v1/namespaces/default/pods/{name}/status");
        let r = s.raw(Raw::send(
            "PATCH",
            &path,
            "application/merge-patch+json",
            body.as_bytes(),
        ));
        assert!(
            r.status == 200 || r.status == 404 || r.status == 409,
            "marking {name} ready: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
}

/// Drive pods ready until `kubectl rollout status` reports success.
fn roll_out(s: &Server, deploy: &str, sel: &str) {
    let done = eventually(WAIT, || {
        ready_all(s, sel);
        let out = s.ok(&[
            "rollout",
            "status",
            &format!("deployment/{deploy}"),
            "--watch=false",
        ]);
        out.contains("successfully rolled out")
    });
    assert!(
        done,
        "deployment {deploy} never finished rolling out: {}",
        s.ok(&["get", "deploy", deploy, "-o", "yaml"])
    );
    // The watching form agrees.
    let out = s.ok(&[
        "rollout",
        "status",
        &format!("deployment/{deploy}"),
        "--timeout=10s",
    ]);
    assert!(out.contains("successfully rolled out"), "{out}");
}

fn image_of(v: &Value) -> String {
    v["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn pod_image(p: &Value) -> String {
    p["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn replica_sets(s: &Server, sel: &str) -> Vec<Value> {
    live(s, "rs", sel)
}

#[test]
fn deployment_scales_rolls_out_undoes_and_pauses() {
    let s = Server::start();
    s.settle();
    let sel = "app=web";
    s.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=1",
    ]);
    roll_out(&s, "web", sel);
    assert_eq!(live(&s, "pods", sel).len(), 1);
    let rs = replica_sets(&s, sel);
    assert_eq!(rs.len(), 1);
    let hash = rs[0]["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !hash.is_empty(),
        "no pod-template-hash label: {}",
        rs[0]["metadata"]
    );
    assert_eq!(rs[0]["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(
        rs[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let d = s.json(&["get", "deploy", "web"]);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    for pod in live(&s, "pods", sel) {
        assert_eq!(
            pod["metadata"]["labels"]["pod-template-hash"],
            hash.as_str()
        );
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
    }

    // Scale 1 → 5 → 1.
    s.ok(&["scale", "deployment", "web", "--replicas=5"]);
    roll_out(&s, "web", sel);
    assert_eq!(live(&s, "pods", sel).len(), 5);
    let d = s.json(&["get", "deploy", "web"]);
    for f in [
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
    ] {
        assert_eq!(d["status"][f], 5, "{f}: {}", d["status"]);
    }
    s.ok(&["scale", "deployment", "web", "--replicas=1"]);
    assert!(
        eventually(WAIT, || live(&s, "pods", sel).len() == 1),
        "scale down to 1 left {} pods",
        live(&s, "pods", sel).len()
    );
    roll_out(&s, "web", sel);
    assert_eq!(
        replica_sets(&s, sel).len(),
        1,
        "scaling made a new ReplicaSet"
    );

    // set image → a second ReplicaSet, revision 2, the old one scaled to 0.
    s.ok(&["set", "image", "deployment/web", "nginx=nginx:1.28"]);
    roll_out(&s, "web", sel);
    let sets = replica_sets(&s, sel);
    assert_eq!(sets.len(), 2, "{sets:?}");
    let new = sets
        .iter()
        .find(|r| image_of(r) == "nginx:1.28")
        .expect("a ReplicaSet with the new image");
    assert_eq!(
        new["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    assert_eq!(new["spec"]["replicas"], 1);
    let old = sets
        .iter()
        .find(|r| image_of(r) == "nginx:1.27")
        .expect("old set");
    assert_eq!(old["spec"]["replicas"], 0);
    let pods = live(&s, "pods", sel);
    assert!(
        pods.len() == 1 && pod_image(&pods[0]) == "nginx:1.28",
        "{pods:?}"
    );

    let history = s.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains("REVISION"), "{history}");
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    let r1 = s.ok(&["rollout", "history", "deployment/web", "--revision=1"]);
    assert!(r1.contains("nginx:1.27"), "{r1}");

    // undo --to-revision=1 restores the first template (as revision 3).
    s.ok(&["rollout", "undo", "deployment/web", "--to-revision=1"]);
    assert_eq!(image_of(&s.json(&["get", "deploy", "web"])), "nginx:1.27");
    roll_out(&s, "web", sel);
    let sets = replica_sets(&s, sel);
    assert_eq!(sets.len(), 2, "undo reuses the first ReplicaSet: {sets:?}");
    let first = sets
        .iter()
        .find(|r| image_of(r) == "nginx:1.27")
        .expect("first set");
    assert_eq!(first["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(
        first["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(first["spec"]["replicas"], 1);
    let history = s.ok(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(revisions, ["2", "3"], "{history}");

    // pause: template changes make no ReplicaSet until resume.
    s.ok(&["rollout", "pause", "deployment/web"]);
    s.ok(&["set", "image", "deployment/web", "nginx=nginx:1.29"]);
    // Barrier: the controller has seen this generation (it writes observedGeneration).
    assert!(
        eventually(WAIT, || {
            let d = s.json(&["get", "deploy", "web"]);
            d["status"]["observedGeneration"] == d["metadata"]["generation"]
                && d["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Progressing" && c["reason"] == "DeploymentPaused")
                })
        }),
        "paused deployment never observed"
    );
    assert_eq!(
        replica_sets(&s, sel).len(),
        2,
        "a ReplicaSet was created while paused"
    );
    assert!(live(&s, "pods", sel)
        .iter()
        .all(|p| pod_image(p) == "nginx:1.27"));
    s.ok(&["rollout", "resume", "deployment/web"]);
    roll_out(&s, "web", sel);
    let sets = replica_sets(&s, sel);
    assert_eq!(sets.len(), 3);
    assert!(sets
        .iter()
        .any(|r| image_of(r) == "nginx:1.29" && r["spec"]["replicas"] == 1));

    // restart: a new template (restartedAt annotation), so a new ReplicaSet.
    s.ok(&["rollout", "restart", "deployment/web"]);
    roll_out(&s, "web", sel);
    assert_eq!(replica_sets(&s, sel).len(), 4);

    // What kubectl describe shows.
    let describe = s.ok(&["describe", "deployment", "web"]);
    assert!(describe.contains("ScalingReplicaSet"), "{describe}");
    assert!(describe.contains("NewReplicaSetAvailable"), "{describe}");
    let rs_name = format!("web-{hash}");
    let describe = s.ok(&["describe", "rs", &rs_name]);
    assert!(describe.contains("SuccessfulCreate"), "{describe}");
}

#[test]
fn rolling_update_respects_max_surge_and_max_unavailable() {
    let s = Server::start();
    s.settle();
    let sel = "app=surge";
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: surge}\nspec:\n  replicas: 4\n  selector: {matchLabels: {app: surge}}\n  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}\n  template:\n    metadata: {labels: {app: surge}}\n    spec: {containers: [{name: c, image: busybox:1}]}\n",
    );
    roll_out(&s, "surge", sel);
    s.ok(&["set", "image", "deployment/surge", "c=busybox:2"]);
    // Without any new pod ready, maxUnavailable 0 and maxSurge 1 allow exactly 5 pods: four
    // old (all still available) and one new.
    assert!(
        eventually(WAIT, || {
            let sets = replica_sets(&s, sel);
            sets.len() == 2
                && sets
                    .iter()
                    .any(|r| image_of(r) == "busybox:2" && r["status"]["replicas"] == 1)
        }),
        "the new ReplicaSet did not surge by one"
    );
    let d = s.json(&["get", "deploy", "surge"]);
    assert!(
        eventually(WAIT, || s.json(&["get", "deploy", "surge"])["status"]
            ["observedGeneration"]
            == d["metadata"]["generation"]),
        "not observed"
    );
    assert_eq!(live(&s, "pods", sel).len(), 5, "surge beyond maxSurge");
    let old: i64 = replica_sets(&s, sel)
        .iter()
        .filter(|r| image_of(r) == "busybox:1")
        .map(|r| r["spec"]["replicas"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(old, 4, "old pods removed before new ones were available");
    roll_out(&s, "surge", sel);
    assert_eq!(live(&s, "pods", sel).len(), 4);
}

#[test]
fn recreate_and_progress_deadline() {
    let s = Server::start();
    s.settle();
    // Recreate: the old ReplicaSet goes to zero before the new one gets any pod.
    let sel = "app=rec";
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: rec}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: rec}}\n  strategy: {type: Recreate}\n  template:\n    metadata: {labels: {app: rec}}\n    spec: {containers: [{name: c, image: busybox:1}]}\n",
    );
    roll_out(&s, "rec", sel);
    s.ok(&["set", "image", "deployment/rec", "c=busybox:2"]);
    roll_out(&s, "rec", sel);
    let pods = live(&s, "pods", sel);
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| pod_image(p) == "busybox:2"));

    // A rollout that makes no progress within progressDeadlineSeconds is reported as failed.
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: stuck}\nspec:\n  replicas: 1\n  progressDeadlineSeconds: 2\n  selector: {matchLabels: {app: stuck}}\n  template:\n    metadata: {labels: {app: stuck}}\n    spec: {containers: [{name: c, image: busybox:1}]}\n",
    );
    assert!(
        eventually(WAIT, || {
            let d = s.json(&["get", "deploy", "stuck"]);
            d["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["type"] == "Progressing"
                        && c["status"] == "False"
                        && c["reason"] == "ProgressDeadlineExceeded"
                })
            })
        }),
        "no ProgressDeadlineExceeded: {}",
        s.ok(&["get", "deploy", "stuck", "-o", "yaml"])
    );
    let out = s.kubectl(&["rollout", "status", "deployment/stuck", "--timeout=10s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exceeded its progress deadline"), "{err}");
}
