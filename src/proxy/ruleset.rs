//! The pure part of the service proxy: Services + EndpointSlices + node facts → the desired
//! contents of table `ip rampart-proxy`. No I/O; same inputs, same output.
//!
//! Layout (upstream's nftables kube-proxy, `pkg/proxy/nftables/proxier.go`, with our table
//! name so a real kube-proxy never collides with us):
//! - verdict maps `service-ips` (`ip daddr . meta l4proto . th dport`: cluster IPs, external
//!   IPs, load-balancer IPs) and `service-nodeports` (`meta l4proto . th dport`, only for
//!   destinations in `nodeport-ips`, the node's own addresses — never 127.0.0.1), so a packet
//!   costs one map lookup whatever the number of Services;
//! - one chain per service port (`service-…`: pick an endpoint with `numgen random mod N`),
//!   one per endpoint (`endpoint-…`: hairpin mark, affinity refresh, DNAT), one per externally
//!   reachable port (`external-…`: masquerade mark, `externalTrafficPolicy`);
//! - `no-endpoint-services`/`no-endpoint-nodeports`: a Service without usable endpoints is
//!   rejected at once (ICMP port unreachable → ECONNREFUSED), or dropped when endpoints exist
//!   but none may be used from here (a `Local` policy on a node without local endpoints), as
//!   upstream does;
//! - hairpin and external traffic get mark 0x4000 and are masqueraded in postrouting;
//! - `sessionAffinity: ClientIP`: one timeout set per endpoint (`affinity-…`), looked up before
//!   the random pick and refreshed by the endpoint chain;
//! - pod traffic leaving the cluster CIDR (not to the service CIDR) is masqueraded
//!   (`cluster-masquerade`), what flannel does for k3s.
//!
//! Services annotated `rampart.io/node-local: "true"` (the node-local DNS VIP) are skipped
//! entirely: a server on every node answers their cluster IP.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use sha2::{Digest, Sha256};

use crate::netfilter::batch::{types, DATA_VERDICT, SET_EVAL, SET_MAP, SET_TIMEOUT};
use crate::netfilter::expr::ip4;
pub use crate::netfilter::ruleset::{Chain, Parts, Rule, Ruleset, Set};
use crate::netfilter::{ChainHook, CmpOp, Expr, Reg, SetSpec, Verdict};

pub const TABLE: &str = "rampart-proxy";
/// The verdict map of hostPort DNAT (`ip daddr . meta l4proto . th dport`).
pub const HOSTPORTS: &str = "hostports";
/// The mark of packets to masquerade (upstream's 0x4000).
pub const MASQ_MARK: u32 = 0x4000;
pub const NODE_LOCAL_ANNOTATION: &str = "rampart.io/node-local";
/// Upstream's default ClientIP affinity timeout: 3 hours.
pub const DEFAULT_AFFINITY_SECONDS: i32 = 10800;

/// An IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr4 {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Cidr4 {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len.min(32)))
        };
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

impl std::str::FromStr for Cidr4 {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr4, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: not a CIDR"))?;
        let addr = a.parse().map_err(|_| format!("{s:?}: not an IPv4 CIDR"))?;
        let len: u8 = l.parse().map_err(|_| format!("{s:?}: bad prefix length"))?;
        if len > 32 {
            return Err(format!("{s:?}: prefix longer than 32"));
        }
        Ok(Cidr4 { addr, len })
    }
}

/// What the proxy knows about its node.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub node_name: String,
    /// Where NodePorts are answered (the node's addresses; never loopback).
    pub node_ips: Vec<Ipv4Addr>,
    pub cluster_cidr: Cidr4,
    pub service_cidr: Cidr4,
}

pub(super) fn plain(parts: Vec<Vec<Expr>>) -> Rule {
    Rule::Plain(parts.into_iter().flatten().collect())
}

pub(super) fn verdict(v: Verdict) -> Vec<Expr> {
    vec![Expr::Verdict(v)]
}

pub(super) fn jump(c: &str) -> Verdict {
    Verdict::Jump(c.into())
}

pub(super) fn goto(c: &str) -> Verdict {
    Verdict::Goto(c.into())
}

fn lookup(set: &str, dreg: Option<Reg>, invert: bool) -> Expr {
    Expr::Lookup {
        set: set.into(),
        set_id: None,
        sreg: Reg::r(0),
        dreg,
        invert,
    }
}

fn addr_set(name: &str) -> SetSpec {
    SetSpec {
        name: name.into(),
        flags: 0,
        key_type: types::IPV4_ADDR,
        key_len: 4,
        data_type: None,
        timeout_ms: None,
    }
}

