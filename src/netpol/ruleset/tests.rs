//! The policy semantics, checked on the computed sets with a small evaluator that does
//! what the kernel's lookup does (a key matches a range element when every field lies
//! between the element's first and last key).
use super::*;
use serde_json::json;

fn facts() -> NodeFacts {
    NodeFacts {
        node_name: "n1".into(),
    }
}

fn pod(ns: &str, name: &str, ip: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [
            {"name": "serve-80", "containerPort": 80},
            {"name": "serve-81-udp", "containerPort": 81, "protocol": "UDP"}
        ]}]},
        "status": {"phase": "Running", "podIP": ip}
    }))
    .unwrap()
}

fn ns(name: &str, labels: serde_json::Value) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
}

fn pol(ns: &str, spec: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": "p"}, "spec": spec}))
        .unwrap()
}

struct World {
    pods: Vec<Pod>,
    nss: Vec<Namespace>,
}

fn world() -> World {
    World {
        pods: vec![
            pod("x", "a", "10.42.0.1", json!({"pod": "a"})),
            pod("x", "b", "10.42.0.2", json!({"pod": "b"})),
            pod("y", "a", "10.42.0.3", json!({"pod": "a"})),
            pod("y", "b", "10.42.0.4", json!({"pod": "b"})),
        ],
        nss: vec![ns("x", json!({"ns": "x"})), ns("y", json!({"ns": "y"}))],
    }
}

