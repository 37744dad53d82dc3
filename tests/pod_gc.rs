//! Pod garbage collection against a real server (`--terminated-pod-gc-threshold 2`, node
//! monitor grace period — and so pod GC's quarantine — 3 s), no kubelet: Node objects and
//! pod phases are written through the API where a kubelet would. Over the threshold the
//! oldest terminated pods go and the newest stay; a pod bound to a node that never existed
//! survives the quarantine, then is marked Failed (`DisruptionTarget`/`DeletionByPodGC`) and
//! force-deleted; an unscheduled pod held by a finalizer while being deleted is marked Failed.

mod harness;

use std::time::{Duration, Instant};

use harness::Server;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

async fn client(s: &Server) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(s.kubeconfig()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

macro_rules! wait_until {
    ($secs:expr, $cond:expr) => {{
        let deadline = tokio::time::Instant::now() + Duration::from_secs($secs);
        loop {
            if $cond {
                break true;
            }
            if tokio::time::Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

fn pod(name: &str, node: Option<&str>) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {
        "nodeName": node, "schedulerName": "nobody",
        "containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap()
}

async fn names(pods: &Api<Pod>) -> Vec<String> {
    let mut v: Vec<String> = pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_gc_collects_terminated_orphaned_and_unscheduled_terminating_pods() {
    let s = Server::start_with(&[
        "--node-monitor-grace-period",
        "3s",
        "--terminated-pod-gc-threshold",
        "2",
    ]);
    let c = client(&s).await;
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "gc-node"}})).unwrap();
    Api::<Node>::all(c.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
    let pp = PostParams::default();

    // Terminated pods: five finished in creation order (creationTimestamp has 1 s
    // resolution, so a second apart), one still running.
    let done: Api<Pod> = Api::namespaced(c.clone(), "default");
    done.create(&pp, &pod("running", Some("gc-node")))
        .await
        .unwrap();
    for i in 0..5 {
        let name = format!("done-{i}");
        done.create(&pp, &pod(&name, Some("gc-node")))
            .await
            .unwrap();
        let phase = if i % 2 == 0 { "Succeeded" } else { "Failed" };
        done.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"phase": phase}})),
        )
        .await
        .unwrap();
        if i < 4 {
            tokio::time::sleep(Duration::from_millis(1050)).await;
        }
    }
    let trimmed = wait_until!(20, names(&done).await == ["done-3", "done-4", "running"]);
    assert!(
        trimmed,
        "the three oldest terminated pods should go: {:?}",
        names(&done).await
    );

    // An orphan: bound to a node that never existed. A finalizer keeps the object after
    // pod GC's deletion so the status it wrote first can be read.
    s.ok(&["create", "namespace", "orphans"]);
    let orphans: Api<Pod> = Api::namespaced(c.clone(), "orphans");
    let created = Instant::now();
    let lost: Pod = serde_json::from_value(json!({"metadata": {"name": "lost",
        "finalizers": ["example.com/hold"]}, "spec": {"nodeName": "ghost",
        "containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap();
    orphans.create(&pp, &lost).await.unwrap();
    let collected = wait_until!(20, {
        orphans
            .get_opt("lost")
            .await
            .unwrap()
            .is_some_and(|p| p.metadata.deletion_timestamp.is_some())
    });
    assert!(collected, "the pod of a missing node was never collected");
    assert!(
        created.elapsed() >= Duration::from_secs(3),
        "collected before the 3 s quarantine ran out ({:?})",
        created.elapsed()
    );
    let st = orphans
        .get("lost")
        .await
        .unwrap()
        .status
        .unwrap_or_default();
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert!(
        st.conditions.unwrap_or_default().iter().any(|c| {
            c.type_ == "DisruptionTarget"
                && c.status == "True"
                && c.reason.as_deref() == Some("DeletionByPodGC")
                && c.message.as_deref() == Some("PodGC: node no longer exists")
        }),
        "no DisruptionTarget/DeletionByPodGC condition"
    );
    orphans
        .patch(
            "lost",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    let gone = wait_until!(10, orphans.get_opt("lost").await.unwrap().is_none());
    assert!(gone, "the orphan stayed after its finalizer went");

    // Unscheduled and terminating: a finalizer holds it; pod GC marks it Failed.
    let held: Pod = serde_json::from_value(json!({"metadata": {"name": "held",
        "finalizers": ["example.com/hold"]}, "spec": {"schedulerName": "nobody",
        "containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap();
    orphans.create(&pp, &held).await.unwrap();
    orphans
        .delete("held", &DeleteParams::default())
        .await
        .unwrap();
    let failed = wait_until!(20, {
        orphans.get_opt("held").await.unwrap().is_some_and(|p| {
            p.metadata.deletion_timestamp.is_some()
                && p.status.and_then(|s| s.phase).as_deref() == Some("Failed")
        })
    });
    assert!(
        failed,
        "the unscheduled terminating pod was not marked Failed: {:?}",
        orphans.get_opt("held").await.unwrap().map(|p| p.status)
    );
    orphans
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    let released = wait_until!(10, orphans.get_opt("held").await.unwrap().is_none());
    assert!(released, "the pod stayed after its finalizer went");
}