fn vmap(name: &str, with_addr: bool) -> SetSpec {
    let (key_type, key_len) = if with_addr {
        (
            types::concat(&[types::IPV4_ADDR, types::INET_PROTO, types::INET_SERVICE]),
            12,
        )
    } else {
        (types::concat(&[types::INET_PROTO, types::INET_SERVICE]), 8)
    };
    SetSpec {
        name: name.into(),
        flags: SET_MAP,
        key_type,
        key_len,
        data_type: Some(DATA_VERDICT),
        timeout_ms: None,
    }
}

fn hook(kind: &'static str, hook: u32, priority: i32) -> Option<ChainHook> {
    Some(ChainHook {
        kind,
        hook,
        priority,
    })
}

/// The fixed part: base chains, dispatch chains and the maps.
pub fn base(facts: &NodeFacts) -> Ruleset {
    let mut r = Ruleset::default();
    for s in ["cluster-ips", "nodeport-ips"] {
        r.set(addr_set(s));
    }
    r.set(vmap("service-ips", true));
    r.set(vmap("no-endpoint-services", true));
    r.set(vmap("service-nodeports", false));
    r.set(vmap("no-endpoint-nodeports", false));
    // hostPort DNAT (`hostport.rs`), looked up before the Services as CNI portmap's chain.
    r.set(vmap(HOSTPORTS, true));
    for ip in &facts.node_ips {
        if !ip.is_loopback() {
            r.elem("nodeport-ips", ip.octets().to_vec(), None);
        }
    }
    let ct_new_jump = |c: &str| plain(vec![ip4::ct_new(), verdict(jump(c))]);
    let mut hostports = ip4::daddr_proto_port();
    hostports.push(lookup(HOSTPORTS, Some(Reg::VERDICT), false));
    r.chain(
        "nat-prerouting",
        hook("nat", 0, -100),
        vec![
            Rule::Plain(hostports.clone()),
            plain(vec![verdict(jump("services"))]),
        ],
    );
    r.chain(
        "nat-output",
        hook("nat", 3, -100),
        vec![
            Rule::Plain(hostports),
            plain(vec![verdict(jump("services"))]),
        ],
    );
    r.chain(
        "nat-postrouting",
        hook("nat", 4, 100),
        vec![
            plain(vec![verdict(jump("masquerading"))]),
            plain(vec![verdict(jump("cluster-masquerade"))]),
        ],
    );
    r.chain(
        "filter-input",
        hook("filter", 1, -110),
        vec![
            ct_new_jump("nodeport-endpoints-check"),
            ct_new_jump("service-endpoints-check"),
        ],
    );
    r.chain(
        "filter-forward",
        hook("filter", 2, -110),
        vec![
            ct_new_jump("service-endpoints-check"),
            ct_new_jump("cluster-ips-check"),
        ],
    );
    r.chain(
        "filter-output",
        hook("filter", 3, -110),
        vec![ct_new_jump("service-endpoints-check")],
    );
    r.chain(
        "filter-output-post-dnat",
        hook("filter", 3, -90),
        vec![ct_new_jump("cluster-ips-check")],
    );
    let mut dispatch = ip4::daddr_proto_port();
    dispatch.push(lookup("service-ips", Some(Reg::VERDICT), false));
    let mut nodeports = vec![ip4::daddr(Reg::r(0)), lookup("nodeport-ips", None, false)];
    nodeports.extend(ip4::proto_port());
    nodeports.push(lookup("service-nodeports", Some(Reg::VERDICT), false));
    r.chain(
        "services",
        None,
        vec![Rule::Plain(dispatch), Rule::Plain(nodeports)],
    );
    let mut noep = ip4::daddr_proto_port();
    noep.push(lookup("no-endpoint-services", Some(Reg::VERDICT), false));
    r.chain("service-endpoints-check", None, vec![Rule::Plain(noep)]);
    let mut noep_np = vec![ip4::daddr(Reg::r(0)), lookup("nodeport-ips", None, false)];
    noep_np.extend(ip4::proto_port());
    noep_np.push(lookup("no-endpoint-nodeports", Some(Reg::VERDICT), false));
    r.chain("nodeport-endpoints-check", None, vec![Rule::Plain(noep_np)]);
    r.chain("reject-chain", None, vec![Rule::Plain(vec![Expr::Reject])]);
    r.chain(
        "cluster-ips-check",
        None,
        vec![
            Rule::Plain(vec![
                ip4::daddr(Reg::r(0)),
                lookup("cluster-ips", None, false),
                Expr::Reject,
            ]),
            plain(vec![
                ip4::prefix(
                    ip4::daddr(Reg::r(0)),
                    facts.service_cidr.addr,
                    facts.service_cidr.len,
                    CmpOp::Eq,
                ),
                verdict(Verdict::Drop),
            ]),
        ],
    );
    r.chain(
        "mark-for-masquerade",
        None,
        vec![plain(vec![ip4::mark_or(MASQ_MARK)])],
    );
    r.chain(
        "masquerading",
        None,
        vec![
            plain(vec![ip4::mark_unset(MASQ_MARK), verdict(Verdict::Return)]),
            plain(vec![
                ip4::mark_clear(MASQ_MARK),
                vec![Expr::Masquerade { fully_random: true }],
            ]),
        ],
    );
    let cc = facts.cluster_cidr;
    let sc = facts.service_cidr;
    r.chain(
        "cluster-masquerade",
        None,
        vec![
            plain(vec![
                ip4::prefix(ip4::saddr(Reg::r(0)), cc.addr, cc.len, CmpOp::Neq),
                verdict(Verdict::Return),
            ]),
            plain(vec![
                ip4::prefix(ip4::daddr(Reg::r(0)), cc.addr, cc.len, CmpOp::Eq),
                verdict(Verdict::Return),
            ]),
            plain(vec![
                ip4::prefix(ip4::daddr(Reg::r(0)), sc.addr, sc.len, CmpOp::Eq),
                verdict(Verdict::Return),
            ]),
            plain(vec![vec![Expr::Masquerade { fully_random: true }]]),
        ],
    );
    r
}

