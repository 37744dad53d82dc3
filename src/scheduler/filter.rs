//! Filter plugins: can this pod run on this node? Upstream's default filters in their order —
//! NodeUnschedulable, NodeName, TaintToleration, NodeAffinity (nodeSelector + required node
//! affinity), NodePorts, NodeResourcesFit, VolumeBinding/VolumeZone (node affinity of bound
//! PersistentVolumes), PodTopologySpread and InterPodAffinity — with upstream's reason texts,
//! which the FailedScheduling message counts per node.
//!
//! A pod's per-cycle state (upstream's PreFilter) is computed once in [`Prepared::new`]; the
//! per-node check then costs a few map lookups. As upstream, the first failing plugin decides a
//! node's reasons; a failure is *unresolvable* when removing pods cannot fix it (preemption
//! skips those nodes).
//!
//! Simplifications: affinity terms with a non-empty `namespaceSelector` match only their
//! listed `namespaces` (namespace labels are not followed); spread constraints honour
//! `nodeAffinityPolicy: Honor` and `nodeTaintsPolicy: Ignore` (the defaults) only.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{
    NodeSelector, PodAffinityTerm, PodSpec, Taint, Toleration, TopologySpreadConstraint,
};

use super::cache::{Cache, NodeInfo, PodInfo, Resources};
use crate::api::matching::{self, Labels};

/// Why a node was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reasons: Vec<String>,
    pub resolvable: bool,
}

fn unresolvable(r: impl Into<String>) -> Failure {
    Failure {
        reasons: vec![r.into()],
        resolvable: false,
    }
}

fn unschedulable(r: impl Into<String>) -> Failure {
    Failure {
        reasons: vec![r.into()],
        resolvable: true,
    }
}

pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

struct AffinityTerm {
    key: String,
    /// Topology values of nodes holding a matching pod.
    values: HashSet<String>,
}

struct Spread {
    key: String,
    max_skew: i64,
    counts: HashMap<String, i64>,
    min: i64,
    self_match: i64,
}

/// A pod's scheduling-cycle state, computed once against the cache.
pub struct Prepared<'a> {
    pub pod: &'a PodInfo,
    spec: PodSpec,
    tolerations: Vec<Toleration>,
    /// Unresolvable for every node (missing or unbound claim).
    pub pre_filter: Option<String>,
    volume_affinity: Vec<NodeSelector>,
    affinity: Vec<AffinityTerm>,
    /// No pod matches any affinity term and the pod matches them itself: the first of a group.
    affinity_first: bool,
    anti_affinity: Vec<AffinityTerm>,
    /// (topology key, value) domains forbidden by placed pods' anti-affinity.
    existing_anti: Vec<(String, String)>,
    spread: Vec<Spread>,
    /// Requests of higher-or-equal priority pods nominated to a node (upstream counts them).
    nominated: HashMap<String, (Resources, i64)>,
}

/// The volumes' state the filters need: claim → bound PV's node affinity.
pub trait Volumes {
    /// `Err(message)` when the claim is missing or unbound; `Ok(affinity)` when bound.
    fn claim(&self, namespace: &str, claim: &str) -> Result<Option<NodeSelector>, String>;
}

fn term_namespaces<'t>(term: &'t PodAffinityTerm, own_ns: &'t str) -> Option<Vec<&'t str>> {
    let listed: Vec<&str> = term
        .namespaces
        .iter()
        .flatten()
        .map(|s| s.as_str())
        .collect();
    match (&term.namespace_selector, listed.is_empty()) {
        // `namespaceSelector: {}` means every namespace.
        (Some(sel), _) if sel.match_labels.is_none() && sel.match_expressions.is_none() => None,
        (None, true) => Some(vec![own_ns]),
        _ => Some(listed),
    }
}

/// Does `term` (of a pod in `owner_ns`) select pod `p`?
fn term_matches(term: &PodAffinityTerm, owner_ns: &str, p: &PodInfo) -> bool {
    let ns_ok = term_namespaces(term, owner_ns).is_none_or(|l| l.contains(&p.namespace.as_str()));
    ns_ok && matching::label_selector(term.label_selector.as_ref(), &p.labels)
}

