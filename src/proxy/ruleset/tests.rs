//! The pure ruleset function over a table of cases: each case is Services + EndpointSlices in,
//! and the assertions name the map elements and chains upstream's proxier would produce.

use super::*;
use serde_json::json;

fn facts() -> NodeFacts {
    NodeFacts {
        node_name: "n1".into(),
        node_ips: vec![[192, 168, 5, 1].into(), [127, 0, 0, 1].into()],
        cluster_cidr: "10.42.0.0/16".parse().unwrap(),
        service_cidr: "10.43.0.0/16".parse().unwrap(),
    }
}

fn svc(extra: serde_json::Value) -> Service {
    let mut v = json!({
        "metadata": {"namespace": "ns", "name": "web"},
        "spec": {"clusterIP": "10.43.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// One slice for ns/web, port "http" → 8080, endpoints (ip, node, ready, serving, terminating).
fn slice(eps: &[(&str, &str, bool, bool, bool)]) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps.iter().map(|(ip, node, r, s, t)| json!({
            "addresses": [ip], "nodeName": node,
            "conditions": {"ready": r, "serving": s, "terminating": t}
        })).collect::<Vec<_>>()
    }))
    .unwrap()
}

fn build(s: Service, sl: Vec<EndpointSlice>) -> Ruleset {
    let sl_refs: Vec<&EndpointSlice> = sl.iter().collect();
    ruleset(&[&s], &sl_refs, &facts())
}

fn vip_key() -> Vec<u8> {
    ip4::key_addr_proto_port([10, 43, 0, 20].into(), ip4::TCP, 80)
}

fn elem(r: &Ruleset, set: &str, key: &[u8]) -> Option<Option<Verdict>> {
    r.sets[set].elements.get(key).cloned()
}

fn chains_with(r: &Ruleset, prefix: &str) -> Vec<String> {
    r.chains
        .keys()
        .filter(|c| c.starts_with(prefix))
        .cloned()
        .collect()
}

/// The endpoint chains an anonymous numgen map of `chain` picks from.
fn picks(r: &Ruleset, chain: &str) -> Vec<String> {
    r.chains[chain]
        .rules
        .iter()
        .filter_map(|rule| match rule {
            Rule::Vmap { elems, .. } => Some(elems.iter().filter_map(|(_, v)| match v {
                Some(Verdict::Goto(c)) => Some(c.clone()),
                _ => None,
            })),
            _ => None,
        })
        .flatten()
        .collect()
}

fn goto_target(v: Option<Option<Verdict>>) -> String {
    match v {
        Some(Some(Verdict::Goto(c))) => c,
        other => panic!("expected a goto, got {other:?}"),
    }
}

#[test]
fn cluster_ip_spreads_over_ready_endpoints() {
    let r = build(
        svc(json!({})),
        vec![slice(&[
            ("10.42.1.5", "n1", true, true, false),
            ("10.42.2.5", "n2", true, true, false),
            ("10.42.2.6", "n2", false, false, false),
        ])],
    );
    let chain = goto_target(elem(&r, "service-ips", &vip_key()));
    assert!(
        chain.starts_with("service-") && chain.ends_with("-ns/web/tcp/http"),
        "{chain}"
    );
    let eps = picks(&r, &chain);
    assert_eq!(eps.len(), 2, "not-ready endpoint left out: {eps:?}");
    assert!(eps.iter().any(|c| c.ends_with("__10.42.1.5/8080")));
    assert!(eps.iter().any(|c| c.ends_with("__10.42.2.5/8080")));
    // The endpoint chain DNATs to the endpoint; its first rule is the hairpin mark.
    let ep = &r.chains[&eps[0]];
    let Rule::Plain(last) = ep.rules.last().unwrap() else {
        panic!()
    };
    assert!(matches!(last.last(), Some(Expr::Dnat { .. })));
    assert!(elem(&r, "cluster-ips", &[10, 43, 0, 20]).is_some());
    assert!(elem(&r, "no-endpoint-services", &vip_key()).is_none());
}

