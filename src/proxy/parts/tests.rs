use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::Memo;
use crate::netfilter::diff::{diff, Applied, Op};
use crate::proxy::ruleset::{ruleset, NodeFacts, Ruleset};

fn facts() -> NodeFacts {
    NodeFacts {
        node_name: "n1".into(),
        node_ips: vec![[192, 168, 5, 1].into()],
        cluster_cidr: "10.42.0.0/16".parse().unwrap(),
        service_cidr: "10.43.0.0/16".parse().unwrap(),
    }
}

fn svc(i: usize, external: Option<&str>) -> Service {
    let mut spec = json!({"clusterIP": format!("10.43.{}.{}", i / 250, i % 250 + 1),
                          "ports": [{"port": 80}]});
    if let Some(ip) = external {
        spec["externalIPs"] = json!([ip]);
    }
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": format!("s{i}")},
        "spec": spec
    }))
    .unwrap()
}

fn slice(i: usize, eps: &[String]) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": format!("s{i}-x"),
                     "labels": {"kubernetes.io/service-name": format!("s{i}")}},
        "addressType": "IPv4",
        "ports": [{"port": 8080}],
        "endpoints": eps.iter().map(|ip| json!({"addresses": [ip]})).collect::<Vec<_>>()
    }))
    .unwrap()
}

fn world(n: usize, eps_of_first: &[&str]) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut svcs = Vec::new();
    let mut slices = Vec::new();
    for i in 0..n {
        svcs.push(svc(i, None));
        let eps: Vec<String> = if i == 0 {
            eps_of_first.iter().map(|s| s.to_string()).collect()
        } else {
            vec![format!("10.42.{}.{}", i / 250, i % 250 + 1)]
        };
        slices.push(slice(i, &eps));
    }
    (svcs, slices)
}

fn rs(w: &(Vec<Service>, Vec<EndpointSlice>)) -> Ruleset {
    let s: Vec<&Service> = w.0.iter().collect();
    let e: Vec<&EndpointSlice> = w.1.iter().collect();
    ruleset(&s, &e, &facts())
}

#[test]
fn a_cold_start_replaces_the_table_in_dependency_order() {
    let r = rs(&world(3, &["10.42.9.1"]));
    let (ops, st) = diff(None, &r);
    assert!(st.cold);
    assert_eq!(ops[0], Op::DestroyTable);
    assert_eq!(ops[1], Op::AddTable);
    let first = |f: &dyn Fn(&Op) -> bool| ops.iter().position(f).unwrap();
    let last = |f: &dyn Fn(&Op) -> bool| ops.iter().rposition(f).unwrap();
    assert!(last(&|o| matches!(o, Op::AddChain(..))) < first(&|o| matches!(o, Op::AddRule(..))));
    assert!(last(&|o| matches!(o, Op::AddSet(..))) < first(&|o| matches!(o, Op::AddRule(..))));
    assert!(last(&|o| matches!(o, Op::AddRule(..))) < first(&|o| matches!(o, Op::AddElements(..))));
}

#[test]
fn one_service_change_touches_only_that_service() {
    let before = rs(&world(50, &["10.42.9.1"]));
    let after = rs(&world(50, &["10.42.9.1", "10.42.9.2"]));
    let (ops, st) = diff(Some(&before), &after);
    assert!(!st.cold);
    assert_eq!(st.chains_added, 1, "the new endpoint's chain: {ops:#?}");
    assert_eq!(st.chains_rewritten, 1, "the service chain: {ops:#?}");
    assert_eq!(st.chains_deleted, 0);
    assert_eq!((st.elements_added, st.elements_deleted), (0, 0));
    for op in &ops {
        let name = match op {
            Op::AddChain(c, _) | Op::FlushChain(c) | Op::AddRule(c, _) => c,
            other => panic!("unexpected {other:?}"),
        };
        assert!(name.contains("ns/s0/"), "{name}");
    }
    // Removing the service's endpoints deletes its chains and element, nothing else.
    let gone = rs(&world(50, &[]));
    let (ops, st) = diff(Some(&after), &gone);
    assert_eq!(st.chains_deleted, 3);
    assert_eq!(st.elements_deleted, 1);
    assert_eq!(st.elements_added, 1, "the reject element");
    assert!(
        ops.iter().all(|o| match o {
            Op::FlushChain(c) | Op::DestroyChain(c) => c.contains("ns/s0/"),
            Op::DelElements(s, _) => s == "service-ips",
            Op::AddElements(s, _) => s == "no-endpoint-services",
            _ => false,
        }),
        "{ops:#?}"
    );
}

fn arcs<T: Clone>(v: &[T]) -> Vec<Arc<T>> {
    v.iter().cloned().map(Arc::new).collect()
}

