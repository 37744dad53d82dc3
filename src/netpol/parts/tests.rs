//! The memo against the pure function: after every change of a sequence (policy edited,
//! pods added, relabelled, re-addressed and deleted in and outside the policies'
//! namespaces, namespace labels changed), [`Memo::ruleset`] equals [`ruleset::ruleset`],
//! and it recomputed only the shares the change can touch.
use super::*;
use serde_json::json;

fn facts() -> NodeFacts {
    NodeFacts {
        node_name: "n1".into(),
    }
}

fn pod(ns: &str, name: &str, ip: &str, labels: serde_json::Value) -> Arc<Pod> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [
                {"name": "web", "containerPort": 8080}
            ]}]},
            "status": {"phase": "Running", "podIP": ip}
        }))
        .unwrap(),
    )
}

fn ns(name: &str, labels: serde_json::Value) -> Arc<Namespace> {
    Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap())
}

fn pol(ns: &str, name: &str, spec: serde_json::Value) -> Arc<NetworkPolicy> {
    Arc::new(
        serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
            .unwrap(),
    )
}

struct World {
    pols: Vec<Arc<NetworkPolicy>>,
    pods: Vec<Arc<Pod>>,
    nss: Vec<Arc<Namespace>>,
}

impl World {
    fn pure(&self) -> Ruleset {
        let p: Vec<&NetworkPolicy> = self.pols.iter().map(|x| x.as_ref()).collect();
        let q: Vec<&Pod> = self.pods.iter().map(|x| x.as_ref()).collect();
        let n: Vec<&Namespace> = self.nss.iter().map(|x| x.as_ref()).collect();
        ruleset::ruleset(&p, &q, &n, &facts())
    }

    /// The memo's table equals the pure one; returns how many shares it recomputed.
    fn check(&self, m: &mut Memo, what: &str) -> usize {
        let got = m.ruleset(&self.pols, &self.pods, &self.nss);
        let want = self.pure();
        for (name, set) in &want.sets {
            assert_eq!(
                got.sets.get(name).map(|s| &s.elements),
                Some(&set.elements),
                "{what}: set {name} differs from the pure computation"
            );
        }
        assert_eq!(got.sets.len(), want.sets.len(), "{what}");
        assert_eq!(got.chains.len(), want.chains.len(), "{what}");
        m.recomputed
    }
}

fn world() -> World {
    World {
        pols: vec![
            // x: ingress to app=web from app=client of x on a named port.
            pol(
                "x",
                "web",
                json!({"podSelector": {"matchLabels": {"app": "web"}},
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                                    "ports": [{"port": "web"}]}]}),
            ),
            // y: ingress from namespaces labelled team=a.
            pol(
                "y",
                "from-team-a",
                json!({"podSelector": {},
                       "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]}),
            ),
            // z: egress only to an ipBlock on TCP 443 (no pod peers).
            pol(
                "z",
                "egress-block",
                json!({"podSelector": {}, "policyTypes": ["Egress"],
                       "egress": [{"to": [{"ipBlock": {"cidr": "10.42.0.0/16", "except": ["10.42.1.0/24"]}}],
                                   "ports": [{"port": 443}]}]}),
            ),
            // w: egress to any address on a named port (resolved per destination pod).
            pol(
                "w",
                "egress-named",
                json!({"podSelector": {}, "policyTypes": ["Egress"],
                       "egress": [{"ports": [{"port": "web"}]}]}),
            ),
        ],
        pods: vec![
            pod("x", "web", "10.42.0.1", json!({"app": "web"})),
            pod("x", "client", "10.42.0.2", json!({"app": "client"})),
            pod("y", "db", "10.42.0.3", json!({"app": "db"})),
            pod("z", "out", "10.42.0.4", json!({"app": "out"})),
            pod("w", "named", "10.42.0.5", json!({"app": "named"})),
            pod("a", "peer", "10.42.0.6", json!({"app": "peer"})),
        ],
        nss: vec![
            ns("x", json!({})),
            ns("y", json!({})),
            ns("z", json!({})),
            ns("w", json!({})),
            ns("a", json!({"team": "a"})),
        ],
    }
}

#[test]
fn memo_equals_the_pure_table_through_a_sequence_of_changes() {
    let mut w = world();
    let mut m = Memo::new(facts());
    assert_eq!(w.check(&mut m, "cold"), 4);
    assert_eq!(w.check(&mut m, "nothing changed"), 0);

    // One policy edited: only its share.
    w.pols[2] = pol(
        "z",
        "egress-block",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"ipBlock": {"cidr": "10.42.0.0/16"}}], "ports": [{"port": 8443}]}]}),
    );
    assert_eq!(w.check(&mut m, "policy z edited"), 1);

    // A client pod added in x: x's policy (same namespace), y's (namespaceSelector) and
    // w's (named ports towards every address) may change; z's (ipBlock, numeric) cannot.
    w.pods
        .push(pod("x", "client2", "10.42.0.7", json!({"app": "client"})));
    assert_eq!(w.check(&mut m, "pod added in x"), 3);

    // A pod in a team-a namespace relabelled and re-addressed.
    w.pods[5] = pod("a", "peer", "10.42.0.8", json!({"app": "peer2"}));
    w.check(&mut m, "peer re-addressed");

    // The namespace loses its label: y's policy no longer admits it.
    w.nss[4] = ns("a", json!({}));
    assert_eq!(w.check(&mut m, "namespace relabelled"), 4);

    // The web pod deleted, then a policy deleted, then a policy added.
    w.pods.remove(0);
    w.check(&mut m, "web pod deleted");
    w.pols.remove(0);
    assert_eq!(w.check(&mut m, "policy deleted"), 0);
    w.pols.push(pol(
        "y",
        "deny-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    ));
    assert_eq!(w.check(&mut m, "policy added"), 1);

    // A pod finishing leaves every table it was in.
    let mut done = (*w.pods[1]).clone();
    done.status.get_or_insert_with(Default::default).phase = Some("Succeeded".into());
    w.pods[1] = Arc::new(done);
    w.check(&mut m, "pod finished");
}