#[test]
fn service_without_endpoints_is_rejected_not_dropped() {
    let r = build(svc(json!({})), vec![]);
    assert_eq!(
        elem(&r, "no-endpoint-services", &vip_key()),
        Some(Some(Verdict::Goto("reject-chain".into())))
    );
    assert!(elem(&r, "service-ips", &vip_key()).is_none());
    assert!(chains_with(&r, "service-")
        .iter()
        .all(|c| c == "service-endpoints-check"));
}

#[test]
fn skipped_services_leave_no_trace() {
    let cases = [
        json!({"metadata": {"annotations": {"rampart.io/node-local": "true"}}}),
        json!({"spec": {"clusterIP": "None"}}),
        json!({"spec": {"type": "ExternalName", "externalName": "example.org", "clusterIP": null}}),
    ];
    let baseline = build(
        serde_json::from_value(json!({"metadata": {"namespace": "x", "name": "y"}})).unwrap(),
        vec![],
    );
    for c in cases {
        let r = build(
            svc(c.clone()),
            vec![slice(&[("10.42.1.5", "n1", true, true, false)])],
        );
        assert_eq!(r, baseline, "case {c}");
    }
}

#[test]
fn terminating_endpoints_serve_only_when_nothing_is_ready() {
    let r = build(
        svc(json!({})),
        vec![slice(&[
            ("10.42.1.5", "n1", false, true, true),
            ("10.42.1.6", "n1", false, false, true),
        ])],
    );
    let chain = goto_target(elem(&r, "service-ips", &vip_key()));
    let eps = picks(&r, &chain);
    assert_eq!(eps.len(), 1, "{eps:?}");
    assert!(eps[0].ends_with("__10.42.1.5/8080"));

    let r = build(
        svc(json!({})),
        vec![slice(&[
            ("10.42.1.5", "n1", false, true, true),
            ("10.42.1.7", "n1", true, true, false),
        ])],
    );
    let chain = goto_target(elem(&r, "service-ips", &vip_key()));
    let eps = picks(&r, &chain);
    assert_eq!(eps.len(), 1);
    assert!(eps[0].ends_with("__10.42.1.7/8080"), "ready wins: {eps:?}");

    let r = build(
        svc(json!({})),
        vec![slice(&[("10.42.1.6", "n1", false, false, true)])],
    );
    assert!(elem(&r, "no-endpoint-services", &vip_key()).is_some());
}

