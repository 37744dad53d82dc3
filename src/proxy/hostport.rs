//! hostPort DNAT: a container port with `hostPort` is reachable at the node's address and that
//! port, as CNI's `portmap` plugin does for containerd (upstream kubelet leaves hostPorts to the
//! CNI). Rendered into Rampart's own table `ip rampart-proxy` (the pure part; the proxy's
//! applier writes it in the same transaction as the Services):
//! - verdict map `hostports` (`ip daddr . meta l4proto . th dport`), looked up in
//!   `nat-prerouting` and `nat-output` before the Services (portmap's `CNI-HOSTPORT-DNAT` runs
//!   before kube-proxy's chains);
//! - keys: the pod's `hostIP` when set (not `0.0.0.0`), else each of the node's addresses
//!   (`NodeFacts::node_ips` without loopback: portmap's `--dst-type LOCAL` minus 127.0.0.1,
//!   which would need `route_localnet`);
//! - one chain per mapping (`hostport-<hash>-<ns>/<pod>/<proto>/<hostPort>`): a pod reaching
//!   its own hostPort is marked for masquerade (portmap's hairpin SNAT), then DNAT to
//!   `podIP:containerPort`.
//!
//! Only pods bound to this node, not `hostNetwork` (their ports are the node's already), not
//! terminal and with a pod IP are mapped; a pod that stops or goes away loses its mapping at
//! the next sync. Two pods asking for the same host address, protocol and port: the first by
//! namespace/name keeps it (the scheduler's NodePorts filter normally prevents this).

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;

use super::ruleset::{
    goto, jump, plain, proto_num, short_hash, verdict, NodeFacts, Ruleset, HOSTPORTS,
};
use crate::netfilter::expr::ip4;
use crate::netfilter::{CmpOp, Expr, Reg};

/// One hostPort mapping.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mapping {
    pub host_ip: Option<Ipv4Addr>,
    pub proto: u8,
    pub host_port: u16,
    pub pod_ip: Ipv4Addr,
    pub container_port: u16,
    pub pod: String,
    pub proto_name: &'static str,
}

/// The hostPort mappings of `pods` (those bound to `node`), sorted by pod.
pub fn mappings(pods: &[&Pod], node: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    let mut sorted: Vec<&Pod> = pods.to_vec();
    sorted.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    for p in sorted {
        let (Some(spec), Some(status)) = (p.spec.as_ref(), p.status.as_ref()) else {
            continue;
        };
        if spec.node_name.as_deref() != Some(node)
            || spec.host_network == Some(true)
            || matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
        {
            continue;
        }
        let Some(pod_ip) = status
            .pod_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        let pod = format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or(""),
            p.metadata.name.as_deref().unwrap_or("")
        );
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"))
            .chain(spec.containers.iter());
        for c in containers {
            for port in c.ports.iter().flatten() {
                let Some(host_port) = port
                    .host_port
                    .and_then(|h| u16::try_from(h).ok())
                    .filter(|h| *h != 0)
                else {
                    continue;
                };
                let Ok(container_port) = u16::try_from(port.container_port) else {
                    continue;
                };
                let Some((proto, proto_name)) = proto_num(port.protocol.as_deref()) else {
                    continue;
                };
                let host_ip = port
                    .host_ip
                    .as_deref()
                    .and_then(|h| h.parse::<Ipv4Addr>().ok())
                    .filter(|h| !h.is_unspecified());
                out.push(Mapping {
                    host_ip,
                    proto,
                    host_port,
                    pod_ip,
                    container_port,
                    pod: pod.clone(),
                    proto_name,
                });
            }
        }
    }
    out
}

