//! From "what is applied" and "what is desired" to the nftables operations that turn one into
//! the other (a partial sync), and their application over netlink.
//!
//! Operations come out in dependency order — sets and chains are created before rules and
//! map elements refer to them; rules are flushed and elements deleted before the chains and
//! sets they refer to are deleted — so an incremental sync is one transaction, and a cold
//! start may be cut between any two operations into several transactions (each commits a
//! consistent prefix).
//!
//! Invariants: an incremental sync never lists the table and never flushes it; it touches
//! only the chains whose rules changed and the elements that changed. Before each sync one
//! get of the table (not a dump) checks it is still the one we programmed (same handle); if
//! someone deleted it, the next sync is a cold start that recreates it.

use std::collections::BTreeSet;

use super::ruleset::{Rule, Ruleset, TABLE};
use crate::netfilter::batch::Element;
use crate::netfilter::{Batch, Error, Family, Socket};

/// One change to the table.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    DestroyTable,
    AddTable,
    AddSet(crate::netfilter::SetSpec),
    AddChain(String, Option<crate::netfilter::ChainHook>),
    DelElements(String, Vec<Element>),
    FlushChain(String),
    AddRule(String, Rule),
    AddElements(String, Vec<Element>),
    DestroyChain(String),
    DestroySet(String),
}

/// Counts of what one sync changed (tests and benchmarks read them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub cold: bool,
    pub transactions: usize,
    pub messages: usize,
    pub chains_added: usize,
    pub chains_rewritten: usize,
    pub chains_deleted: usize,
    pub elements_added: usize,
    pub elements_deleted: usize,
}