#[test]
fn node_ports_are_on_node_addresses_only_and_masqueraded() {
    let r = build(
        svc(
            json!({"spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}}),
        ),
        vec![slice(&[("10.42.2.5", "n2", true, true, false)])],
    );
    let np = ip4::key_proto_port(ip4::TCP, 30080);
    let ext = goto_target(elem(&r, "service-nodeports", &np));
    assert!(ext.starts_with("external-"), "{ext}");
    assert_eq!(
        r.chains[&ext].rules[0],
        Rule::Plain(vec![Expr::Verdict(Verdict::Jump(
            "mark-for-masquerade".into()
        ))])
    );
    assert_eq!(picks(&r, &ext).len(), 1);
    let ips: Vec<_> = r.sets["nodeport-ips"].elements.keys().cloned().collect();
    assert_eq!(ips, vec![vec![192, 168, 5, 1]], "never 127.0.0.1");
}

#[test]
fn external_traffic_policy_local_uses_only_local_endpoints() {
    let local = json!({"spec": {"type": "NodePort", "externalTrafficPolicy": "Local",
        "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}});
    let np = ip4::key_proto_port(ip4::TCP, 30080);
    // Endpoints only elsewhere: external traffic dropped here, cluster traffic still served.
    let r = build(
        svc(local.clone()),
        vec![slice(&[("10.42.2.5", "n2", true, true, false)])],
    );
    assert_eq!(
        elem(&r, "no-endpoint-nodeports", &np),
        Some(Some(Verdict::Drop))
    );
    assert!(elem(&r, "service-ips", &vip_key()).is_some());
    // With a local endpoint: the external chain picks only it, and keeps the client address.
    let r = build(
        svc(local),
        vec![slice(&[
            ("10.42.2.5", "n2", true, true, false),
            ("10.42.1.5", "n1", true, true, false),
        ])],
    );
    let ext = goto_target(elem(&r, "service-nodeports", &np));
    let eps = picks(&r, &ext);
    assert_eq!(eps.len(), 1);
    assert!(eps[0].ends_with("__10.42.1.5/8080"));
    assert!(!r.chains[&ext]
        .rules
        .contains(&Rule::Plain(vec![Expr::Verdict(Verdict::Jump(
            "mark-for-masquerade".into()
        ))])));
    let cluster = goto_target(elem(&r, "service-ips", &vip_key()));
    assert_eq!(
        picks(&r, &cluster).len(),
        2,
        "cluster traffic uses every endpoint"
    );
}

#[test]
fn internal_traffic_policy_local_drops_without_local_endpoints() {
    let r = build(
        svc(json!({"spec": {"internalTrafficPolicy": "Local"}})),
        vec![slice(&[("10.42.2.5", "n2", true, true, false)])],
    );
    assert_eq!(
        elem(&r, "no-endpoint-services", &vip_key()),
        Some(Some(Verdict::Drop))
    );
}

#[test]
fn client_ip_affinity_is_a_timeout_set_per_endpoint() {
    let r = build(
        svc(json!({"spec": {"sessionAffinity": "ClientIP"}})),
        vec![slice(&[
            ("10.42.1.5", "n1", true, true, false),
            ("10.42.1.6", "n1", true, true, false),
        ])],
    );
    let aff: Vec<&Set> = r
        .sets
        .values()
        .filter(|s| s.spec.name.starts_with("affinity-"))
        .collect();
    assert_eq!(aff.len(), 2);
    assert!(aff.iter().all(|s| s.spec.timeout_ms == Some(10_800_000)));
    let chain = goto_target(elem(&r, "service-ips", &vip_key()));
    // Two affinity lookups before the random pick.
    assert_eq!(r.chains[&chain].rules.len(), 1 + 2 + 1);
    let r = build(
        svc(
            json!({"spec": {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}}),
        ),
        vec![slice(&[("10.42.1.5", "n1", true, true, false)])],
    );
    assert!(r.sets.values().any(|s| s.spec.timeout_ms == Some(60_000)));
}

#[test]
fn load_balancer_ingress_ips_are_accepted_like_node_ports() {
    let r = build(
        svc(
            json!({"spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]},
                   "status": {"loadBalancer": {"ingress": [{"ip": "192.168.5.1"}]}}}),
        ),
        vec![slice(&[("10.42.1.5", "n1", true, true, false)])],
    );
    let lb = ip4::key_addr_proto_port([192, 168, 5, 1].into(), ip4::TCP, 80);
    assert!(goto_target(elem(&r, "service-ips", &lb)).starts_with("external-"));
}

#[test]
fn slices_match_by_port_name_protocol_and_service() {
    let mut other: EndpointSlice = slice(&[("10.42.9.9", "n1", true, true, false)]);
    other.metadata.labels = Some(
        [(
            "kubernetes.io/service-name".to_string(),
            "other".to_string(),
        )]
        .into(),
    );
    let mut wrong_port = slice(&[("10.42.9.8", "n1", true, true, false)]);
    wrong_port.ports.as_mut().unwrap()[0].name = Some("metrics".into());
    let r = build(svc(json!({})), vec![other, wrong_port]);
    assert!(elem(&r, "no-endpoint-services", &vip_key()).is_some());
}

#[test]
fn the_same_inputs_give_the_same_ruleset() {
    let a = build(
        svc(json!({})),
        vec![slice(&[("10.42.1.5", "n1", true, true, false)])],
    );
    let b = build(
        svc(json!({})),
        vec![slice(&[("10.42.1.5", "n1", true, true, false)])],
    );
    assert_eq!(a, b);
    assert!(crate::netfilter::diff::diff(Some(&a), &b).0.is_empty());
}