/// Add the hostPort chains and map elements of `pods` to `r` (a table from `ruleset`).
pub fn render(r: &mut Ruleset, pods: &[&Pod], facts: &NodeFacts) {
    for m in mappings(pods, &facts.node_name) {
        let keys: Vec<Ipv4Addr> = match m.host_ip {
            Some(ip) => vec![ip],
            None => facts
                .node_ips
                .iter()
                .copied()
                .filter(|ip| !ip.is_loopback())
                .collect(),
        };
        let keys: Vec<Vec<u8>> = keys
            .into_iter()
            .map(|ip| ip4::key_addr_proto_port(ip, m.proto, m.host_port))
            .filter(|k| {
                // First pod wins a contested address/port.
                r.sets
                    .get(HOSTPORTS)
                    .is_some_and(|s| !s.elements.contains_key(k))
            })
            .collect();
        if keys.is_empty() {
            continue;
        }
        let id = format!("{}/{}/{}", m.pod, m.proto_name, m.host_port);
        let chain = format!("hostport-{}-{id}", short_hash(&id));
        r.chain(
            &chain,
            None,
            vec![
                plain(vec![
                    vec![
                        ip4::saddr(Reg::r(0)),
                        Expr::Cmp {
                            sreg: Reg::r(0),
                            op: CmpOp::Eq,
                            data: m.pod_ip.octets().to_vec(),
                        },
                    ],
                    verdict(jump("mark-for-masquerade")),
                ]),
                plain(vec![
                    ip4::proto_is(m.proto),
                    ip4::dnat(m.pod_ip, m.container_port),
                ]),
            ],
        );
        for k in keys {
            r.elem(HOSTPORTS, k, Some(goto(&chain)));
        }
    }
}

#[cfg(test)]
mod tests {
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

    fn pod(name: &str, node: &str, phase: &str, ip: &str, ports: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i", "ports": ports}]},
            "status": {"phase": phase, "podIP": ip}
        }))
        .unwrap()
    }

    fn key(ip: [u8; 4], proto: u8, port: u16) -> Vec<u8> {
        ip4::key_addr_proto_port(ip.into(), proto, port)
    }

    #[test]
    fn node_addresses_host_ip_and_conflicts() {
        let a = pod(
            "a",
            "n1",
            "Running",
            "10.42.0.5",
            json!([{"containerPort": 80, "hostPort": 8080},
                   {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "192.168.5.9"},
                   {"containerPort": 81}]),
        );
        let b = pod(
            "b",
            "n1",
            "Running",
            "10.42.0.6",
            json!([{"containerPort": 80, "hostPort": 8080}]),
        );
        let other_node = pod(
            "c",
            "n2",
            "Running",
            "10.42.1.5",
            json!([{"containerPort": 80, "hostPort": 9090}]),
        );
        let done = pod(
            "d",
            "n1",
            "Succeeded",
            "10.42.0.7",
            json!([{"containerPort": 80, "hostPort": 9191}]),
        );
        let mut r = super::super::ruleset::ruleset(&[], &[], &facts());
        render(&mut r, &[&b, &a, &other_node, &done], &facts());
        let els = &r.sets[HOSTPORTS].elements;
        assert_eq!(els.len(), 2, "{:?}", els.keys().collect::<Vec<_>>());
        let v = els[&key([192, 168, 5, 1], ip4::TCP, 8080)].clone().unwrap();
        let crate::netfilter::Verdict::Goto(chain) = v else {
            panic!("{v:?}")
        };
        assert!(chain.ends_with("ns/a/tcp/8080"), "first pod wins: {chain}");
        assert!(
            !els.contains_key(&key([127, 0, 0, 1], ip4::TCP, 8080)),
            "never loopback"
        );
        assert!(
            els.contains_key(&key([192, 168, 5, 9], ip4::UDP, 5353)),
            "hostIP honoured"
        );
        let rules = &r.chains[&chain].rules;
        assert_eq!(rules.len(), 2);
        assert!(
            matches!(&rules[1], crate::proxy::ruleset::Rule::Plain(e) if e.ends_with(&ip4::dnat([10, 42, 0, 5].into(), 80)))
        );
    }
}
