//! The cluster zone: an immutable index built from Services, EndpointSlices and Namespaces,
//! and the lookup that answers a question from it. Copies the Kubernetes DNS specification
//! as CoreDNS's `kubernetes` plugin implements it (with `pods insecure`, TTL 5 s):
//!
//! - `svc.ns.svc.<zone>`: A/AAAA of the ClusterIPs; for a headless Service the addresses of its
//!   ready endpoints; CNAME to `spec.externalName` for an ExternalName Service.
//! - `host.svc.ns.svc.<zone>` for each endpoint of a headless Service: `host` is the
//!   endpoint's `hostname` (the pod's `hostname` when its `subdomain` is the Service), else
//!   its address with dashes (`10-42-0-5`).
//! - `_port._proto.svc.ns.svc.<zone>` SRV per named port (to the Service name, or to each
//!   endpoint name when headless); SRV on the Service name itself lists every port.
//! - PTR for Service IPs and endpoint addresses; `a-b-c-d.ns.pod.<zone>` A for any address in
//!   an existing namespace.
//! - An existing name asked for another type is NOERROR with no answer and the SOA in the
//!   authority section (NODATA), also for names that only exist as a parent of others
//!   (`ns.svc.<zone>`, `svc.<zone>`); a name that does not exist is NXDOMAIN with the SOA.
//!
//! Invariant: a lookup reads only this index (no API call, no await, no lock held).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::wire::{self, Answer, RData, Record};

/// Upstream's (and CoreDNS's) TTL for cluster records.
pub const TTL: u32 = 5;

#[derive(Debug, Default)]
struct Node {
    a: Vec<Ipv4Addr>,
    aaaa: Vec<Ipv6Addr>,
    cname: Option<String>,
    srv: Vec<(u16, String)>,
}

/// Everything the resolver knows about the cluster, at one moment.
#[derive(Debug)]
pub struct Index {
    domain: String,
    names: HashMap<String, Node>,
    /// Names that exist only because names below them do (empty non-terminals).
    parents: HashSet<String>,
    ptr: HashMap<IpAddr, Vec<String>>,
    namespaces: HashSet<String>,
    serial: u32,
}

/// What to do with a question.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Answer it from the index.
    Answer(Answer),
    /// Not ours: forward it.
    Forward,
}

