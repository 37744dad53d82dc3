//! The pure part of NetworkPolicy: policies + pods + namespaces + node facts → the desired
//! contents of table `ip rampart-netpol`. No I/O; same inputs, same output.
//!
//! Layout:
//! - `ingress-isolated` / `egress-isolated`: addresses of this node's pods that some policy
//!   isolates in that direction (a pod no policy selects stays open, as upstream);
//! - `ingress-allow`: interval set of `pod . peer . protocol . port` (the selected pod, the
//!   source, the destination port), `egress-allow`: `pod . peer . protocol . port` (the
//!   selected pod, the destination, its port). Each policy rule becomes ranges in these
//!   sets, so a packet costs one lookup per direction whatever the number of policies;
//! - chain `forward` (hook forward, priority filter): `ct state established,related`
//!   accept first, then the egress check for isolated sources and the ingress check for
//!   isolated destinations; a packet no allowed range covers is rejected (ICMP port
//!   unreachable: the client fails at once instead of timing out, as kube-router does).
//!
//! Upstream semantics copied (`networking/v1` types, the network-policies concept page):
//! policyTypes default to Ingress, plus Egress when the policy has egress rules; a rule
//! without `from`/`to` allows every peer and one without `ports` every port and protocol;
//! a peer with only `podSelector` means pods of the policy's namespace, with only
//! `namespaceSelector` every pod of the matching namespaces, with both the matching pods of
//! the matching namespaces; `ipBlock` is its CIDR minus `except`; a port defaults to TCP,
//! `endPort` makes a range, a named port is resolved per pod from its containers' ports
//! (the selected pod for ingress, each destination pod for egress). Host-network pods are
//! neither isolated nor pod peers (their address is the node's). Traffic from the node to
//! its own pods never reaches the forward hook, so it stays allowed, as upstream requires.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::matching::{label_selector, Labels};
use crate::netfilter::batch::types;
use crate::netfilter::expr::ip4;
use crate::netfilter::ruleset::{Chain, Rule, Ruleset, Set};
use crate::netfilter::{ChainHook, CmpOp, Expr, Reg, SetSpec, Verdict};

pub const TABLE: &str = "rampart-netpol";
pub const INGRESS_ALLOW: &str = "ingress-allow";
pub const EGRESS_ALLOW: &str = "egress-allow";
pub const INGRESS_ISOLATED: &str = "ingress-isolated";
pub const EGRESS_ISOLATED: &str = "egress-isolated";
/// Field lengths of the allow sets' key: pod address, peer address, protocol, port.
pub const ALLOW_FIELDS: [u32; 4] = [4, 4, 1, 2];
/// The padded key length of the allow sets.
pub const ALLOW_KEY_LEN: usize = 16;

/// What the policy engine knows about its node.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub node_name: String,
}

/// Ports allowed towards one peer range: everything, or per protocol disjoint port ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Ports {
    any: bool,
    by_proto: BTreeMap<u8, Vec<(u16, u16)>>,
}

impl Ports {
    fn all() -> Ports {
        Ports {
            any: true,
            by_proto: BTreeMap::new(),
        }
    }

    fn one(proto: u8, lo: u16, hi: u16) -> Ports {
        let mut p = Ports::default();
        p.by_proto.insert(proto, vec![(lo, hi)]);
        p
    }

    fn is_empty(&self) -> bool {
        !self.any && self.by_proto.is_empty()
    }

    fn union(&mut self, other: &Ports) {
        if self.any {
            return;
        }
        if other.any {
            *self = Ports::all();
            return;
        }
        for (proto, ranges) in &other.by_proto {
            let mine = self.by_proto.entry(*proto).or_default();
            mine.extend(ranges.iter().copied());
            mine.sort_unstable();
            let mut merged: Vec<(u16, u16)> = Vec::with_capacity(mine.len());
            for (lo, hi) in mine.drain(..) {
                match merged.last_mut() {
                    Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
                    _ => merged.push((lo, hi)),
                }
            }
            *mine = merged;
        }
    }
}