impl<'a> Prepared<'a> {
    pub fn new(
        pod: &'a PodInfo,
        cache: &Cache,
        volumes: &dyn Volumes,
        nominated: &[(String, PodInfo)],
    ) -> Prepared<'a> {
        let spec = pod.pod.spec.clone().unwrap_or_default();
        let tolerations = spec.tolerations.clone().unwrap_or_default();
        let mut pre_filter = None;
        let mut volume_affinity = Vec::new();
        for v in spec.volumes.iter().flatten() {
            if let Some(c) = &v.persistent_volume_claim {
                match volumes.claim(&pod.namespace, &c.claim_name) {
                    Ok(Some(sel)) => volume_affinity.push(sel),
                    Ok(None) => {}
                    Err(msg) => {
                        pre_filter.get_or_insert(msg);
                    }
                }
            }
        }
        let placed = || cache.pods.values().filter(|p| !p.deleting);
        let domains = |term: &PodAffinityTerm| -> HashSet<String> {
            placed()
                .filter(|p| term_matches(term, &pod.namespace, p))
                .filter_map(|p| cache.nodes.get(&p.node_name))
                .filter_map(|n| n.labels.get(&term.topology_key).cloned())
                .collect()
        };
        let aff = spec.affinity.clone().unwrap_or_default();
        let req_aff: Vec<PodAffinityTerm> = aff
            .pod_affinity
            .and_then(|a| a.required_during_scheduling_ignored_during_execution)
            .unwrap_or_default();
        let affinity: Vec<AffinityTerm> = req_aff
            .iter()
            .map(|t| AffinityTerm {
                key: t.topology_key.clone(),
                values: domains(t),
            })
            .collect();
        let affinity_first = !affinity.is_empty()
            && affinity.iter().all(|t| t.values.is_empty())
            && req_aff.iter().all(|t| term_matches(t, &pod.namespace, pod));
        let anti_affinity = aff
            .pod_anti_affinity
            .and_then(|a| a.required_during_scheduling_ignored_during_execution)
            .unwrap_or_default()
            .iter()
            .map(|t| AffinityTerm {
                key: t.topology_key.clone(),
                values: domains(t),
            })
            .collect();
        let mut existing_anti = Vec::new();
        for uid in &cache.anti_affinity_pods {
            let Some(other) = cache.pods.get(uid).filter(|p| !p.deleting) else {
                continue;
            };
            let Some(node) = cache.nodes.get(&other.node_name) else {
                continue;
            };
            let terms = other
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                });
            for t in terms.into_iter().flatten() {
                if term_matches(t, &other.namespace, pod) {
                    if let Some(v) = node.labels.get(&t.topology_key) {
                        existing_anti.push((t.topology_key.clone(), v.clone()));
                    }
                }
            }
        }
        let mut p = Prepared {
            pod,
            spec,
            tolerations,
            pre_filter,
            volume_affinity,
            affinity,
            affinity_first,
            anti_affinity,
            existing_anti,
            spread: Vec::new(),
            nominated: HashMap::new(),
        };
        let constraints = p
            .spec
            .topology_spread_constraints
            .clone()
            .unwrap_or_default();
        p.spread = constraints
            .iter()
            .filter(|c| c.when_unsatisfiable == "DoNotSchedule")
            .map(|c| p.spread_state(c, cache))
            .collect();
        for (node, other) in nominated {
            if other.uid != pod.uid && other.priority >= pod.priority {
                let e = p.nominated.entry(node.clone()).or_default();
                e.0.add(&other.requests);
                e.1 += 1;
            }
        }
        p
    }

    /// Does the pod's nodeSelector and required node affinity admit `node`?
    pub fn node_affinity_ok(&self, node: &NodeInfo) -> bool {
        if let Some(sel) = &self.spec.node_selector {
            if sel.iter().any(|(k, v)| node.labels.get(k) != Some(v)) {
                return false;
            }
        }
        let required = self
            .spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            });
        required.is_none_or(|r| matching::node_selector(r, &node.name, &node.labels))
    }

    fn spread_selector_matches(&self, c: &TopologySpreadConstraint, labels: &Labels) -> bool {
        matching::label_selector(c.label_selector.as_ref(), labels)
            && c.match_label_keys.iter().flatten().all(|k| {
                self.pod
                    .labels
                    .get(k)
                    .is_none_or(|v| labels.get(k) == Some(v))
            })
    }

    fn spread_state(&self, c: &TopologySpreadConstraint, cache: &Cache) -> Spread {
        let key = c.topology_key.clone();
        let eligible = |n: &NodeInfo| n.labels.contains_key(&key) && self.node_affinity_ok(n);
        let mut counts: HashMap<String, i64> = HashMap::new();
        for n in cache.nodes.values().filter(|n| eligible(n)) {
            if let Some(v) = n.labels.get(&key) {
                counts.entry(v.clone()).or_insert(0);
            }
        }
        for p in cache.pods.values() {
            if p.deleting || p.namespace != self.pod.namespace {
                continue;
            }
            let Some(n) = cache.nodes.get(&p.node_name).filter(|n| eligible(n)) else {
                continue;
            };
            if self.spread_selector_matches(c, &p.labels) {
                if let Some(v) = n.labels.get(&key) {
                    *counts.entry(v.clone()).or_insert(0) += 1;
                }
            }
        }
        let min_domains = c.min_domains.unwrap_or(1).max(1) as usize;
        let min = if counts.len() < min_domains {
            0
        } else {
            counts.values().copied().min().unwrap_or(0)
        };
        Spread {
            key,
            max_skew: i64::from(c.max_skew.max(1)),
            counts,
            min,
            self_match: i64::from(self.spread_selector_matches(c, &self.pod.labels)),
        }
    }

    pub fn tolerations(&self) -> &[Toleration] {
        &self.tolerations
    }

    pub fn spec(&self) -> &PodSpec {
        &self.spec
    }

    /// Run every filter against `node`; the first failure decides.
    pub fn filter(&self, node: &NodeInfo) -> Result<(), Failure> {
        if node.unschedulable {
            let t = Taint {
                key: UNSCHEDULABLE_TAINT.into(),
                effect: "NoSchedule".into(),
                value: None,
                time_added: None,
            };
            if !self
                .tolerations
                .iter()
                .any(|tol| matching::tolerates(tol, &t))
            {
                return Err(unresolvable("node(s) were unschedulable"));
            }
        }
        if let Some(want) = self.spec.node_name.as_deref().filter(|n| !n.is_empty()) {
            if want != node.name {
                return Err(unresolvable("node(s) didn't match the requested node name"));
            }
        }
        if let Some(t) = matching::untolerated(
            &node.taints,
            &self.tolerations,
            &["NoSchedule", "NoExecute"],
        ) {
            return Err(unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or_default()
            )));
        }
        if !self.node_affinity_ok(node) {
            return Err(unresolvable(
                "node(s) didn't match Pod's node affinity/selector",
            ));
        }
        if self.ports_conflict(node) {
            return Err(unschedulable(
                "node(s) didn't have free ports for the requested pod ports",
            ));
        }
        self.fit(node)?;
        if self
            .volume_affinity
            .iter()
            .any(|sel| !matching::node_selector(sel, &node.name, &node.labels))
        {
            return Err(unresolvable("node(s) had volume node affinity conflict"));
        }
        self.spread_ok(node)?;
        self.inter_pod_ok(node)
    }

    fn ports_conflict(&self, node: &NodeInfo) -> bool {
        self.pod.host_ports.iter().any(|(proto, ip, port)| {
            node.used_ports.iter().any(|(p2, ip2, port2)| {
                port == port2 && proto == p2 && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0")
            })
        })
    }

    fn fit(&self, node: &NodeInfo) -> Result<(), Failure> {
        let (extra, extra_pods) = self.nominated.get(&node.name).cloned().unwrap_or_default();
        let mut reasons = Vec::new();
        // A request beyond the node's whole allocatable cannot be helped by preemption
        // (upstream marks it UnschedulableAndUnresolvable).
        let mut resolvable = true;
        if node.pods.len() as i64 + extra_pods + 1 > node.allowed_pods {
            reasons.push("Too many pods".to_string());
        }
        let r = &self.pod.requests;
        let used = &node.requested;
        let a = &node.allocatable;
        let mut check = |name: &str, want: i64, have: i64, taken: i64| {
            if want > 0 && have < taken.saturating_add(want) {
                reasons.push(format!("Insufficient {name}"));
                if want > have {
                    resolvable = false;
                }
            }
        };
        check(
            "cpu",
            r.milli_cpu,
            a.milli_cpu,
            used.milli_cpu + extra.milli_cpu,
        );
        check("memory", r.memory, a.memory, used.memory + extra.memory);
        check(
            "ephemeral-storage",
            r.ephemeral_storage,
            a.ephemeral_storage,
            used.ephemeral_storage + extra.ephemeral_storage,
        );
        for (name, want) in &r.scalar {
            let have = a.scalar.get(name).copied().unwrap_or(0);
            let taken = used.scalar.get(name).copied().unwrap_or(0)
                + extra.scalar.get(name).copied().unwrap_or(0);
            check(name, *want, have, taken);
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(Failure {
                reasons,
                resolvable,
            })
        }
    }

    fn spread_ok(&self, node: &NodeInfo) -> Result<(), Failure> {
        for s in &self.spread {
            let Some(v) = node.labels.get(&s.key) else {
                return Err(unresolvable(
                    "node(s) didn't match pod topology spread constraints (missing required label)",
                ));
            };
            let here = s.counts.get(v).copied().unwrap_or(0);
            if here + s.self_match - s.min > s.max_skew {
                return Err(unschedulable(
                    "node(s) didn't match pod topology spread constraints",
                ));
            }
        }
        Ok(())
    }

    /// Upstream's order: the pod's affinity, its anti-affinity, then placed pods'
    /// anti-affinity against it.
    fn inter_pod_ok(&self, node: &NodeInfo) -> Result<(), Failure> {
        if !self.affinity_first {
            for t in &self.affinity {
                if !node
                    .labels
                    .get(&t.key)
                    .is_some_and(|v| t.values.contains(v))
                {
                    return Err(unresolvable("node(s) didn't match pod affinity rules"));
                }
            }
        }
        for t in &self.anti_affinity {
            if node
                .labels
                .get(&t.key)
                .is_some_and(|v| t.values.contains(v))
            {
                return Err(unschedulable(
                    "node(s) didn't match pod anti-affinity rules",
                ));
            }
        }
        if self
            .existing_anti
            .iter()
            .any(|(k, v)| node.labels.get(k) == Some(v))
        {
            return Err(unschedulable(
                "node(s) didn't satisfy existing pods anti-affinity rules",
            ));
        }
        Ok(())
    }
}