/// One usable endpoint of a service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Ep {
    ip: Ipv4Addr,
    port: u16,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
}

/// Ready endpoints; if there are none, the serving-and-terminating ones (upstream's
/// terminating-endpoint fallback, KEP-1669).
fn usable(eps: &[&Ep]) -> Vec<Ep> {
    let ready: Vec<Ep> = eps
        .iter()
        .filter(|e| e.ready)
        .map(|e| (*e).clone())
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    eps.iter()
        .filter(|e| e.serving && e.terminating)
        .map(|e| (*e).clone())
        .collect()
}

pub(super) fn short_hash(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d[..4].iter().map(|b| format!("{b:02X}")).collect()
}

pub(super) fn proto_num(p: Option<&str>) -> Option<(u8, &'static str)> {
    match p.unwrap_or("TCP") {
        "TCP" => Some((ip4::TCP, "tcp")),
        "UDP" => Some((ip4::UDP, "udp")),
        "SCTP" => Some((ip4::SCTP, "sctp")),
        _ => None,
    }
}

/// Endpoints of `svc`'s port named `port_name` with protocol `proto`, from its slices.
fn endpoints_for(
    svc_ns: &str,
    svc_name: &str,
    port_name: &str,
    proto: &str,
    slices: &[&EndpointSlice],
    node: &str,
) -> Vec<Ep> {
    let mut out = BTreeSet::new();
    for s in slices {
        if s.metadata.namespace.as_deref() != Some(svc_ns)
            || s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
                .map(String::as_str)
                != Some(svc_name)
            || s.address_type != "IPv4"
        {
            continue;
        }
        let Some(port) = s.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && p.protocol.as_deref().unwrap_or("TCP") == proto
        }) else {
            continue;
        };
        let Some(num) = port
            .port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        else {
            continue;
        };
        for e in s.endpoints.iter().flatten() {
            let c = e.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let local = e.node_name.as_deref() == Some(node);
            for a in &e.addresses {
                if let Ok(ip) = a.parse::<Ipv4Addr>() {
                    out.insert(Ep {
                        ip,
                        port: num,
                        ready,
                        serving,
                        terminating,
                        local,
                    });
                }
            }
        }
    }
    out.into_iter().collect()
}

/// The EndpointSlices of each Service, by (namespace, service name).
pub fn slices_by_service<'a>(
    slices: &[&'a EndpointSlice],
) -> BTreeMap<(&'a str, &'a str), Vec<&'a EndpointSlice>> {
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        let ns = s.metadata.namespace.as_deref().unwrap_or("");
        if let Some(name) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        {
            by_service.entry((ns, name.as_str())).or_default().push(s);
        }
    }
    by_service
}

/// The name of a Service's part in [`Parts`].
pub fn part_name(svc: &Service) -> String {
    format!(
        "service/{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or(""),
        svc.metadata.name.as_deref().unwrap_or("")
    )
}

