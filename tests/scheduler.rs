//! The scheduler against a real server: Node objects created through the API (as admin, with
//! Leases the test renews, no kubelet), pods created with kube-rs, nodes changed with kubectl.
//! Scheduling honours taints/tolerations, nodeSelector, resource requests, anti-affinity and
//! topology spread; every failure is explained in a `FailedScheduling` event with upstream's
//! message shape and `PodScheduled=False`; a pod binds as soon as the cluster changes to allow
//! it; a high-priority pod preempts a low-priority one; Priority and DefaultTolerationSeconds
//! admission; leader election Leases.
//!
//! Negative assertions ("still unbound") wait for the FailedScheduling event of that attempt
//! (an event barrier), never a fixed sleep.

mod harness;

use std::time::Duration;

use harness::Server;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
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

fn now() -> String {
    let t = jiff::Timestamp::now();
    jiff::Timestamp::from_second(t.as_second())
        .unwrap()
        .to_string()
}

/// A Ready node with `cpu` cores, 8Gi and 110 pods, its labels and taints.
async fn node(c: &kube::Client, name: &str, labels: Value, taints: Value, cpu: &str) {
    let nodes: Api<Node> = Api::all(c.clone());
    let mut l = json!({"kubernetes.io/hostname": name});
    if let (Some(l), Some(extra)) = (l.as_object_mut(), labels.as_object()) {
        l.extend(extra.clone());
    }
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": l},
        "spec": {"taints": taints},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    let res = json!({"cpu": cpu, "memory": "8Gi", "pods": "110"});
    let status = json!({"status": {
        "capacity": res, "allocatable": res,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "test node", "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                 "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()},
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    // Keep the node alive for the node lifecycle controller, as its kubelet would.
    let name = name.to_string();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let renew = json!({"spec": {"renewTime":
                jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()}});
            let _ = leases
                .patch(&name, &PatchParams::default(), &Patch::Merge(&renew))
                .await;
        }
    });
}

fn pod(name: &str, spec_extra: Value, labels: Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}],
                          "terminationGracePeriodSeconds": 30});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        s.extend(extra.clone());
    }
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": spec}))
        .unwrap()
}

fn requests(cpu: &str) -> Value {
    json!([{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}])
}

/// Poll `$cond` (an expression that may `.await`) every 100 ms for up to `$secs` seconds.
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

async fn node_of(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.get(name)
        .await
        .ok()
        .and_then(|p| p.spec.and_then(|s| s.node_name))
}

async fn bound(pods: &Api<Pod>, name: &str) -> String {
    let ok = wait_until!(20, node_of(pods, name).await.is_some());
    assert!(ok, "pod {name} was not bound");
    node_of(pods, name).await.unwrap_or_default()
}

async fn failed_messages(c: &kube::Client, ns: &str, pod: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(c.clone(), ns);
    let lp = ListParams::default().fields(&format!(
        "involvedObject.name={pod},reason=FailedScheduling"
    ));
    events
        .list(&lp)
        .await
        .map(|l| l.items.into_iter().filter_map(|e| e.message).collect())
        .unwrap_or_default()
}

/// Wait for a FailedScheduling event of `pod` containing `want` (the barrier), then check the
/// pod is still unbound and says why in PodScheduled=False.
async fn unschedulable(c: &kube::Client, ns: &str, pod: &str, want: &str) -> String {
    let mut msg = String::new();
    let seen = wait_until!(20, {
        match failed_messages(c, ns, pod)
            .await
            .into_iter()
            .find(|m| m.contains(want))
        {
            Some(m) => {
                msg = m;
                true
            }
            None => false,
        }
    });
    assert!(
        seen,
        "no FailedScheduling event with {want:?} for {pod}; got {:?}",
        failed_messages(c, ns, pod).await
    );
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    assert_eq!(node_of(&pods, pod).await, None, "{pod} bound after all");
    let cond_ok = wait_until!(10, {
        let p = pods.get(pod).await.unwrap();
        p.status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
    });
    assert!(cond_ok, "{pod} has no PodScheduled=False/Unschedulable");
    msg
}

