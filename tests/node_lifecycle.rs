//! Node lifecycle and node IPAM against a real server (grace period shortened to 3 s): Node
//! objects made through the API with Leases the test renews, no kubelet. A node whose lease
//! stops gets Ready=Unknown and the unreachable NoSchedule/NoExecute taints, and its pods are
//! evicted after their tolerationSeconds (while a pod tolerating 300 s stays); renewing again
//! heals the node; pods of a deleted node are removed (by pod GC); pressure conditions and a
//! cordon become NoSchedule taints; every node gets a distinct podCIDR,
//! kept and never duplicated across a server restart.

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harness::Server;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{json, Value};

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

fn micro_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

fn now() -> String {
    let t = jiff::Timestamp::now();
    jiff::Timestamp::from_second(t.as_second())
        .unwrap()
        .to_string()
}

async fn ready(c: &kube::Client, name: &str) {
    let status = json!({"status": {
        "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
        "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test",
                        "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
    }});
    Api::<Node>::all(c.clone())
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// A Ready node whose Lease the returned flag keeps renewing (every 500 ms) while true.
async fn live_node(c: &kube::Client, name: &str) -> Arc<AtomicBool> {
    let n: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Node>::all(c.clone())
        .create(&PostParams::default(), &n)
        .await
        .unwrap();
    ready(c, name).await;
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro_now()}}))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let alive = Arc::new(AtomicBool::new(true));
    let flag = alive.clone();
    let name = name.to_string();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if flag.load(Ordering::Relaxed) {
                let renew = json!({"spec": {"renewTime": micro_now()}});
                let _ = leases
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&renew))
                    .await;
            }
        }
    });
    alive
}

fn bound_pod(name: &str, node: &str, tolerations: Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {
        "nodeName": node, "terminationGracePeriodSeconds": 1, "tolerations": tolerations,
        "containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap()
}

async fn get_node(c: &kube::Client, name: &str) -> Node {
    Api::<Node>::all(c.clone()).get(name).await.unwrap()
}

fn ready_status(n: &Node) -> Option<String> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

fn taint_keys(n: &Node) -> Vec<String> {
    let mut k: Vec<String> = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .iter()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_goes_unknown_tainted_and_its_pods_are_evicted() {
    let s = Server::start_with(&["--node-monitor-grace-period", "3s"]);
    let c = client(&s).await;
    let quiet = live_node(&c, "quiet").await;
    let _steady = live_node(&c, "steady").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let pp = PostParams::default();
    let short = json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                        "effect": "NoExecute", "tolerationSeconds": 2}]);
    pods.create(&pp, &bound_pod("short", "quiet", short))
        .await
        .unwrap();
    // Gets admission's default 300 s tolerations.
    pods.create(&pp, &bound_pod("patient", "quiet", json!([])))
        .await
        .unwrap();
    pods.create(&pp, &bound_pod("elsewhere", "steady", json!([])))
        .await
        .unwrap();

    quiet.store(false, Ordering::Relaxed);
    let unknown = wait_until!(15, {
        let n = get_node(&c, "quiet").await;
        ready_status(&n).as_deref() == Some("Unknown")
            && taint_keys(&n)
                == [
                    "node.kubernetes.io/unreachable:NoExecute",
                    "node.kubernetes.io/unreachable:NoSchedule",
                ]
    });
    assert!(unknown, "quiet: {:?}", get_node(&c, "quiet").await.status);
    let reason = get_node(&c, "quiet")
        .await
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.message);
    assert_eq!(
        reason.as_deref(),
        Some("Kubelet stopped posting node status.")
    );

    // The 2 s toleration runs out: evicted (graceful deletion, a kubelet would finish it).
    let evicted = wait_until!(15, {
        pods.get("short")
            .await
            .is_ok_and(|p| p.metadata.deletion_timestamp.is_some())
    });
    assert!(evicted, "the pod tolerating 2 s was not evicted");
    // Barrier passed (the node went Unknown, the 2 s pod went): the 300 s pod and the pod on
    // the live node stay, and the live node is untainted.
    for p in ["patient", "elsewhere"] {
        let pod = pods.get(p).await.unwrap();
        assert!(pod.metadata.deletion_timestamp.is_none(), "{p} was evicted");
    }
    assert!(taint_keys(&get_node(&c, "steady").await).is_empty());

    // The kubelet comes back: lease renewed and Ready reported, taints go.
    quiet.store(true, Ordering::Relaxed);
    ready(&c, "quiet").await;
    let healed = wait_until!(15, {
        let n = get_node(&c, "quiet").await;
        ready_status(&n).as_deref() == Some("True") && taint_keys(&n).is_empty()
    });
    assert!(
        healed,
        "quiet: {:?}",
        taint_keys(&get_node(&c, "quiet").await)
    );

    // A deleted node's pods are removed.
    s.ok(&["delete", "node", "steady"]);
    let gone = wait_until!(15, pods.get_opt("elsewhere").await.unwrap().is_none());
    assert!(gone, "the pod of a deleted node is still there");
}