/// One Service's part of the table (its chains, affinity sets and map elements), given the
/// table's `base` and the Service's own EndpointSlices.
pub fn service_part(
    base: &Ruleset,
    svc: &Service,
    svc_slices: &[&EndpointSlice],
    facts: &NodeFacts,
) -> Ruleset {
    let mut r = Ruleset::with_sets_of(base);
    service(&mut r, svc, svc_slices, facts);
    r.prune_foreign(base);
    r
}

/// The table cut into parts: the base and one part per Service.
pub fn parts(services: &[&Service], slices: &[&EndpointSlice], facts: &NodeFacts) -> Parts {
    let base = base(facts);
    let by_service = slices_by_service(slices);
    let mut parts = BTreeMap::new();
    for svc in services {
        let key = (
            svc.metadata.namespace.as_deref().unwrap_or(""),
            svc.metadata.name.as_deref().unwrap_or(""),
        );
        let own = by_service.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        parts.insert(
            part_name(svc),
            std::sync::Arc::new(service_part(&base, svc, own, facts)),
        );
    }
    Parts {
        base: std::sync::Arc::new(base),
        parts,
    }
}

/// The whole desired table for these Services and EndpointSlices on this node.
pub fn ruleset(services: &[&Service], slices: &[&EndpointSlice], facts: &NodeFacts) -> Ruleset {
    parts(services, slices, facts).materialize()
}