fn dashed(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

fn undashed(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

impl Index {
    /// An empty zone (before the first sync: lookups in it answer SERVFAIL).
    pub fn empty(domain: &str) -> Index {
        Index {
            domain: domain.trim_matches('.').to_ascii_lowercase(),
            names: HashMap::new(),
            parents: HashSet::new(),
            ptr: HashMap::new(),
            namespaces: HashSet::new(),
            serial: 0,
        }
    }

    pub fn build<'a>(
        domain: &str,
        dns_ip: Option<IpAddr>,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        namespaces: impl IntoIterator<Item = &'a Namespace>,
        serial: u32,
    ) -> Index {
        let mut ix = Index::empty(domain);
        ix.serial = serial;
        ix.namespaces = namespaces
            .into_iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        // Ready endpoints by (namespace, service): (address, hostname, named ports).
        type Ports = Vec<(String, String, u16)>;
        type Ready = Vec<(IpAddr, Option<String>, Ports)>;
        let mut eps: HashMap<(String, String), Ready> = HashMap::new();
        for s in slices {
            let (Some(ns), Some(svc)) = (
                s.metadata.namespace.clone(),
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    .cloned(),
            ) else {
                continue;
            };
            let ports: Ports = s
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some((
                        p.name.clone().unwrap_or_default(),
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        u16::try_from(p.port?).ok()?,
                    ))
                })
                .collect();
            let list = eps.entry((ns, svc)).or_default();
            for e in s.endpoints.iter().flatten() {
                // Upstream: a nil `ready` means ready.
                if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for a in &e.addresses {
                    if let Ok(ip) = a.parse::<IpAddr>() {
                        list.push((ip, e.hostname.clone(), ports.clone()));
                    }
                }
            }
        }
        let zone = ix.domain.clone();
        for svc in services {
            let (Some(name), Some(ns)) = (&svc.metadata.name, &svc.metadata.namespace) else {
                continue;
            };
            let Some(spec) = &svc.spec else { continue };
            let fqdn = format!("{name}.{ns}.svc.{zone}");
            let svc_ports: Vec<(String, String, u16)> = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some((
                        p.name.clone().unwrap_or_default(),
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        u16::try_from(p.port).ok()?,
                    ))
                })
                .collect();
            if spec.type_.as_deref() == Some("ExternalName") {
                if let Some(ext) = &spec.external_name {
                    let target = ext.trim_end_matches('.').to_ascii_lowercase();
                    if !target.is_empty() {
                        ix.names.entry(fqdn).or_default().cname = Some(target);
                    }
                }
                continue;
            }
            let headless = spec.cluster_ip.as_deref() == Some("None");
            if !headless {
                let ips: Vec<IpAddr> = spec
                    .cluster_ips
                    .iter()
                    .flatten()
                    .chain(spec.cluster_ip.iter())
                    .filter_map(|s| s.parse().ok())
                    .collect();
                if ips.is_empty() {
                    continue;
                }
                let node = ix.names.entry(fqdn.clone()).or_default();
                for ip in &ips {
                    match ip {
                        IpAddr::V4(v4) if !node.a.contains(v4) => node.a.push(*v4),
                        IpAddr::V6(v6) if !node.aaaa.contains(v6) => node.aaaa.push(*v6),
                        _ => {}
                    }
                }
                let mut named = Vec::new();
                for (pname, proto, port) in &svc_ports {
                    node.srv.push((*port, fqdn.clone()));
                    if !pname.is_empty() {
                        named.push((
                            format!("_{pname}._{}.{fqdn}", proto.to_ascii_lowercase()),
                            *port,
                        ));
                    }
                }
                for (srv, port) in named {
                    ix.names
                        .entry(srv)
                        .or_default()
                        .srv
                        .push((port, fqdn.clone()));
                }
                let mut seen = HashSet::new();
                for ip in ips {
                    if seen.insert(ip) {
                        ix.ptr.entry(ip).or_default().push(fqdn.clone());
                    }
                }
                continue;
            }
            // Headless: the ready endpoints, each also under its own name.
            let mut node = Node::default();
            let mut srv_names: BTreeMap<String, Vec<(u16, String)>> = BTreeMap::new();
            for (ip, hostname, ports) in eps.get(&(ns.clone(), name.clone())).into_iter().flatten()
            {
                let host = hostname.clone().unwrap_or_else(|| dashed(ip));
                let ep_name = format!("{host}.{fqdn}");
                let ep_node = ix.names.entry(ep_name.clone()).or_default();
                match ip {
                    IpAddr::V4(v4) => {
                        if !node.a.contains(v4) {
                            node.a.push(*v4);
                        }
                        if !ep_node.a.contains(v4) {
                            ep_node.a.push(*v4);
                        }
                    }
                    IpAddr::V6(v6) => {
                        if !node.aaaa.contains(v6) {
                            node.aaaa.push(*v6);
                        }
                        if !ep_node.aaaa.contains(v6) {
                            ep_node.aaaa.push(*v6);
                        }
                    }
                }
                for (pname, proto, port) in ports {
                    node.srv.push((*port, ep_name.clone()));
                    if !pname.is_empty() {
                        srv_names
                            .entry(format!("_{pname}._{}.{fqdn}", proto.to_ascii_lowercase()))
                            .or_default()
                            .push((*port, ep_name.clone()));
                    }
                }
                let names = ix.ptr.entry(*ip).or_default();
                if !names.contains(&ep_name) {
                    names.push(ep_name);
                }
            }
            // A headless Service without ready endpoints still exists (NODATA, not NXDOMAIN).
            node.srv.dedup();
            ix.names.insert(fqdn, node);
            for (n, mut targets) in srv_names {
                targets.dedup();
                ix.names.entry(n).or_default().srv.extend(targets);
            }
        }
        ix.names
            .entry(format!("ns.dns.{zone}"))
            .or_default()
            .a
            .extend(match dns_ip {
                Some(IpAddr::V4(v4)) => Some(v4),
                _ => None,
            });
        for ns in &ix.namespaces {
            ix.parents.insert(format!("{ns}.svc.{zone}"));
            ix.parents.insert(format!("{ns}.pod.{zone}"));
        }
        let suffix = format!(".{zone}");
        for n in ix.names.keys() {
            let mut rest = n.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if !parent.ends_with(&suffix) {
                    break;
                }
                ix.parents.insert(parent.to_string());
                rest = parent;
            }
        }
        ix.parents.insert(format!("svc.{zone}"));
        ix.parents.insert(format!("pod.{zone}"));
        ix.parents.insert(format!("dns.{zone}"));
        ix
    }

    fn soa(&self) -> Record {
        Record {
            name: self.domain.clone(),
            ttl: TTL,
            data: RData::Soa {
                mname: format!("ns.dns.{}", self.domain),
                rname: format!("hostmaster.{}", self.domain),
                serial: self.serial,
                refresh: 7200,
                retry: 1800,
                expire: 86400,
                minimum: TTL,
            },
        }
    }

    fn in_zone(&self, name: &str) -> bool {
        name == self.domain
            || (name.len() > self.domain.len()
                && name.ends_with(&self.domain)
                && name.as_bytes()[name.len() - self.domain.len() - 1] == b'.')
    }

    fn reply(&self, rcode: u8, answers: Vec<Record>, additional: Vec<Record>) -> Lookup {
        let authority = if answers.is_empty() {
            vec![self.soa()]
        } else {
            Vec::new()
        };
        Lookup::Answer(Answer {
            rcode,
            authoritative: true,
            answers,
            authority,
            additional,
        })
    }

    /// Answer `name`/`qtype` (name lowercase, no final dot), or say it is not ours.
    /// `synced` is false until the first full list: cluster names then get SERVFAIL.
    pub fn lookup(&self, name: &str, qtype: u16, synced: bool) -> Lookup {
        if let Some(ip) = reverse_ip(name) {
            return match self.ptr.get(&ip) {
                Some(names) if qtype == wire::TYPE_PTR || qtype == wire::TYPE_ANY => {
                    let answers = names
                        .iter()
                        .map(|n| Record {
                            name: name.to_string(),
                            ttl: TTL,
                            data: RData::Ptr(n.clone()),
                        })
                        .collect();
                    self.reply(wire::RCODE_NOERROR, answers, Vec::new())
                }
                Some(_) => self.reply(wire::RCODE_NOERROR, Vec::new(), Vec::new()),
                // Not a cluster address: the node's resolvers may know it (CoreDNS's
                // `fallthrough in-addr.arpa ip6.arpa`).
                None => Lookup::Forward,
            };
        }
        if !self.in_zone(name) {
            return Lookup::Forward;
        }
        if !synced {
            return Lookup::Answer(Answer {
                rcode: wire::RCODE_SERVFAIL,
                ..Default::default()
            });
        }
        let rec = |data: RData| Record {
            name: name.to_string(),
            ttl: TTL,
            data,
        };
        if name == self.domain {
            let answers = match qtype {
                wire::TYPE_SOA => vec![self.soa()],
                wire::TYPE_NS => vec![rec(RData::Ns(format!("ns.dns.{}", self.domain)))],
                _ => Vec::new(),
            };
            return self.reply(wire::RCODE_NOERROR, answers, Vec::new());
        }
        if let Some(node) = self.names.get(name) {
            return self.answer_node(name, node, qtype);
        }
        if let Some(answer) = self.pod_record(name, qtype) {
            return answer;
        }
        if self.parents.contains(name) {
            return self.reply(wire::RCODE_NOERROR, Vec::new(), Vec::new());
        }
        self.reply(wire::RCODE_NXDOMAIN, Vec::new(), Vec::new())
    }

    fn answer_node(&self, name: &str, node: &Node, qtype: u16) -> Lookup {
        let rec = |data: RData| Record {
            name: name.to_string(),
            ttl: TTL,
            data,
        };
        if let Some(target) = &node.cname {
            // A CNAME owns its name for every type (RFC 1034 §3.6.2).
            return self.reply(
                wire::RCODE_NOERROR,
                vec![rec(RData::Cname(target.clone()))],
                Vec::new(),
            );
        }
        let any = qtype == wire::TYPE_ANY;
        let mut answers = Vec::new();
        let mut additional = Vec::new();
        if qtype == wire::TYPE_A || any {
            answers.extend(node.a.iter().map(|ip| rec(RData::A(*ip))));
        }
        if qtype == wire::TYPE_AAAA || any {
            answers.extend(node.aaaa.iter().map(|ip| rec(RData::Aaaa(*ip))));
        }
        if qtype == wire::TYPE_SRV || any {
            let weight = (100 / node.srv.len().max(1)) as u16;
            for (port, target) in &node.srv {
                answers.push(rec(RData::Srv {
                    priority: 0,
                    weight,
                    port: *port,
                    target: target.clone(),
                }));
                if let Some(t) = self.names.get(target) {
                    let glue = |data| Record {
                        name: target.clone(),
                        ttl: TTL,
                        data,
                    };
                    for ip in &t.a {
                        let r = glue(RData::A(*ip));
                        if !additional.contains(&r) {
                            additional.push(r);
                        }
                    }
                    for ip in &t.aaaa {
                        let r = glue(RData::Aaaa(*ip));
                        if !additional.contains(&r) {
                            additional.push(r);
                        }
                    }
                }
            }
        }
        self.reply(wire::RCODE_NOERROR, answers, additional)
    }

    /// `a-b-c-d.ns.pod.<zone>` ("pods insecure": any address, in an existing namespace).
    fn pod_record(&self, name: &str, qtype: u16) -> Option<Lookup> {
        let rest = name.strip_suffix(&format!(".pod.{}", self.domain))?;
        let (label, ns) = rest.split_once('.')?;
        if ns.contains('.') || !self.namespaces.contains(ns) {
            return None;
        }
        let ip = undashed(label)?;
        let rec = |data| Record {
            name: name.to_string(),
            ttl: TTL,
            data,
        };
        let answers = match (ip, qtype) {
            (IpAddr::V4(v4), wire::TYPE_A | wire::TYPE_ANY) => vec![rec(RData::A(v4))],
            (IpAddr::V6(v6), wire::TYPE_AAAA | wire::TYPE_ANY) => vec![rec(RData::Aaaa(v6))],
            _ => Vec::new(),
        };
        Some(self.reply(wire::RCODE_NOERROR, answers, Vec::new()))
    }
}