/// A pod as the policy engine sees it.
pub(super) struct PodView<'a> {
    ns: &'a str,
    labels: Labels,
    ip: Ipv4Addr,
    local: bool,
    pod: &'a Pod,
}

/// An allowed peer range with its ports (inclusive u32 address bounds).
#[derive(Debug, Clone)]
struct Item {
    lo: u32,
    hi: u32,
    ports: Ports,
}

pub(super) fn pod_views<'a>(pods: &[&'a Pod], facts: &NodeFacts) -> Vec<PodView<'a>> {
    pods.iter()
        .filter_map(|p| {
            let spec = p.spec.as_ref()?;
            if spec.host_network == Some(true) {
                return None;
            }
            let status = p.status.as_ref()?;
            if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
                return None;
            }
            let ip: Ipv4Addr = status.pod_ip.as_deref()?.parse().ok()?;
            Some(PodView {
                ns: p.metadata.namespace.as_deref()?,
                labels: p.metadata.labels.clone().unwrap_or_default(),
                ip,
                local: spec.node_name.as_deref() == Some(facts.node_name.as_str()),
                pod: p,
            })
        })
        .collect()
}

/// Namespace labels, with `kubernetes.io/metadata.name` always present (upstream's
/// apiserver sets it on every namespace; policies select namespaces by it).
pub(super) fn namespace_labels(namespaces: &[&Namespace]) -> BTreeMap<String, Labels> {
    namespaces
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            let mut l = n.metadata.labels.clone().unwrap_or_default();
            l.entry("kubernetes.io/metadata.name".into())
                .or_insert_with(|| name.clone());
            Some((name, l))
        })
        .collect()
}

/// policyTypes, with upstream's default when omitted.
fn types_of(spec: &NetworkPolicySpec) -> (bool, bool) {
    match &spec.policy_types {
        Some(t) if !t.is_empty() => (
            t.iter().any(|x| x == "Ingress"),
            t.iter().any(|x| x == "Egress"),
        ),
        _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

fn proto_number(p: Option<&str>) -> Option<u8> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(ip4::TCP),
        "UDP" => Some(ip4::UDP),
        "SCTP" => Some(ip4::SCTP),
        _ => None,
    }
}

/// The numeric port a named port resolves to on `pod` for `proto`.
fn named_port(pod: &Pod, name: &str, proto: u8) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name) && proto_number(p.protocol.as_deref()) == Some(proto)
        })
        .and_then(|p| u16::try_from(p.container_port).ok())
}

/// The ports of one rule entry, resolving a named port against `pod` (None: no pod to
/// resolve against, a named port then allows nothing).
fn entry_ports(e: &NetworkPolicyPort, pod: Option<&Pod>) -> Ports {
    let Some(proto) = proto_number(e.protocol.as_deref()) else {
        return Ports::default();
    };
    match &e.port {
        None => Ports::one(proto, 0, u16::MAX),
        Some(IntOrString::Int(p)) => {
            let Ok(lo) = u16::try_from(*p) else {
                return Ports::default();
            };
            let hi = e
                .end_port
                .and_then(|x| u16::try_from(x).ok())
                .filter(|h| *h >= lo)
                .unwrap_or(lo);
            Ports::one(proto, lo, hi)
        }
        Some(IntOrString::String(name)) => match pod.and_then(|p| named_port(p, name, proto)) {
            Some(n) => Ports::one(proto, n, n),
            None => Ports::default(),
        },
    }
}

fn is_named(e: &NetworkPolicyPort) -> bool {
    matches!(e.port, Some(IntOrString::String(_)))
}