fn pod_cidr(n: &Node) -> Option<String> {
    n.spec.as_ref().and_then(|s| s.pod_cidr.clone())
}

async fn cidr_of(c: &kube::Client, name: &str) -> String {
    let ok = wait_until!(15, pod_cidr(&get_node(c, name).await).is_some());
    assert!(ok, "{name} got no podCIDR");
    let cidr = pod_cidr(&get_node(c, name).await).unwrap_or_default();
    let node = get_node(c, name).await;
    assert_eq!(
        node.spec.and_then(|s| s.pod_cidrs),
        Some(vec![cidr.clone()]),
        "podCIDRs of {name}"
    );
    cidr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_gets_a_distinct_pod_cidr_across_restarts() {
    let mut s = Server::start();
    let c = client(&s).await;
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..4 {
        let name = format!("n{i}");
        live_node(&c, &name).await;
        let cidr = cidr_of(&c, &name).await;
        assert!(
            cidr.starts_with("10.42.") && cidr.ends_with(".0/24"),
            "{cidr}"
        );
        seen.insert(name, cidr);
    }
    let distinct: std::collections::BTreeSet<_> = seen.values().collect();
    assert_eq!(distinct.len(), 4, "{seen:?}");

    s.stop();
    s.boot();
    let c = client(&s).await;
    for (name, cidr) in &seen {
        assert_eq!(&cidr_of(&c, name).await, cidr, "{name} changed its CIDR");
    }
    for i in 4..7 {
        let name = format!("n{i}");
        live_node(&c, &name).await;
        let cidr = cidr_of(&c, &name).await;
        assert!(
            !seen.values().any(|v| *v == cidr),
            "{cidr} handed out twice"
        );
        seen.insert(name, cidr);
    }
}

#[test]
fn a_bad_cluster_cidr_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = harness::rampart(&[
        "server",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--https-port",
        "0",
        "--cluster-cidr",
        "10.42.0.0/33",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("rampart: ") && last.contains("--cluster-cidr"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// TaintNodesByCondition: the kubelet reports pressure (it may not taint its own node); the
/// controller adds the NoSchedule taint, a cordon adds `unschedulable`, and relief removes
/// them while a user's own taint stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pressure_conditions_and_cordon_taint_the_node() {
    let s = Server::start_with(&["--node-monitor-grace-period", "3s"]);
    let c = client(&s).await;
    let _alive = live_node(&c, "pressed").await;
    let nodes: Api<Node> = Api::all(c.clone());
    nodes
        .patch(
            "pressed",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"taints": [
                {"key": "example.com/mine", "value": "x", "effect": "NoSchedule"}]}})),
        )
        .await
        .unwrap();
    let report = |memory: &str, disk: &str, pid: &str| {
        json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test",
             "lastHeartbeatTime": now(), "lastTransitionTime": now()},
            {"type": "MemoryPressure", "status": memory, "reason": "test", "message": "test",
             "lastHeartbeatTime": now(), "lastTransitionTime": now()},
            {"type": "DiskPressure", "status": disk, "reason": "test", "message": "test",
             "lastHeartbeatTime": now(), "lastTransitionTime": now()},
            {"type": "PIDPressure", "status": pid, "reason": "test", "message": "test",
             "lastHeartbeatTime": now(), "lastTransitionTime": now()}]}})
    };
    nodes
        .patch_status(
            "pressed",
            &PatchParams::default(),
            &Patch::Merge(&report("True", "True", "False")),
        )
        .await
        .unwrap();
    let tainted = wait_until!(15, {
        taint_keys(&get_node(&c, "pressed").await)
            == [
                "example.com/mine:NoSchedule",
                "node.kubernetes.io/disk-pressure:NoSchedule",
                "node.kubernetes.io/memory-pressure:NoSchedule",
            ]
    });
    assert!(
        tainted,
        "pressure taints: {:?}",
        taint_keys(&get_node(&c, "pressed").await)
    );
    s.ok(&["cordon", "pressed"]);
    nodes
        .patch_status(
            "pressed",
            &PatchParams::default(),
            &Patch::Merge(&report("False", "False", "True")),
        )
        .await
        .unwrap();
    let moved = wait_until!(15, {
        taint_keys(&get_node(&c, "pressed").await)
            == [
                "example.com/mine:NoSchedule",
                "node.kubernetes.io/pid-pressure:NoSchedule",
                "node.kubernetes.io/unschedulable:NoSchedule",
            ]
    });
    assert!(
        moved,
        "after relief and cordon: {:?}",
        taint_keys(&get_node(&c, "pressed").await)
    );
    s.ok(&["uncordon", "pressed"]);
    nodes
        .patch_status(
            "pressed",
            &PatchParams::default(),
            &Patch::Merge(&report("False", "False", "False")),
        )
        .await
        .unwrap();
    let clean = wait_until!(15, {
        taint_keys(&get_node(&c, "pressed").await) == ["example.com/mine:NoSchedule"]
    });
    assert!(
        clean,
        "after uncordon: {:?}",
        taint_keys(&get_node(&c, "pressed").await)
    );
}
