//! NetworkPolicy sync time: 1,000 policies (`RAMPART_BENCH_NETPOL_POLICIES` overrides,
//! comma-separated) over 2,000 pods on this node in 50 namespaces, each policy selecting
//! two pods and allowing ingress from two other pods on TCP 80 and from an ipBlock with an
//! except on UDP 53, plus a default-deny egress with a DNS exception per namespace. In a
//! fresh network namespace: the pure ruleset computation, the cold sync over netlink, then
//! 20 times "change one policy and sync" (a partial sync through the engine's
//! `parts::Memo`, which recomputes only that policy) — p50/p99.
//!
//! Figures only (no pass/fail). Needs root; prints why and exits otherwise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use rampart::netpol::applier;
use rampart::netpol::parts::Memo;
use rampart::netpol::ruleset::{ruleset, NodeFacts};
use serde_json::json;

const NAMESPACES: usize = 50;
const PODS: usize = 2000;

fn pod_ip(i: usize) -> String {
    format!("10.42.{}.{}", i / 250, i % 250 + 1)
}

fn world(n: usize) -> (Vec<NetworkPolicy>, Vec<Pod>, Vec<Namespace>) {
    let nss = (0..NAMESPACES)
        .map(|k| {
            serde_json::from_value(json!({"metadata": {"name": format!("ns{k}")}})).expect("ns")
        })
        .collect();
    let pods = (0..PODS)
        .map(|i| {
            serde_json::from_value(json!({
                "metadata": {"namespace": format!("ns{}", i % NAMESPACES), "name": format!("p{i}"),
                             "labels": {"app": format!("a{}", i / 2)}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
                "status": {"phase": "Running", "podIP": pod_ip(i)}
            }))
            .expect("pod")
        })
        .collect();
    let mut pols: Vec<NetworkPolicy> = (0..n).map(|i| policy(i, 53)).collect();
    for k in 0..NAMESPACES {
        pols.push(
            serde_json::from_value(json!({
                "metadata": {"namespace": format!("ns{k}"), "name": "deny-egress"},
                "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                         "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}
            }))
            .expect("policy"),
        );
    }
    (pols, pods, nss)
}

/// Policy `i`; `udp_port` is the port of its ipBlock rule (what "change one policy" moves:
/// its pod peer selects pods of another namespace, so changing that rule's port would change
/// no element).
fn policy(i: usize, udp_port: u16) -> NetworkPolicy {
    let ns = format!("ns{}", (i * 2) % NAMESPACES);
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": format!("pol{i}")},
        "spec": {
            "podSelector": {"matchLabels": {"app": format!("a{}", i % (PODS / 2))}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": format!("a{}", (i + 1) % (PODS / 2))}}}],
                 "ports": [{"port": 80}]},
                {"from": [{"ipBlock": {"cidr": "192.168.0.0/16", "except": [format!("192.168.{}.0/24", i % 256)]}}],
                 "ports": [{"port": udp_port, "protocol": "UDP"}]}
            ]
        }
    }))
    .expect("policy")
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn run(n: usize) {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
    let (mut pols, pods, nss) = world(n);
    let facts = NodeFacts {
        node_name: "n1".into(),
    };
    let compute = |pols: &[NetworkPolicy]| {
        let p: Vec<&NetworkPolicy> = pols.iter().collect();
        let q: Vec<&Pod> = pods.iter().collect();
        let s: Vec<&Namespace> = nss.iter().collect();
        ruleset(&p, &q, &s, &facts)
    };
    let t = Instant::now();
    let desired = compute(&pols);
    let compute_cold = t.elapsed();
    // The engine's path: the memo, fed the same objects as `Arc`s (as the reflectors give
    // them); a changed policy is a new `Arc`, the rest are the same allocations.
    let mut apols: Vec<Arc<NetworkPolicy>> = pols.iter().cloned().map(Arc::new).collect();
    let apods: Vec<Arc<Pod>> = pods.iter().cloned().map(Arc::new).collect();
    let anss: Vec<Arc<Namespace>> = nss.iter().cloned().map(Arc::new).collect();
    let mut memo = Memo::new(facts.clone());
    let t = Instant::now();
    let memo_cold = memo.ruleset(&apols, &apods, &anss);
    let memo_cold_t = t.elapsed();
    assert!(
        memo_cold.sets == desired.sets,
        "memo and pure tables differ"
    );
    let elements: usize = desired.sets.values().map(|s| s.elements.len()).sum();
    let mut a = applier().expect("netlink");
    let t = Instant::now();
    let st = a.sync(&desired).expect("cold sync");
    let cold = t.elapsed();
    let mut one = Vec::new();
    let mut one_apply = Vec::new();
    let mut msgs = 0;
    let mut recomputed = 0;
    for k in 0..20 {
        pols[k] = policy(k, 8080 + k as u16);
        apols[k] = Arc::new(pols[k].clone());
        let t = Instant::now();
        let d = memo.ruleset(&apols, &apods, &anss);
        recomputed = memo.recomputed;
        let t2 = Instant::now();
        let st1 = a.sync(&d).expect("partial sync");
        one_apply.push(t2.elapsed());
        one.push(t.elapsed());
        msgs = st1.messages;
    }
    println!(
        "rampart {n:>6} policies, {PODS} pods: compute {} (memo cold {}), cold sync {} ({elements} elements, {} messages); \
         change one policy: total p50 {} p99 {} (netlink part p50 {} p99 {}, {msgs} messages, {recomputed} policy recomputed)",
        ms(compute_cold),
        ms(memo_cold_t),
        ms(cold),
        st.messages,
        ms(pct(&mut one.clone(), 0.5)),
        ms(pct(&mut one, 0.99)),
        ms(pct(&mut one_apply.clone(), 0.5)),
        ms(pct(&mut one_apply, 0.99)),
    );
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("netpol bench skipped: needs root (a network namespace and nftables)");
        return;
    }
    let sizes: Vec<usize> = std::env::var("RAMPART_BENCH_NETPOL_POLICIES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1000]);
    for n in sizes {
        std::thread::spawn(move || run(n))
            .join()
            .expect("netpol run");
    }
}