/// Ops as a comparable multiset (order inside one dependency class does not matter).
fn sorted(ops: &[Op]) -> Vec<String> {
    let mut v: Vec<String> = ops.iter().map(|o| format!("{o:?}")).collect();
    v.sort();
    v
}

#[test]
fn the_memo_recomputes_and_diffs_only_the_changed_service() {
    let (svcs, slices) = world(200, &["10.42.9.1"]);
    let svcs = arcs(&svcs);
    let mut slices = arcs(&slices);
    let mut memo = Memo::new(facts());
    let p1 = memo.parts(&svcs, &slices, &[]);
    assert_eq!(memo.recomputed, 200);
    assert_eq!(p1.materialize(), rs(&world(200, &["10.42.9.1"])));
    let applied = Applied::new(p1.clone());

    // Nothing changed: nothing recomputed, nothing to send.
    let same = memo.parts(&svcs, &slices, &[]);
    assert_eq!(memo.recomputed, 0);
    let (ops, st, _) = applied.diff_parts(&same);
    assert!(ops.is_empty(), "{ops:#?}");
    assert_eq!(st.parts_changed, 0);

    // One EndpointSlice replaced: one part recomputed; the partial diff equals the diff of
    // the whole tables.
    slices[0] = Arc::new(slice(0, &["10.42.9.1".into(), "10.42.9.2".into()]));
    let p2 = memo.parts(&svcs, &slices, &[]);
    assert_eq!(memo.recomputed, 1);
    let (ops, st, changed) = applied.diff_parts(&p2);
    assert_eq!(st.parts_changed, 1);
    assert_eq!(changed, vec!["service/ns/s0".to_string()]);
    let (full, _) = diff(Some(&p1.materialize()), &p2.materialize());
    assert_eq!(sorted(&ops), sorted(&full));
    assert_eq!(
        p2.materialize(),
        rs(&world(200, &["10.42.9.1", "10.42.9.2"]))
    );

    // The same content in a new object (a status-only update) changes nothing.
    let mut applied = applied;
    applied.commit(&p2, &changed);
    slices[0] = Arc::new(slice(0, &["10.42.9.1".into(), "10.42.9.2".into()]));
    let p3 = memo.parts(&svcs, &slices, &[]);
    assert_eq!(memo.recomputed, 1);
    let (ops, _, _) = applied.diff_parts(&p3);
    assert!(ops.is_empty(), "{ops:#?}");

    // A deleted Service: its part goes, with its chains and its element.
    let fewer: Vec<Arc<Service>> = svcs[1..].to_vec();
    let p4 = memo.parts(&fewer, &slices, &[]);
    let (ops, st, _) = applied.diff_parts(&p4);
    let (full, _) = diff(Some(&p3.materialize()), &p4.materialize());
    assert_eq!(sorted(&ops), sorted(&full));
    assert_eq!(st.chains_deleted, 3);
}

#[test]
fn a_contested_map_key_passes_to_the_next_owner_when_the_first_goes() {
    // Two Services claim the same external IP and port: the first (by name) owns the map
    // element; when it goes, the element is rewritten to the second's chain, not deleted.
    let svcs = arcs(&[svc(1, Some("192.0.2.9")), svc(2, Some("192.0.2.9"))]);
    let slices = arcs(&[
        slice(1, &["10.42.1.1".into()]),
        slice(2, &["10.42.1.2".into()]),
    ]);
    let mut memo = Memo::new(facts());
    let p1 = memo.parts(&svcs, &slices, &[]);
    let mut applied = Applied::new(p1.clone());
    let p2 = memo.parts(&svcs[1..], &slices, &[]);
    let (ops, _, changed) = applied.diff_parts(&p2);
    let (full, _) = diff(Some(&p1.materialize()), &p2.materialize());
    assert_eq!(sorted(&ops), sorted(&full));
    let key = crate::netfilter::expr::ip4::key_addr_proto_port(
        [192, 0, 2, 9].into(),
        crate::netfilter::expr::ip4::TCP,
        80,
    );
    assert!(
        ops.iter().any(|o| matches!(o, Op::AddElements(s, e)
            if s == "service-ips" && e.iter().any(|(k, v)| *k == key
                && matches!(v, Some(crate::netfilter::Verdict::Goto(c)) if c.contains("ns/s2/"))))),
        "{ops:#?}"
    );
    applied.commit(&p2, &changed);
    // And back: the first owner returns and wins again.
    let p3 = memo.parts(&svcs, &slices, &[]);
    let (ops, _, _) = applied.diff_parts(&p3);
    let (full, _) = diff(Some(&p2.materialize()), &p3.materialize());
    assert_eq!(sorted(&ops), sorted(&full));
}