fn service(r: &mut Ruleset, svc: &Service, svc_slices: &[&EndpointSlice], facts: &NodeFacts) {
    let (Some(ns), Some(name), Some(spec)) = (
        svc.metadata.namespace.as_deref(),
        svc.metadata.name.as_deref(),
        svc.spec.as_ref(),
    ) else {
        return;
    };
    if svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NODE_LOCAL_ANNOTATION))
        .is_some_and(|v| v == "true")
    {
        return;
    }
    if spec.type_.as_deref() == Some("ExternalName") {
        return;
    }
    let Some(cluster_ip) = spec
        .cluster_ip
        .as_deref()
        .and_then(|c| c.parse::<Ipv4Addr>().ok())
    else {
        return; // headless, or not IPv4
    };
    r.elem("cluster-ips", cluster_ip.octets().to_vec(), None);
    let etp_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let itp_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_SECONDS)
    });
    let mut external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|i| i.parse().ok())
        .collect();
    if spec.type_.as_deref() == Some("LoadBalancer") {
        external_ips.extend(
            svc.status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref().and_then(|ip| ip.parse::<Ipv4Addr>().ok())),
        );
    }
    for port in spec.ports.iter().flatten() {
        let Some((proto, proto_name)) = proto_num(port.protocol.as_deref()) else {
            continue;
        };
        let Ok(svc_port) = u16::try_from(port.port) else {
            continue;
        };
        let port_name = port.name.as_deref().unwrap_or("");
        let id = format!("{ns}/{name}/{proto_name}/{port_name}");
        let hash = short_hash(&id);
        let all = endpoints_for(
            ns,
            name,
            port_name,
            port.protocol.as_deref().unwrap_or("TCP"),
            svc_slices,
            &facts.node_name,
        );
        let all_refs: Vec<&Ep> = all.iter().collect();
        let local_refs: Vec<&Ep> = all.iter().filter(|e| e.local).collect();
        let cluster_eps = usable(&all_refs);
        let local_eps = usable(&local_refs);
        let internal_eps = if itp_local { &local_eps } else { &cluster_eps };
        let external_eps = if etp_local { &local_eps } else { &cluster_eps };
        let any = !cluster_eps.is_empty();
        // Without usable endpoints: reject when the Service has none at all, drop when the
        // policy hides the ones it has (upstream's choice).
        let none_verdict = if any {
            Verdict::Drop
        } else {
            goto("reject-chain")
        };

        let svc_chain = format!("service-{hash}-{id}");
        let ext_chain = format!("external-{hash}-{id}");
        let ep_chain = |e: &Ep| {
            format!(
                "endpoint-{}-{id}__{}/{}",
                short_hash(&format!("{id}{}{}", e.ip, e.port)),
                e.ip,
                e.port
            )
        };
        let aff_set = |e: &Ep| {
            format!(
                "affinity-{}-{id}__{}/{}",
                short_hash(&format!("{id}{}{}", e.ip, e.port)),
                e.ip,
                e.port
            )
        };

        // Endpoint chains for every endpoint any path may pick.
        let mut used: BTreeSet<Ep> = BTreeSet::new();
        used.extend(internal_eps.iter().cloned());
        used.extend(external_eps.iter().cloned());
        for e in &used {
            let mut rules = vec![plain(vec![
                vec![ip4::saddr(Reg::r(0))],
                vec![Expr::Cmp {
                    sreg: Reg::r(0),
                    op: CmpOp::Eq,
                    data: e.ip.octets().to_vec(),
                }],
                verdict(jump("mark-for-masquerade")),
            ])];
            if let Some(t) = affinity {
                let set = aff_set(e);
                r.set(SetSpec {
                    name: set.clone(),
                    flags: SET_TIMEOUT | SET_EVAL,
                    key_type: types::IPV4_ADDR,
                    key_len: 4,
                    data_type: None,
                    timeout_ms: Some(u64::try_from(t).unwrap_or(10800) * 1000),
                });
                rules.push(Rule::Plain(vec![
                    ip4::saddr(Reg::r(0)),
                    Expr::DynsetUpdate {
                        set,
                        sreg: Reg::r(0),
                        timeout_ms: u64::try_from(t).unwrap_or(10800) * 1000,
                    },
                ]));
            }
            rules.push(plain(vec![ip4::proto_is(proto), ip4::dnat(e.ip, e.port)]));
            r.chain(&ep_chain(e), None, rules);
        }

        // The endpoint picker: affinity first, then a random endpoint.
        let pick = |eps: &[Ep]| -> Vec<Rule> {
            let mut rules = Vec::new();
            if affinity.is_some() {
                for e in eps {
                    rules.push(plain(vec![
                        vec![ip4::saddr(Reg::r(0)), lookup(&aff_set(e), None, false)],
                        verdict(goto(&ep_chain(e))),
                    ]));
                }
            }
            rules.push(Rule::Vmap {
                prefix: vec![Expr::NumgenRandom {
                    modulus: eps.len() as u32,
                    dreg: Reg::r(0),
                }],
                sreg: Reg::r(0),
                key_type: types::INTEGER,
                key_len: 4,
                elems: eps
                    .iter()
                    .enumerate()
                    .map(|(i, e)| ((i as u32).to_ne_bytes().to_vec(), Some(goto(&ep_chain(e)))))
                    .collect(),
            });
            rules
        };

        let key = ip4::key_addr_proto_port(cluster_ip, proto, svc_port);
        if internal_eps.is_empty() {
            let v = if itp_local && any {
                Verdict::Drop
            } else {
                none_verdict.clone()
            };
            r.elem("no-endpoint-services", key, Some(v));
        } else {
            let mut rules = vec![plain(vec![
                ip4::prefix(
                    ip4::saddr(Reg::r(0)),
                    facts.cluster_cidr.addr,
                    facts.cluster_cidr.len,
                    CmpOp::Neq,
                ),
                verdict(jump("mark-for-masquerade")),
            ])];
            rules.extend(pick(internal_eps));
            r.chain(&svc_chain, None, rules);
            r.elem("service-ips", key, Some(goto(&svc_chain)));
        }

        let node_port = port
            .node_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0);
        if node_port.is_none() && external_ips.is_empty() {
            continue;
        }
        let ext_verdict = if external_eps.is_empty() {
            None
        } else {
            // External chain: masquerade (Cluster) or keep the client address (Local), then
            // the same picker over the endpoints this policy allows.
            let mut rules = Vec::new();
            if etp_local {
                if !cluster_eps.is_empty() && r.chains.contains_key(&svc_chain) {
                    // Pods reaching a Local service's external address use Cluster policy.
                    rules.push(plain(vec![
                        ip4::prefix(
                            ip4::saddr(Reg::r(0)),
                            facts.cluster_cidr.addr,
                            facts.cluster_cidr.len,
                            CmpOp::Eq,
                        ),
                        verdict(goto(&svc_chain)),
                    ]));
                }
            } else {
                rules.push(plain(vec![verdict(jump("mark-for-masquerade"))]));
            }
            rules.extend(pick(external_eps));
            r.chain(&ext_chain, None, rules);
            Some(goto(&ext_chain))
        };
        for ip in &external_ips {
            let key = ip4::key_addr_proto_port(*ip, proto, svc_port);
            match &ext_verdict {
                Some(v) => r.elem("service-ips", key, Some(v.clone())),
                None => r.elem("no-endpoint-services", key, Some(none_verdict.clone())),
            }
        }
        if let Some(np) = node_port {
            let key = ip4::key_proto_port(proto, np);
            match &ext_verdict {
                Some(v) => r.elem("service-nodeports", key, Some(v.clone())),
                None => r.elem("no-endpoint-nodeports", key, Some(none_verdict.clone())),
            }
        }
    }
}

#[cfg(test)]
mod tests;