/// `cidr` minus `except` as inclusive ranges; None if the CIDR is not IPv4.
fn ip_block(cidr: &str, except: &[String]) -> Option<Vec<(u32, u32)>> {
    let range = |s: &str| -> Option<(u32, u32)> {
        let (a, l) = s.split_once('/')?;
        let a: Ipv4Addr = a.parse().ok()?;
        let l: u32 = l.parse().ok().filter(|l| *l <= 32)?;
        let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
        let lo = u32::from(a) & mask;
        Some((lo, lo | !mask))
    };
    let mut out = vec![range(cidr)?];
    for ex in except {
        let Some((elo, ehi)) = range(ex) else {
            continue;
        };
        out = out
            .into_iter()
            .flat_map(|(lo, hi)| {
                if ehi < lo || elo > hi {
                    return vec![(lo, hi)];
                }
                let mut parts = Vec::new();
                if elo > lo {
                    parts.push((lo, elo - 1));
                }
                if ehi < hi {
                    parts.push((ehi + 1, hi));
                }
                parts
            })
            .collect();
    }
    Some(out)
}

/// The pods and address ranges one peer list stands for. `None` peers (or an empty list)
/// means every address.
struct Peers {
    ranges: Vec<(u32, u32)>,
    pods: Vec<usize>,
}

fn peers(
    list: Option<&Vec<NetworkPolicyPeer>>,
    policy_ns: &str,
    views: &[PodView<'_>],
    ns_labels: &BTreeMap<String, Labels>,
) -> Peers {
    let mut out = Peers {
        ranges: Vec::new(),
        pods: Vec::new(),
    };
    let list = match list {
        Some(l) if !l.is_empty() => l,
        _ => {
            out.ranges.push((0, u32::MAX));
            return out;
        }
    };
    let empty = Labels::new();
    for peer in list {
        if let Some(b) = &peer.ip_block {
            out.ranges.extend(
                ip_block(&b.cidr, b.except.as_deref().unwrap_or_default()).unwrap_or_default(),
            );
            continue;
        }
        if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
            continue;
        }
        for (i, v) in views.iter().enumerate() {
            let ns_ok = match &peer.namespace_selector {
                Some(sel) => label_selector(Some(sel), ns_labels.get(v.ns).unwrap_or(&empty)),
                None => v.ns == policy_ns,
            };
            let pod_ok = match &peer.pod_selector {
                Some(sel) => label_selector(Some(sel), &v.labels),
                None => true,
            };
            if ns_ok && pod_ok {
                out.pods.push(i);
            }
        }
    }
    out
}

/// Disjoint ranges out of overlapping items: every address gets the union of the ports of
/// the items covering it; neighbours with equal ports are merged.
fn disjoint(mut items: Vec<Item>) -> Vec<Item> {
    items.retain(|i| !i.ports.is_empty() && i.lo <= i.hi);
    let mut bounds: Vec<u64> = items
        .iter()
        .flat_map(|i| [u64::from(i.lo), u64::from(i.hi) + 1])
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut by_start: Vec<usize> = (0..items.len()).collect();
    by_start.sort_by_key(|&i| items[i].lo);
    let mut next = 0;
    let mut active: Vec<usize> = Vec::new();
    let mut out: Vec<Item> = Vec::new();
    for w in bounds.windows(2) {
        let (lo, hi) = (w[0], w[1] - 1);
        active.retain(|&i| u64::from(items[i].hi) >= lo);
        while next < by_start.len() && u64::from(items[by_start[next]].lo) <= lo {
            active.push(by_start[next]);
            next += 1;
        }
        let mut ports = Ports::default();
        for &i in &active {
            ports.union(&items[i].ports);
        }
        if ports.is_empty() {
            continue;
        }
        // Bounds come from u32 values (+1), so `lo`/`hi` fit in u32 here.
        let (lo, hi) = (lo as u32, hi as u32);
        match out.last_mut() {
            Some(last) if u64::from(last.hi) + 1 == u64::from(lo) && last.ports == ports => {
                last.hi = hi
            }
            _ => out.push(Item { lo, hi, ports }),
        }
    }
    out
}