/// Operations from `applied` (`None`: unknown, start cold) to `desired`.
pub fn diff(applied: Option<&Ruleset>, desired: &Ruleset) -> (Vec<Op>, SyncStats) {
    let mut ops = Vec::new();
    let mut st = SyncStats::default();
    let empty = Ruleset::default();
    let old = match applied {
        Some(a) => a,
        None => {
            st.cold = true;
            // Replace whatever a previous run left, in the same transaction as the new
            // table's first part: never a moment without a table from this point on.
            ops.push(Op::DestroyTable);
            ops.push(Op::AddTable);
            &empty
        }
    };
    for (name, set) in &desired.sets {
        // A changed spec (only an affinity timeout can change) keeps the existing set until
        // the next cold start; the endpoint rule carries the new timeout at once.
        if !old.sets.contains_key(name) {
            ops.push(Op::AddSet(set.spec.clone()));
        }
    }
    for (name, chain) in &desired.chains {
        if !old.chains.contains_key(name) {
            ops.push(Op::AddChain(name.clone(), chain.hook));
            st.chains_added += 1;
        }
    }
    for (name, set) in &desired.sets {
        let Some(o) = old.sets.get(name) else {
            continue;
        };
        let gone: Vec<Element> = o
            .elements
            .iter()
            .filter(|(k, v)| set.elements.get(*k) != Some(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !gone.is_empty() {
            st.elements_deleted += gone.len();
            ops.push(Op::DelElements(name.clone(), gone));
        }
    }
    for (name, chain) in &desired.chains {
        match old.chains.get(name) {
            None => {}
            Some(o) if o.rules == chain.rules => continue,
            Some(_) => {
                st.chains_rewritten += 1;
                ops.push(Op::FlushChain(name.clone()));
            }
        }
        for rule in &chain.rules {
            ops.push(Op::AddRule(name.clone(), rule.clone()));
        }
    }
    for (name, set) in &desired.sets {
        let old_elems = old.sets.get(name).map(|s| &s.elements);
        let new: Vec<Element> = set
            .elements
            .iter()
            .filter(|(k, v)| old_elems.and_then(|o| o.get(*k)) != Some(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !new.is_empty() {
            st.elements_added += new.len();
            ops.push(Op::AddElements(name.clone(), new));
        }
    }
    let removed: BTreeSet<&String> = old
        .chains
        .keys()
        .filter(|c| !desired.chains.contains_key(*c))
        .collect();
    // Flush all first: a removed service chain jumps to removed endpoint chains.
    for c in &removed {
        ops.push(Op::FlushChain((*c).clone()));
    }
    for c in &removed {
        ops.push(Op::DestroyChain((*c).clone()));
        st.chains_deleted += 1;
    }
    for name in old.sets.keys() {
        if !desired.sets.contains_key(name) {
            ops.push(Op::DestroySet(name.clone()));
        }
    }
    (ops, st)
}

fn encode(b: &mut Batch, op: &Op) {
    match op {
        Op::DestroyTable => b.destroy_table(TABLE),
        Op::AddTable => b.add_table(TABLE),
        Op::AddSet(s) => b.add_set(TABLE, s),
        Op::AddChain(c, h) => b.add_chain(TABLE, c, h.as_ref()),
        Op::DelElements(s, e) => b.del_elements(TABLE, s, e),
        Op::FlushChain(c) => b.flush_chain(TABLE, c),
        Op::AddRule(c, Rule::Plain(exprs)) => b.add_rule(TABLE, c, exprs),
        Op::AddRule(
            c,
            Rule::Vmap {
                prefix,
                sreg,
                key_type,
                key_len,
                elems,
            },
        ) => b.add_rule_with_vmap(TABLE, c, prefix, *sreg, *key_type, *key_len, elems),
        Op::AddElements(s, e) => b.add_elements(TABLE, s, e),
        Op::DestroyChain(c) => b.destroy_chain(TABLE, c),
        Op::DestroySet(s) => b.destroy_set(TABLE, s),
    }
}

/// Messages per transaction of a cold start (each answer needs ~1 KiB of socket buffer).
const COLD_CHUNK_MESSAGES: usize = 20_000;

/// Keeps the table in the desired state over one netlink socket.
#[derive(Debug)]
pub struct Applier {
    sock: Socket,
    applied: Option<(u64, Ruleset)>,
}

impl Applier {
    /// Open the socket in the calling thread's network namespace.
    pub fn new() -> Result<Applier, Error> {
        Ok(Applier {
            sock: Socket::open()?,
            applied: None,
        })
    }

    /// Make the table equal `desired`: a partial sync when the table is the one we last
    /// programmed, else a cold start. On failure nothing is assumed and the next call starts
    /// cold.
    pub fn sync(&mut self, desired: &Ruleset) -> Result<SyncStats, Error> {
        let current = self.sock.get_table(Family::Ip, TABLE)?;
        let applied = match (&self.applied, current) {
            (Some((handle, r)), Some(t)) if *handle == t.handle => Some(r),
            _ => None,
        };
        let (ops, mut st) = diff(applied, desired);
        if ops.is_empty() {
            return Ok(st);
        }
        let chunk = if st.cold {
            COLD_CHUNK_MESSAGES
        } else {
            usize::MAX
        };
        let result = self.send(&ops, chunk, &mut st);
        match result {
            Ok(()) => {
                let handle = self
                    .sock
                    .get_table(Family::Ip, TABLE)?
                    .map(|t| t.handle)
                    .unwrap_or(0);
                self.applied = Some((handle, desired.clone()));
                Ok(st)
            }
            Err(e) => {
                self.applied = None;
                Err(e)
            }
        }
    }

    fn send(&self, ops: &[Op], chunk: usize, st: &mut SyncStats) -> Result<(), Error> {
        let mut b = Batch::new(Family::Ip);
        for op in ops {
            encode(&mut b, op);
            if b.len() >= chunk {
                st.messages += b.len();
                st.transactions += 1;
                self.sock.apply(&mut b)?;
                b = Batch::new(Family::Ip);
            }
        }
        if !b.is_empty() {
            st.messages += b.len();
            st.transactions += 1;
            self.sock.apply(&mut b)?;
        }
        Ok(())
    }

    /// Remove the table (uninstall, `--disable-kube-proxy` cleanup).
    pub fn cleanup(&mut self) -> Result<(), Error> {
        let mut b = Batch::new(Family::Ip);
        b.destroy_table(TABLE);
        self.applied = None;
        self.sock.apply(&mut b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::ruleset::{ruleset, NodeFacts};
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;

    fn facts() -> NodeFacts {
        NodeFacts {
            node_name: "n1".into(),
            node_ips: vec![[192, 168, 5, 1].into()],
            cluster_cidr: "10.42.0.0/16".parse().unwrap(),
            service_cidr: "10.43.0.0/16".parse().unwrap(),
        }
    }

    fn world(n: usize, eps_of_first: &[&str]) -> (Vec<Service>, Vec<EndpointSlice>) {
        let mut svcs = Vec::new();
        let mut slices = Vec::new();
        for i in 0..n {
            svcs.push(
                serde_json::from_value(json!({
                    "metadata": {"namespace": "ns", "name": format!("s{i}")},
                    "spec": {"clusterIP": format!("10.43.{}.{}", i / 250, i % 250 + 1),
                             "ports": [{"port": 80}]}
                }))
                .unwrap(),
            );
            let eps: Vec<String> = if i == 0 {
                eps_of_first.iter().map(|s| s.to_string()).collect()
            } else {
                vec![format!("10.42.{}.{}", i / 250, i % 250 + 1)]
            };
            slices.push(
                serde_json::from_value(json!({
                    "metadata": {"namespace": "ns", "name": format!("s{i}-x"),
                                 "labels": {"kubernetes.io/service-name": format!("s{i}")}},
                    "addressType": "IPv4",
                    "ports": [{"port": 8080}],
                    "endpoints": eps.iter().map(|ip| json!({"addresses": [ip]})).collect::<Vec<_>>()
                }))
                .unwrap(),
            );
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
        assert!(
            last(&|o| matches!(o, Op::AddChain(..))) < first(&|o| matches!(o, Op::AddRule(..)))
        );
        assert!(last(&|o| matches!(o, Op::AddSet(..))) < first(&|o| matches!(o, Op::AddRule(..))));
        assert!(
            last(&|o| matches!(o, Op::AddRule(..))) < first(&|o| matches!(o, Op::AddElements(..)))
        );
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
        // Removing the service deletes its chains and elements, nothing else.
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
}
