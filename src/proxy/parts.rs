//! The proxy's table as [`Parts`], recomputed only where the inputs changed: each Service's
//! part is remembered with the exact objects (the reflector's `Arc`s) it was computed from,
//! and reused as the same allocation while the Service and its EndpointSlices are the same
//! objects. The applier compares parts by pointer, so a sync after one Service changed
//! recomputes one part and diffs one part, at 10 or at 10,000 Services (upstream's
//! partial sync, `pkg/proxy/nftables/proxier.go`).
//!
//! Invariant: [`Memo::parts`] gives what the pure [`ruleset::ruleset`] (plus the hostPorts)
//! gives for the same objects; only the cost differs.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::hostport;
use super::ruleset::{self, NodeFacts, Parts, Ruleset};

/// The part holding this node's hostPort DNAT (sorts after every `service/` part).
pub const HOSTPORTS_PART: &str = "~hostports";

struct Entry {
    svc: Arc<Service>,
    slices: Vec<Arc<EndpointSlice>>,
    part: Arc<Ruleset>,
}

/// Remembered parts for one node's facts.
pub struct Memo {
    facts: NodeFacts,
    base: Arc<Ruleset>,
    services: HashMap<String, Entry>,
    hostports: Option<Arc<Ruleset>>,
    /// Parts recomputed by the last [`Memo::parts`] call.
    pub recomputed: usize,
}

fn same<T>(a: &[Arc<T>], b: &[&Arc<T>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
}

impl Memo {
    pub fn new(facts: NodeFacts) -> Memo {
        Memo {
            base: Arc::new(ruleset::base(&facts)),
            facts,
            services: HashMap::new(),
            hostports: None,
            recomputed: 0,
        }
    }

    /// The table for these objects, reusing every part whose inputs are the same objects.
    pub fn parts(
        &mut self,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        pods: &[Arc<Pod>],
    ) -> Parts {
        self.recomputed = 0;
        let mut by_service: HashMap<(&str, &str), Vec<&Arc<EndpointSlice>>> = HashMap::new();
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
        let mut parts = std::collections::BTreeMap::new();
        let mut seen: HashMap<String, Entry> = HashMap::with_capacity(services.len());
        for svc in services {
            let key = (
                svc.metadata.namespace.as_deref().unwrap_or(""),
                svc.metadata.name.as_deref().unwrap_or(""),
            );
            let mut own: Vec<&Arc<EndpointSlice>> =
                by_service.get(&key).cloned().unwrap_or_default();
            // Store order is arbitrary: compare in a stable order.
            own.sort_by_key(|s| Arc::as_ptr(s) as usize);
            let name = ruleset::part_name(svc);
            let prev = self.services.remove(&name);
            let entry = match prev {
                Some(e) if Arc::ptr_eq(&e.svc, svc) && same(&e.slices, &own) => e,
                prev => {
                    self.recomputed += 1;
                    let refs: Vec<&EndpointSlice> = own.iter().map(|s| s.as_ref()).collect();
                    let fresh = ruleset::service_part(&self.base, svc, &refs, &self.facts);
                    // An update that changes nothing here (a status field, a label) keeps
                    // the old allocation, so the applier skips the part.
                    let part = match prev {
                        Some(p) if *p.part == fresh => p.part,
                        _ => Arc::new(fresh),
                    };
                    Entry {
                        svc: svc.clone(),
                        slices: own.into_iter().cloned().collect(),
                        part,
                    }
                }
            };
            parts.insert(name.clone(), entry.part.clone());
            seen.insert(name, entry);
        }
        self.services = seen;
        let p: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
        let mut hp = Ruleset::with_sets_of(&self.base);
        hostport::render(&mut hp, &p, &self.facts);
        hp.prune_foreign(&self.base);
        let hp = match self.hostports.take() {
            Some(old) if *old == hp => old,
            _ => Arc::new(hp),
        };
        if !hp.chains.is_empty() || !hp.sets.is_empty() {
            parts.insert(HOSTPORTS_PART.to_string(), hp.clone());
        }
        self.hostports = Some(hp);
        Parts {
            base: self.base.clone(),
            parts,
        }
    }
}

#[cfg(test)]
mod tests;