async fn namespace(s: &Server, name: &str) {
    s.ok(&["create", "namespace", name]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_explain_failures_and_bind_when_the_cluster_changes() {
    let s = Server::start();
    let c = client(&s).await;
    node(
        &c,
        "n1",
        json!({"zone": "a"}),
        json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]),
        "2",
    )
    .await;
    node(&c, "n2", json!({"zone": "a"}), json!([]), "2").await;
    node(&c, "n3", json!({"zone": "b"}), json!([]), "2").await;
    namespace(&s, "t").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "t");
    let pp = PostParams::default();

    // Too big for any node, and n1 is tainted: upstream's exact message.
    pods.create(
        &pp,
        &pod("big", json!({"containers": requests("3")}), json!({})),
    )
    .await
    .unwrap();
    let msg = unschedulable(&c, "t", "big", "0/3 nodes are available").await;
    assert_eq!(
        msg,
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: x}, 2 Insufficient cpu. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    // kubectl describe shows it.
    let described = s.ok(&["describe", "pod", "big", "-n", "t"]);
    assert!(described.contains("FailedScheduling"), "{described}");

    // nodeSelector: nothing matches until a node is labelled.
    pods.create(
        &pp,
        &pod("sel", json!({"nodeSelector": {"disk": "ssd"}}), json!({})),
    )
    .await
    .unwrap();
    unschedulable(
        &c,
        "t",
        "sel",
        "1 node(s) had untolerated taint {dedicated: x}, 2 node(s) didn't match Pod's node affinity/selector.",
    )
    .await;
    s.ok(&["label", "node", "n2", "disk=ssd"]);
    assert_eq!(bound(&pods, "sel").await, "n2");

    // Taints: a toleration lets a pod onto n1; without it, only removing the taint does.
    let to_n1 = json!({"kubernetes.io/hostname": "n1"});
    pods.create(
        &pp,
        &pod(
            "tol",
            json!({"nodeSelector": to_n1, "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "x", "effect": "NoSchedule"}]}),
            json!({}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(bound(&pods, "tol").await, "n1");
    pods.create(
        &pp,
        &pod("notol", json!({"nodeSelector": to_n1}), json!({})),
    )
    .await
    .unwrap();
    unschedulable(
        &c,
        "t",
        "notol",
        "1 node(s) had untolerated taint {dedicated: x}",
    )
    .await;
    s.ok(&["taint", "node", "n1", "dedicated=x:NoSchedule-"]);
    assert_eq!(bound(&pods, "notol").await, "n1");

    // Resource requests count bound pods: two 1500m pods never share a 2-core node.
    pods.create(
        &pp,
        &pod("r1", json!({"containers": requests("1500m")}), json!({})),
    )
    .await
    .unwrap();
    let r1 = bound(&pods, "r1").await;
    pods.create(
        &pp,
        &pod("r2", json!({"containers": requests("1500m")}), json!({})),
    )
    .await
    .unwrap();
    let r2 = bound(&pods, "r2").await;
    assert_ne!(r1, r2);
    pods.create(
        &pp,
        &pod("r3", json!({"containers": requests("1500m")}), json!({})),
    )
    .await
    .unwrap();
    let r3 = bound(&pods, "r3").await;
    assert!(r3 != r1 && r3 != r2);
    pods.create(
        &pp,
        &pod("r4", json!({"containers": requests("1500m")}), json!({})),
    )
    .await
    .unwrap();
    unschedulable(&c, "t", "r4", "3 Insufficient cpu.").await;
    // Deleting a bound pod (as its kubelet finishes) makes room.
    pods.delete(
        "r1",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(bound(&pods, "r4").await, r1);

    // Required anti-affinity on hostname: one per node, the fourth waits.
    let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    let mut web_nodes = Vec::new();
    for i in 0..3 {
        let name = format!("web{i}");
        pods.create(&pp, &pod(&name, anti.clone(), json!({"app": "web"})))
            .await
            .unwrap();
        web_nodes.push(bound(&pods, &name).await);
    }
    web_nodes.sort();
    assert_eq!(web_nodes, ["n1", "n2", "n3"]);
    pods.create(&pp, &pod("web3", anti.clone(), json!({"app": "web"})))
        .await
        .unwrap();
    unschedulable(
        &c,
        "t",
        "web3",
        "3 node(s) didn't match pod anti-affinity rules.",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_spread_and_owner_spreading() {
    let s = Server::start();
    let c = client(&s).await;
    node(
        &c,
        "a1",
        json!({"topology.kubernetes.io/zone": "a"}),
        json!([]),
        "4",
    )
    .await;
    node(
        &c,
        "a2",
        json!({"topology.kubernetes.io/zone": "a"}),
        json!([]),
        "4",
    )
    .await;
    node(
        &c,
        "b1",
        json!({"topology.kubernetes.io/zone": "b"}),
        json!([]),
        "4",
    )
    .await;
    namespace(&s, "t").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "t");
    let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "s"}}}]});
    // Pods for another scheduler are left alone: created first, so the default scheduler
    // (oldest first) would have bound it before `s0` below.
    pods.create(
        &PostParams::default(),
        &pod(
            "foreign",
            json!({"schedulerName": "someone-else"}),
            json!({}),
        ),
    )
    .await
    .unwrap();
    let mut zones = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..6 {
        let name = format!("s{i}");
        pods.create(
            &PostParams::default(),
            &pod(&name, spread.clone(), json!({"app": "s"})),
        )
        .await
        .unwrap();
        let n = bound(&pods, &name).await;
        let zone = if n.starts_with('a') { "a" } else { "b" };
        *zones.entry(zone.into()).or_default() += 1;
        // Never more than one apart at any point.
        let (za, zb) = (
            zones.get("a").copied().unwrap_or(0),
            zones.get("b").copied().unwrap_or(0),
        );
        assert!(za.abs_diff(zb) <= 1, "{zones:?}");
    }
    assert_eq!(node_of(&pods, "foreign").await, None);
    assert_eq!(zones.get("a"), Some(&3));
    assert_eq!(zones.get("b"), Some(&3));
    // A node-label constraint nobody can meet: the missing label is named.
    pods.create(
        &PostParams::default(),
        &pod(
            "nolabel",
            json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "rack",
                "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "x"}}}]}),
            json!({"app": "x"}),
        ),
    )
    .await
    .unwrap();
    unschedulable(
        &c,
        "t",
        "nolabel",
        "3 node(s) didn't match pod topology spread constraints (missing required label).",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_admission_and_preemption() {
    let s = Server::start();
    let c = client(&s).await;
    // The system classes exist from the start.
    let pcs = s.ok(&["get", "priorityclasses", "-o", "name"]);
    assert!(
        pcs.contains("system-node-critical") && pcs.contains("system-cluster-critical"),
        "{pcs}"
    );
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: low}\nvalue: 10\n---\n\
         apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000\n",
    );
    node(&c, "only", json!({}), json!([]), "1").await;
    namespace(&s, "t").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "t");
    let pp = PostParams::default();

    // Unknown class: upstream's 403, nothing stored.
    match pods
        .create(
            &pp,
            &pod("ghost", json!({"priorityClassName": "nope"}), json!({})),
        )
        .await
    {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 403);
            assert!(
                e.message
                    .contains("no PriorityClass with name nope was found"),
                "{}",
                e.message
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }
    assert!(pods.get_opt("ghost").await.unwrap().is_none());

    pods.create(
        &pp,
        &pod(
            "low",
            json!({"priorityClassName": "low", "containers": requests("800m")}),
            json!({}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(bound(&pods, "low").await, "only");
    let low = pods.get("low").await.unwrap();
    let spec = low.spec.unwrap();
    assert_eq!(spec.priority, Some(10));
    assert_eq!(
        spec.preemption_policy.as_deref(),
        Some("PreemptLowerPriority")
    );
    // DefaultTolerationSeconds added the 300 s not-ready/unreachable tolerations.
    let tols = spec.tolerations.unwrap_or_default();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        assert!(
            tols.iter()
                .any(|t| t.key.as_deref() == Some(key) && t.toleration_seconds == Some(300)),
            "{tols:?}"
        );
    }

    // A pod of the same priority does not preempt: it waits, and says so.
    pods.create(
        &pp,
        &pod(
            "peer",
            json!({"priorityClassName": "low", "containers": requests("800m")}),
            json!({}),
        ),
    )
    .await
    .unwrap();
    unschedulable(
        &c,
        "t",
        "peer",
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
    )
    .await;

    // The high-priority pod preempts `low`: graceful deletion, nominatedNodeName set.
    pods.create(
        &pp,
        &pod(
            "high",
            json!({"priorityClassName": "high", "containers": requests("800m")}),
            json!({}),
        ),
    )
    .await
    .unwrap();
    let deleting = wait_until!(20, {
        pods.get("low")
            .await
            .is_ok_and(|p| p.metadata.deletion_timestamp.is_some())
    });
    assert!(deleting, "the low-priority pod was not preempted");
    let nominated = wait_until!(20, {
        pods.get("high")
            .await
            .is_ok_and(|p| p.status.and_then(|s| s.nominated_node_name).as_deref() == Some("only"))
    });
    assert!(nominated, "the preemptor has no nominatedNodeName");
    let events: Api<Event> = Api::namespaced(c.clone(), "t");
    let preempted = events
        .list(&ListParams::default().fields("involvedObject.name=low,reason=Preempted"))
        .await
        .unwrap();
    assert!(
        !preempted.items.is_empty(),
        "no Preempted event on the victim"
    );
    // The victim's kubelet finishes the deletion; the preemptor (not the equal-priority
    // `peer`, which waits behind the nomination) takes the room.
    pods.delete(
        "low",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(bound(&pods, "high").await, "only");
    assert_eq!(node_of(&pods, "peer").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_leases() {
    let s = Server::start_with(&["--leader-elect=true"]);
    let c = client(&s).await;
    // The identity is written once the in-process components start, which can trail the
    // API server's readiness that start_with waits for.
    let path = s.data_dir().join("leader-identity");
    assert!(
        wait_until!(20, path.is_file()),
        "no leader identity written"
    );
    let id = std::fs::read_to_string(&path).unwrap();
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-system");
    for name in ["kube-scheduler", "kube-controller-manager"] {
        let held = wait_until!(20, {
            leases.get_opt(name).await.ok().flatten().is_some_and(|l| {
                l.spec.and_then(|s| s.holder_identity).as_deref() == Some(id.trim())
            })
        });
        assert!(held, "lease {name} not held by {id}");
    }
    let renew = |l: Lease| l.spec.and_then(|s| s.renew_time).map(|t| t.0);
    let first = renew(leases.get("kube-scheduler").await.unwrap());
    let moved = wait_until!(10, {
        renew(leases.get("kube-scheduler").await.unwrap()) > first
    });
    assert!(moved, "the scheduler lease is not renewed");
    // Another candidate cannot take a lease that is being renewed.
    let mut other = rampart::client::leader::Elector::new(
        rampart::client::leader::Config::new("kube-system", "kube-scheduler", "intruder"),
        c.clone(),
    );
    assert!(!other.try_acquire_or_renew().await.unwrap());
    // The scheduler works while elected.
    node(&c, "n1", json!({}), json!([]), "2").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    pods.create(&PostParams::default(), &pod("p", json!({}), json!({})))
        .await
        .unwrap();
    assert_eq!(bound(&pods, "p").await, "n1");
    let still = leases.get("kube-scheduler").await.unwrap();
    assert_eq!(
        still.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(id.trim())
    );
}