/// The key of `pod . addr . proto . port` laid out as registers (fields padded to 4).
fn key(pod: Ipv4Addr, addr: u32, proto: u8, port: u16) -> Vec<u8> {
    let mut k = Vec::with_capacity(ALLOW_KEY_LEN);
    k.extend_from_slice(&pod.octets());
    k.extend_from_slice(&addr.to_be_bytes());
    k.extend_from_slice(&[proto, 0, 0, 0]);
    k.extend_from_slice(&port.to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k
}

/// Interval elements as stored in a [`Set`]: first key ‖ last key.
fn elements(pod: Ipv4Addr, items: &[Item], into: &mut BTreeMap<Vec<u8>, Option<Verdict>>) {
    for it in items {
        let mut push = |p0: u8, p1: u8, lo: u16, hi: u16| {
            let mut k = key(pod, it.lo, p0, lo);
            k.extend(key(pod, it.hi, p1, hi));
            into.insert(k, None);
        };
        if it.ports.any {
            push(0, u8::MAX, 0, u16::MAX);
            continue;
        }
        for (proto, ranges) in &it.ports.by_proto {
            for (lo, hi) in ranges {
                push(*proto, *proto, *lo, *hi);
            }
        }
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

fn allow_set(name: &str) -> SetSpec {
    SetSpec {
        name: name.into(),
        flags: crate::netfilter::interval::SET_INTERVAL,
        key_type: types::concat(&[
            types::IPV4_ADDR,
            types::IPV4_ADDR,
            types::INET_PROTO,
            types::INET_SERVICE,
        ]),
        key_len: ALLOW_KEY_LEN as u32,
        data_type: None,
        timeout_ms: None,
    }
}

fn lookup(set: &str) -> Expr {
    Expr::Lookup {
        set: set.into(),
        set_id: None,
        sreg: Reg::r(0),
        dreg: None,
        invert: false,
    }
}

/// `ct state established,related accept`.
fn ct_return_traffic() -> Rule {
    Rule::Plain(vec![
        Expr::CtState { dreg: Reg::r(0) },
        Expr::Bitwise {
            sreg: Reg::r(0),
            dreg: Reg::r(0),
            // NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED), host order.
            mask: 6u32.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: Reg::r(0),
            op: CmpOp::Neq,
            data: vec![0; 4],
        },
        Expr::Verdict(Verdict::Accept),
    ])
}

/// The fixed chains and sets.
fn base() -> Ruleset {
    let mut r = Ruleset::default();
    for spec in [
        addr_set(INGRESS_ISOLATED),
        addr_set(EGRESS_ISOLATED),
        allow_set(INGRESS_ALLOW),
        allow_set(EGRESS_ALLOW),
    ] {
        r.sets.insert(
            spec.name.clone(),
            Set {
                spec,
                elements: BTreeMap::new(),
            },
        );
    }
    let chain = |hook, rules| Chain { hook, rules };
    r.chains.insert(
        "forward".into(),
        chain(
            Some(ChainHook {
                kind: "filter",
                hook: 2,
                priority: 0,
            }),
            vec![
                ct_return_traffic(),
                Rule::Plain(vec![
                    ip4::saddr(Reg::r(0)),
                    lookup(EGRESS_ISOLATED),
                    Expr::Verdict(Verdict::Jump("egress".into())),
                ]),
                Rule::Plain(vec![
                    ip4::daddr(Reg::r(0)),
                    lookup(INGRESS_ISOLATED),
                    Expr::Verdict(Verdict::Jump("ingress".into())),
                ]),
            ],
        ),
    );
    // The selected pod is the first field: the source for egress, the destination for
    // ingress; the peer is the other address; the port is always the destination port.
    let check = |pod: Expr, peer: Expr, set: &str, ok: Verdict| {
        vec![
            Rule::Plain(vec![
                pod,
                peer,
                ip4::l4proto(Reg::r(2)),
                ip4::dport(Reg::r(3)),
                lookup(set),
                Expr::Verdict(ok),
            ]),
            Rule::Plain(vec![Expr::Reject]),
        ]
    };
    r.chains.insert(
        "egress".into(),
        chain(
            None,
            check(
                ip4::saddr(Reg::r(0)),
                ip4::daddr(Reg::r(1)),
                EGRESS_ALLOW,
                Verdict::Return,
            ),
        ),
    );
    r.chains.insert(
        "ingress".into(),
        chain(
            None,
            check(
                ip4::daddr(Reg::r(0)),
                ip4::saddr(Reg::r(1)),
                INGRESS_ALLOW,
                Verdict::Accept,
            ),
        ),
    );
    r
}

/// The desired table.
pub fn ruleset(
    policies: &[&NetworkPolicy],
    pods: &[&Pod],
    namespaces: &[&Namespace],
    facts: &NodeFacts,
) -> Ruleset {
    let views = pod_views(pods, facts);
    let ns_labels = namespace_labels(namespaces);
    let shares: Vec<Share> = policies
        .iter()
        .map(|p| share(p, &views, &ns_labels))
        .collect();
    assemble(shares.iter(), &views)
}

/// A pod's identity in a [`Share`]: namespace and name.
pub(super) type PodKey = (String, String);

/// One policy's share of the table: per local pod it selects, the peer ranges it allows in
/// each direction (an empty list still isolates the pod). Depends on the policy, the pods
/// and the namespaces only; [`assemble`] merges the shares of all policies.
#[derive(Debug, Clone, Default)]
pub struct Share {
    ingress: Vec<(PodKey, Vec<Item>)>,
    egress: Vec<(PodKey, Vec<Item>)>,
}

fn key_of(v: &PodView<'_>) -> PodKey {
    (
        v.ns.to_string(),
        v.pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// What `policy` allows, given all pods and namespace labels.
pub(super) fn share(
    pol: &NetworkPolicy,
    views: &[PodView<'_>],
    ns_labels: &BTreeMap<String, Labels>,
) -> Share {
    let mut out = Share::default();
    let (Some(ns), Some(spec)) = (pol.metadata.namespace.as_deref(), pol.spec.as_ref()) else {
        return out;
    };
    let (want_in, want_out) = types_of(spec);
    let selected: Vec<usize> = views
        .iter()
        .enumerate()
        .filter(|(_, v)| {
            v.local
                && v.ns == ns
                && spec
                    .pod_selector
                    .as_ref()
                    .is_none_or(|s| label_selector(Some(s), &v.labels))
        })
        .map(|(i, _)| i)
        .collect();
    if selected.is_empty() {
        return out;
    }
    if want_in {
        let mut ingress: BTreeMap<usize, Vec<Item>> =
            selected.iter().map(|&t| (t, Vec::new())).collect();
        for rule in spec.ingress.iter().flatten() {
            let p = peers(rule.from.as_ref(), ns, views, ns_labels);
            for &t in &selected {
                let ports = rule_ports(rule.ports.as_deref(), Some(views[t].pod));
                let items = ingress.entry(t).or_default();
                push_items(items, &p, views, |_| ports.clone());
            }
        }
        out.ingress = ingress
            .into_iter()
            .map(|(t, items)| (key_of(&views[t]), items))
            .collect();
    }
    if want_out {
        let mut egress: BTreeMap<usize, Vec<Item>> =
            selected.iter().map(|&t| (t, Vec::new())).collect();
        for rule in spec.egress.iter().flatten() {
            let p = peers(rule.to.as_ref(), ns, views, ns_labels);
            let entries = rule.ports.as_deref();
            // Numeric ports hold for every destination; named ones per destination pod
            // (and only for pods: an address range has no port names).
            let plain = rule_ports_filtered(entries, |e| !is_named(e));
            let has_named = entries.is_some_and(|es| es.iter().any(is_named));
            let mut items = Vec::new();
            push_items(&mut items, &p, views, |_| plain.clone());
            if has_named {
                let named = |pod: &Pod| {
                    let mut ports = Ports::default();
                    for e in entries.into_iter().flatten().filter(|e| is_named(e)) {
                        ports.union(&entry_ports(e, Some(pod)));
                    }
                    ports
                };
                for &i in &p.pods {
                    let ip = u32::from(views[i].ip);
                    items.push(Item {
                        lo: ip,
                        hi: ip,
                        ports: named(views[i].pod),
                    });
                }
                for v in views {
                    let ip = u32::from(v.ip);
                    if p.ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&ip)) {
                        items.push(Item {
                            lo: ip,
                            hi: ip,
                            ports: named(v.pod),
                        });
                    }
                }
            }
            for &t in &selected {
                egress.entry(t).or_default().extend(items.iter().cloned());
            }
        }
        out.egress = egress
            .into_iter()
            .map(|(t, items)| (key_of(&views[t]), items))
            .collect();
    }
    out
}

/// The table from every policy's share: per pod and direction the union of what all
/// policies selecting it allow. A share naming a pod that is no longer among `views`
/// contributes nothing (its pod is gone).
pub(super) fn assemble<'a>(
    shares: impl Iterator<Item = &'a Share>,
    views: &[PodView<'_>],
) -> Ruleset {
    let mut r = base();
    let index: std::collections::HashMap<(&str, &str), usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| ((v.ns, v.pod.metadata.name.as_deref().unwrap_or("")), i))
        .collect();
    // Per local pod (by its place in `views`, so duplicates resolve as in one pass): the
    // allowed items of each direction (absent: not isolated).
    let mut ingress: BTreeMap<usize, Vec<Item>> = BTreeMap::new();
    let mut egress: BTreeMap<usize, Vec<Item>> = BTreeMap::new();
    for sh in shares {
        for (dir, list) in [(&mut ingress, &sh.ingress), (&mut egress, &sh.egress)] {
            for ((ns, name), items) in list {
                if let Some(&t) = index.get(&(ns.as_str(), name.as_str())) {
                    dir.entry(t).or_default().extend(items.iter().cloned());
                }
            }
        }
    }
    for (dir, isolated, allow) in [
        (ingress, INGRESS_ISOLATED, INGRESS_ALLOW),
        (egress, EGRESS_ISOLATED, EGRESS_ALLOW),
    ] {
        let mut seen = BTreeSet::new();
        for (t, items) in dir {
            let ip = views[t].ip;
            // Two pods can briefly report one address (a deleted pod's IP reused): keep
            // the first, the next sync settles it.
            if !seen.insert(ip) {
                continue;
            }
            if let Some(s) = r.sets.get_mut(isolated) {
                s.elements.insert(ip.octets().to_vec(), None);
            }
            let items = disjoint(items);
            if let Some(s) = r.sets.get_mut(allow) {
                elements(ip, &items, &mut s.elements);
            }
        }
    }
    r
}

fn rule_ports(entries: Option<&[NetworkPolicyPort]>, pod: Option<&Pod>) -> Ports {
    match entries {
        None | Some([]) => Ports::all(),
        Some(es) => {
            let mut p = Ports::default();
            for e in es {
                p.union(&entry_ports(e, pod));
            }
            p
        }
    }
}

/// The numeric entries of a port list (an empty or missing list: all ports); when the list
/// has only named entries the result is empty.
fn rule_ports_filtered(
    entries: Option<&[NetworkPolicyPort]>,
    keep: impl Fn(&NetworkPolicyPort) -> bool,
) -> Ports {
    match entries {
        None | Some([]) => Ports::all(),
        Some(es) => {
            let mut p = Ports::default();
            for e in es.iter().filter(|e| keep(e)) {
                p.union(&entry_ports(e, None));
            }
            p
        }
    }
}

fn push_items(
    items: &mut Vec<Item>,
    p: &Peers,
    views: &[PodView<'_>],
    ports: impl Fn(usize) -> Ports,
) {
    for (lo, hi) in &p.ranges {
        items.push(Item {
            lo: *lo,
            hi: *hi,
            ports: ports(usize::MAX),
        });
    }
    for &i in &p.pods {
        let ip = u32::from(views[i].ip);
        items.push(Item {
            lo: ip,
            hi: ip,
            ports: ports(i),
        });
    }
}

#[cfg(test)]
#[path = "ruleset/tests.rs"]
mod tests;