/// How many feasible nodes to look for before scoring (upstream's adaptive
/// `percentageOfNodesToScore`: 50 % minus 1 % per 125 nodes, at least 5 %, at least 100 nodes).
pub fn nodes_to_find(total: usize) -> usize {
    if total < 100 {
        return total;
    }
    let pct = (50i64 - total as i64 / 125).max(5) as usize;
    (total * pct / 100).max(100)
}

/// Upstream's FitError text: `0/N nodes are available: <prefilter>. <n reason, ...>.`
pub fn fit_error(
    total: usize,
    pre_filter: Option<&str>,
    reasons: &BTreeMap<String, usize>,
) -> String {
    let mut msg = format!("0/{total} nodes are available:");
    if let Some(p) = pre_filter {
        msg.push_str(&format!(" {p}."));
    }
    let mut hist: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    hist.sort();
    if !hist.is_empty() {
        msg.push_str(&format!(" {}.", hist.join(", ")));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_shape() {
        let mut r = BTreeMap::new();
        r.insert("Insufficient cpu".to_string(), 2);
        r.insert(
            "node(s) had untolerated taint {dedicated: x}".to_string(),
            1,
        );
        assert_eq!(
            fit_error(3, None, &r),
            "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: x}, 2 Insufficient cpu."
        );
        assert_eq!(nodes_to_find(50), 50);
        assert_eq!(nodes_to_find(5000), 500);
        assert_eq!(nodes_to_find(200), 100);
    }
}
