//! The policy table recomputed only where the inputs changed: each NetworkPolicy's
//! [`Share`] (what it allows, per selected local pod) is remembered with the exact object
//! (the reflector's `Arc`) it was computed from, and reused while the policy is the same
//! object and no changed Pod or Namespace can alter it. A sync after one policy changed
//! computes one share instead of every policy's selectors against every pod; merging the
//! shares into the sets and the applier's diff stay whole-table, both linear and cheap next
//! to selector matching (what upstream's policy agents do: Calico and kube-router recompute
//! per policy, not per cluster).
//!
//! When a share must be recomputed (conservative: recomputing too often costs time, never
//! correctness): its policy object changed; any Namespace changed (namespace labels feed
//! `namespaceSelector` peers); or a changed Pod (added, deleted, relabelled, re-addressed,
//! finished), old or new version, lies in the policy's namespace (it may be selected, or a
//! `podSelector`-only peer), or the policy has a `namespaceSelector` peer (it may match any
//! namespace), or an egress rule with named ports towards address ranges (those resolve per
//! destination pod, wherever it lives).
//!
//! Invariant: [`Memo::ruleset`] gives exactly what the pure [`ruleset::ruleset`] gives for
//! the same objects (tested with sequences of changes); only the cost differs.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::ruleset::{self, NodeFacts, Share};
use crate::netfilter::ruleset::Ruleset;

type Key = (String, String);

fn key<T: kube::Resource>(o: &T) -> Key {
    (
        o.meta().namespace.clone().unwrap_or_default(),
        o.meta().name.clone().unwrap_or_default(),
    )
}

/// Remembered shares for one node.
pub struct Memo {
    facts: NodeFacts,
    policies: HashMap<Key, (Arc<NetworkPolicy>, Arc<Share>)>,
    pods: HashMap<Key, Arc<Pod>>,
    namespaces: HashMap<String, Arc<Namespace>>,
    /// Shares recomputed by the last [`Memo::ruleset`] call.
    pub recomputed: usize,
}

impl Memo {
    pub fn new(facts: NodeFacts) -> Memo {
        Memo {
            facts,
            policies: HashMap::new(),
            pods: HashMap::new(),
            namespaces: HashMap::new(),
            recomputed: 0,
        }
    }

    /// The table for these objects, reusing every share its inputs cannot have changed.
    pub fn ruleset(
        &mut self,
        policies: &[Arc<NetworkPolicy>],
        pods: &[Arc<Pod>],
        namespaces: &[Arc<Namespace>],
    ) -> Ruleset {
        self.recomputed = 0;
        // What changed since the last call, by object identity.
        let new_pods: HashMap<Key, Arc<Pod>> =
            pods.iter().map(|p| (key(p.as_ref()), p.clone())).collect();
        let mut changed: Vec<Arc<Pod>> = Vec::new();
        for (k, p) in &new_pods {
            match self.pods.get(k) {
                Some(old) if Arc::ptr_eq(old, p) => {}
                Some(old) => {
                    changed.push(old.clone());
                    changed.push(p.clone());
                }
                None => changed.push(p.clone()),
            }
        }
        for (k, old) in &self.pods {
            if !new_pods.contains_key(k) {
                changed.push(old.clone());
            }
        }
        let new_nss: HashMap<String, Arc<Namespace>> = namespaces
            .iter()
            .map(|n| (n.metadata.name.clone().unwrap_or_default(), n.clone()))
            .collect();
        let nss_changed = new_nss.len() != self.namespaces.len()
            || new_nss.iter().any(|(k, n)| {
                self.namespaces
                    .get(k)
                    .is_none_or(|old| !Arc::ptr_eq(old, n))
            });

        let pod_refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
        let ns_refs: Vec<&Namespace> = namespaces.iter().map(|n| n.as_ref()).collect();
        let views = ruleset::pod_views(&pod_refs, &self.facts);
        let ns_labels = ruleset::namespace_labels(&ns_refs);
        let mut kept: HashMap<Key, (Arc<NetworkPolicy>, Arc<Share>)> =
            HashMap::with_capacity(policies.len());
        let mut shares: Vec<Arc<Share>> = Vec::with_capacity(policies.len());
        for pol in policies {
            let k = key(pol.as_ref());
            let reuse = match self.policies.get(&k) {
                Some((old, sh))
                    if Arc::ptr_eq(old, pol)
                        && !nss_changed
                        && !changed.iter().any(|p| touches(pol, p)) =>
                {
                    Some(sh.clone())
                }
                _ => None,
            };
            let sh = reuse.unwrap_or_else(|| {
                self.recomputed += 1;
                Arc::new(ruleset::share(pol, &views, &ns_labels))
            });
            shares.push(sh.clone());
            kept.insert(k, (pol.clone(), sh));
        }
        let r = ruleset::assemble(shares.iter().map(|s| s.as_ref()), &views);
        self.policies = kept;
        self.pods = new_pods;
        self.namespaces = new_nss;
        r
    }
}

/// Whether a change of `pod` (either version) may change `pol`'s share.
fn touches(pol: &NetworkPolicy, pod: &Pod) -> bool {
    if pod.metadata.namespace == pol.metadata.namespace {
        return true;
    }
    let Some(spec) = pol.spec.as_ref() else {
        return false;
    };
    let ns_peer = |peers: Option<&Vec<NetworkPolicyPeer>>| {
        peers
            .into_iter()
            .flatten()
            .any(|p| p.namespace_selector.is_some())
    };
    if spec
        .ingress
        .iter()
        .flatten()
        .any(|r| ns_peer(r.from.as_ref()))
    {
        return true;
    }
    spec.egress.iter().flatten().any(|r| {
        let named = r
            .ports
            .iter()
            .flatten()
            .any(|p| matches!(p.port, Some(IntOrString::String(_))));
        // A rule without peers allows every address: named ports then resolve on pods
        // anywhere, as they do for ipBlock peers.
        let ranges =
            r.to.as_ref()
                .is_none_or(|to| to.is_empty() || to.iter().any(|p| p.ip_block.is_some()));
        ns_peer(r.to.as_ref()) || (named && ranges)
    })
}

#[cfg(test)]
#[path = "parts/tests.rs"]
mod tests;