/// The address a reverse name (`4.3.2.1.in-addr.arpa`, nibbles under `ip6.arpa`) stands for.
pub fn reverse_ip(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let parts: Vec<&str> = rest.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        for (i, p) in parts.iter().rev().enumerate() {
            octets[i] = p.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if let Some(rest) = name.strip_suffix(".ip6.arpa") {
        let nibbles: Vec<&str> = rest.split('.').collect();
        if nibbles.len() != 32 {
            return None;
        }
        let mut v: u128 = 0;
        for n in nibbles.iter().rev() {
            if n.len() != 1 {
                return None;
            }
            v = (v << 4) | u128::from_str_radix(n, 16).ok()?;
        }
        return Some(IpAddr::V6(Ipv6Addr::from(v)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture() -> Index {
        let services: Vec<Service> = serde_json::from_value(json!([
            {"metadata": {"name": "web", "namespace": "default"},
             "spec": {"clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                      "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
            {"metadata": {"name": "db", "namespace": "default"},
             "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}},
            {"metadata": {"name": "ext", "namespace": "default"},
             "spec": {"type": "ExternalName", "externalName": "Example.COM."}},
        ]))
        .unwrap();
        let slices: Vec<EndpointSlice> = serde_json::from_value(json!([
            {"metadata": {"name": "db-1", "namespace": "default",
                          "labels": {"kubernetes.io/service-name": "db"}},
             "addressType": "IPv4",
             "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
             "endpoints": [
                {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.42.0.6"], "conditions": {}},
                {"addresses": ["10.42.0.7"], "conditions": {"ready": false}}]}
        ]))
        .unwrap();
        let namespaces: Vec<Namespace> =
            serde_json::from_value(json!([{"metadata": {"name": "default"}}])).unwrap();
        Index::build(
            "cluster.local",
            Some("10.43.0.10".parse().unwrap()),
            &services,
            &slices,
            &namespaces,
            1,
        )
    }

    fn answer(ix: &Index, name: &str, t: u16) -> Answer {
        match ix.lookup(name, t, true) {
            Lookup::Answer(a) => a,
            Lookup::Forward => panic!("{name} forwarded"),
        }
    }

    #[test]
    fn records() {
        let ix = fixture();
        let a = answer(&ix, "web.default.svc.cluster.local", wire::TYPE_A);
        assert_eq!(a.answers[0].data, RData::A(Ipv4Addr::new(10, 43, 0, 20)));
        let a = answer(&ix, "web.default.svc.cluster.local", wire::TYPE_AAAA);
        assert_eq!((a.rcode, a.answers.len(), a.authority.len()), (0, 0, 1));
        let a = answer(&ix, "nope.default.svc.cluster.local", wire::TYPE_A);
        assert_eq!(a.rcode, wire::RCODE_NXDOMAIN);
        let a = answer(&ix, "db.default.svc.cluster.local", wire::TYPE_A);
        assert_eq!(a.answers.len(), 2, "ready endpoints only: {a:?}");
        let a = answer(&ix, "db-0.db.default.svc.cluster.local", wire::TYPE_A);
        assert_eq!(a.answers[0].data, RData::A(Ipv4Addr::new(10, 42, 0, 5)));
        let a = answer(&ix, "10-42-0-6.db.default.svc.cluster.local", wire::TYPE_A);
        assert_eq!(a.answers.len(), 1);
        let a = answer(&ix, "_pg._tcp.db.default.svc.cluster.local", wire::TYPE_SRV);
        assert_eq!(a.answers.len(), 2);
        assert_eq!(a.additional.len(), 2);
        let a = answer(&ix, "ext.default.svc.cluster.local", wire::TYPE_A);
        assert_eq!(a.answers[0].data, RData::Cname("example.com".into()));
        let a = answer(&ix, "20.0.43.10.in-addr.arpa", wire::TYPE_PTR);
        assert_eq!(
            a.answers[0].data,
            RData::Ptr("web.default.svc.cluster.local".into())
        );
        assert_eq!(
            ix.lookup("1.1.168.192.in-addr.arpa", wire::TYPE_PTR, true),
            Lookup::Forward
        );
        let a = answer(&ix, "10-42-1-9.default.pod.cluster.local", wire::TYPE_A);
        assert_eq!(a.answers[0].data, RData::A(Ipv4Addr::new(10, 42, 1, 9)));
        let a = answer(&ix, "10-42-1-9.other.pod.cluster.local", wire::TYPE_A);
        assert_eq!(a.rcode, wire::RCODE_NXDOMAIN);
        for parent in [
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ] {
            let a = answer(&ix, parent, wire::TYPE_A);
            assert_eq!((a.rcode, a.answers.len()), (0, 0), "{parent}");
        }
        assert_eq!(
            ix.lookup("example.com", wire::TYPE_A, true),
            Lookup::Forward
        );
        assert_eq!(
            ix.lookup("notcluster.local", wire::TYPE_A, true),
            Lookup::Forward
        );
    }
}