impl World {
    fn rs(&self, pols: &[NetworkPolicy]) -> Ruleset {
        let p: Vec<&NetworkPolicy> = pols.iter().collect();
        let q: Vec<&Pod> = self.pods.iter().collect();
        let n: Vec<&Namespace> = self.nss.iter().collect();
        ruleset(&p, &q, &n, &facts())
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn covered(r: &Ruleset, set: &str, k: &[u8]) -> bool {
    let fields = [(0, 4), (4, 4), (8, 1), (12, 2)];
    r.sets[set].elements.keys().any(|e| {
        let (lo, hi) = e.split_at(ALLOW_KEY_LEN);
        fields
            .iter()
            .all(|(o, l)| lo[*o..o + l] <= k[*o..o + l] && k[*o..o + l] <= hi[*o..o + l])
    })
}

/// Would a new connection from `src` to `dst:port` pass (both directions' checks)?
fn allowed(r: &Ruleset, src: &str, dst: &str, proto: u8, port: u16) -> bool {
    let (s, d) = (ip(src), ip(dst));
    let isolated = |set: &str, a: Ipv4Addr| r.sets[set].elements.contains_key(&a.octets()[..]);
    let out = !isolated(EGRESS_ISOLATED, s)
        || covered(r, EGRESS_ALLOW, &key(s, u32::from(d), proto, port));
    let inn = !isolated(INGRESS_ISOLATED, d)
        || covered(r, INGRESS_ALLOW, &key(d, u32::from(s), proto, port));
    out && inn
}

const TCP: u8 = ip4::TCP;
const UDP: u8 = ip4::UDP;

#[test]
fn no_policy_allows_everything_and_isolates_nobody() {
    let r = World::rs(&world(), &[]);
    assert!(r.sets[INGRESS_ISOLATED].elements.is_empty());
    assert!(allowed(&r, "10.42.0.1", "10.42.0.4", TCP, 80));
    assert!(r.chains["forward"].hook.is_some());
}

#[test]
fn default_deny_ingress_isolates_only_the_selected_pods() {
    let w = world();
    let r = w.rs(&[pol("x", json!({"podSelector": {}}))]);
    assert!(!allowed(&r, "10.42.0.3", "10.42.0.1", TCP, 80));
    assert!(!allowed(&r, "10.42.0.2", "10.42.0.1", UDP, 53));
    // Pods of y are not selected; egress is not isolated by an ingress-only policy.
    assert!(allowed(&r, "10.42.0.1", "10.42.0.3", TCP, 80));
}

#[test]
fn policy_types_default_adds_egress_only_with_egress_rules() {
    let w = world();
    let r = w.rs(&[pol(
        "x",
        json!({"podSelector": {}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}),
    )]);
    assert!(
        !allowed(&r, "10.42.0.3", "10.42.0.1", TCP, 80),
        "ingress default"
    );
    assert!(allowed(&r, "10.42.0.1", "10.42.0.3", UDP, 53));
    assert!(!allowed(&r, "10.42.0.1", "10.42.0.3", TCP, 80));
    let r = w.rs(&[pol(
        "x",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    )]);
    assert!(allowed(&r, "10.42.0.3", "10.42.0.1", TCP, 80));
    assert!(!allowed(&r, "10.42.0.1", "10.42.0.3", TCP, 80));
}

#[test]
fn peers_pod_namespace_and_both() {
    let w = world();
    let from = |peer: serde_json::Value| {
        w.rs(&[pol(
            "x",
            json!({"podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [peer]}]}),
        )])
    };
    let r = from(json!({"podSelector": {"matchLabels": {"pod": "b"}}}));
    assert!(allowed(&r, "10.42.0.2", "10.42.0.1", TCP, 80));
    assert!(
        !allowed(&r, "10.42.0.4", "10.42.0.1", TCP, 80),
        "y/b: other namespace"
    );
    let r = from(json!({"namespaceSelector": {"matchLabels": {"ns": "y"}}}));
    assert!(allowed(&r, "10.42.0.3", "10.42.0.1", TCP, 80));
    assert!(allowed(&r, "10.42.0.4", "10.42.0.1", TCP, 80));
    assert!(!allowed(&r, "10.42.0.2", "10.42.0.1", TCP, 80));
    let r = from(
        json!({"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["y"]}]},
                        "podSelector": {"matchLabels": {"pod": "b"}}}),
    );
    assert!(allowed(&r, "10.42.0.4", "10.42.0.1", TCP, 80));
    assert!(!allowed(&r, "10.42.0.3", "10.42.0.1", TCP, 80));
    assert!(!allowed(&r, "10.42.0.2", "10.42.0.1", TCP, 80));
    // x/b is not selected by the policy: open.
    assert!(allowed(&r, "10.42.0.3", "10.42.0.2", TCP, 80));
}

#[test]
fn ip_block_with_except_and_ports() {
    let w = world();
    let r = w.rs(&[pol(
        "x",
        json!({"podSelector": {}, "ingress": [{
        "from": [{"ipBlock": {"cidr": "10.42.0.0/24", "except": ["10.42.0.2/31"]}}],
        "ports": [{"port": 80}, {"port": 1000, "endPort": 1010, "protocol": "UDP"}]}]}),
    )]);
    assert!(allowed(&r, "10.42.0.4", "10.42.0.1", TCP, 80));
    assert!(!allowed(&r, "10.42.0.4", "10.42.0.1", TCP, 81));
    assert!(
        !allowed(&r, "10.42.0.3", "10.42.0.1", TCP, 80),
        ".2/31 excepted"
    );
    assert!(!allowed(&r, "10.42.0.2", "10.42.0.1", TCP, 80));
    assert!(allowed(&r, "10.42.0.4", "10.42.0.1", UDP, 1005));
    assert!(!allowed(&r, "10.42.0.4", "10.42.0.1", UDP, 1011));
    assert!(!allowed(&r, "10.42.0.4", "10.42.0.1", TCP, 1005));
    assert!(!allowed(&r, "10.42.1.4", "10.42.0.1", TCP, 80));
}

#[test]
fn named_ports_resolve_on_the_selected_pod_for_ingress_and_on_the_peer_for_egress() {
    let mut w = world();
    w.pods.push(serde_json::from_value(json!({
        "metadata": {"namespace": "y", "name": "c", "labels": {"pod": "c"}},
        "spec": {"nodeName": "n2", "containers": [{"name": "c", "ports": [{"name": "serve-80", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": "10.42.1.9"}
    })).unwrap());
    let r = w.rs(&[pol(
        "x",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"ports": [{"port": "serve-80"}, {"port": "serve-81-udp", "protocol": "UDP"}]}],
        "egress": [{"ports": [{"port": "serve-80"}]}]}),
    )]);
    assert!(allowed(&r, "10.42.0.3", "10.42.0.1", TCP, 80));
    assert!(allowed(&r, "10.42.0.3", "10.42.0.1", UDP, 81));
    assert!(!allowed(&r, "10.42.0.3", "10.42.0.1", UDP, 80));
    assert!(
        allowed(&r, "10.42.0.1", "10.42.1.9", TCP, 8080),
        "c's serve-80"
    );
    assert!(!allowed(&r, "10.42.0.1", "10.42.1.9", TCP, 80));
    assert!(allowed(&r, "10.42.0.1", "10.42.0.3", TCP, 80));
    assert!(
        !allowed(&r, "10.42.0.1", "192.168.1.1", TCP, 80),
        "no names outside pods"
    );
    // Only local pods are isolated: c runs on n2.
    assert!(!r.sets[INGRESS_ISOLATED]
        .elements
        .contains_key(&[10, 42, 1, 9][..]));
}

#[test]
fn overlapping_rules_become_disjoint_ranges_with_the_union_of_ports() {
    let w = world();
    let r = w.rs(&[
        pol("x", json!({"podSelector": {}, "ingress": [
            {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 80}]},
            {"from": [{"namespaceSelector": {}}], "ports": [{"port": 81}, {"port": 80, "protocol": "UDP"}]},
            {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]})),
        pol("x", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
            {"from": [{"ipBlock": {"cidr": "10.42.0.0/30"}}], "ports": [{"port": 82}]}]})),
    ]);
    // No two elements of one pod overlap (the kernel would refuse them).
    let elems: Vec<&Vec<u8>> = r.sets[INGRESS_ALLOW].elements.keys().collect();
    for (i, a) in elems.iter().enumerate() {
        for b in &elems[i + 1..] {
            let (alo, ahi) = a.split_at(ALLOW_KEY_LEN);
            let (blo, bhi) = b.split_at(ALLOW_KEY_LEN);
            let fields = [(0, 4), (4, 4), (8, 1), (12, 2)];
            let overlap = fields
                .iter()
                .all(|(o, l)| alo[*o..o + l] <= bhi[*o..o + l] && blo[*o..o + l] <= ahi[*o..o + l]);
            assert!(!overlap, "{a:?} overlaps {b:?}");
        }
    }
    assert!(allowed(&r, "10.42.0.3", "10.42.0.1", TCP, 80));
    assert!(allowed(&r, "10.42.0.3", "10.42.0.1", TCP, 81));
    assert!(allowed(&r, "10.42.0.3", "10.42.0.1", TCP, 82));
    assert!(!allowed(&r, "10.42.0.3", "10.42.0.2", TCP, 82));
    assert!(
        allowed(&r, "10.42.0.2", "10.42.0.1", TCP, 9999),
        "x/b: all ports"
    );
    assert!(
        allowed(&r, "10.42.0.2", "10.42.0.1", 1, 0),
        "x/b: all protocols"
    );
    assert!(!allowed(&r, "10.1.0.2", "10.42.0.1", TCP, 81));
    assert!(allowed(&r, "10.1.0.2", "10.42.0.1", TCP, 80));
    assert!(!allowed(&r, "172.16.0.1", "10.42.0.1", TCP, 80));
}

#[test]
fn host_network_and_finished_pods_are_ignored() {
    let mut w = world();
    w.pods.push(
        serde_json::from_value(json!({
            "metadata": {"namespace": "x", "name": "h", "labels": {"pod": "a"}},
            "spec": {"nodeName": "n1", "hostNetwork": true, "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIP": "192.168.5.1"}
        }))
        .unwrap(),
    );
    let r = w.rs(&[pol("x", json!({"podSelector": {}}))]);
    assert!(!r.sets[INGRESS_ISOLATED]
        .elements
        .contains_key(&[192, 168, 5, 1][..]));
    assert_eq!(r.sets[INGRESS_ISOLATED].elements.len(), 2);
}
