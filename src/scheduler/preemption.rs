//! Preemption (upstream's DefaultPreemption PostFilter): when a pod fits nowhere, find a node
//! where deleting lower-priority pods would let it fit, with the fewest and least important
//! victims. The caller deletes the victims gracefully and sets the preemptor's
//! `status.nominatedNodeName`; the preemptor binds when the victims are gone.
//!
//! Per node: remove every lower-priority pod, check the pod fits, then give back ("reprieve")
//! the most important victims one by one while it still fits. Nodes whose failure removing pods
//! cannot fix (taints, selectors) are skipped ("Preemption is not helpful for scheduling").
//! Node choice: lowest highest-victim priority, then lowest priority sum, then fewest victims.
//! Simplification: PodDisruptionBudgets are not consulted, and pod (anti-)affinity and spread
//! counts are not recomputed without the victims.

use std::collections::{BTreeMap, HashMap};

use super::cache::{Cache, PodInfo};
use super::filter::{fit_error, Failure, Prepared};

pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node: String,
    /// (namespace, name, uid) of each victim.
    pub victims: Vec<(String, String, String)>,
}

/// Is the pod allowed to preempt now? `Err` is the message tail.
pub fn eligible(pod: &PodInfo, cache: &Cache) -> Result<(), String> {
    let spec = pod.pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Err("not eligible due to preemptionPolicy=Never.".into());
    }
    // A pod whose earlier preemption is still terminating its victims waits for them.
    let nominated = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty());
    if let Some(node) = nominated.and_then(|n| cache.nodes.get(n)) {
        let terminating = node.pods.iter().any(|uid| {
            cache
                .pods
                .get(uid)
                .is_some_and(|p| p.deleting && p.priority < pod.priority)
        });
        if terminating {
            return Err("not eligible due to a terminating pod on the nominated node.".into());
        }
    }
    Ok(())
}

/// Find the best node to preempt on, or the `preemption: ...` message tail explaining why none.
pub fn find(
    prep: &Prepared,
    cache: &Cache,
    failures: &HashMap<String, Failure>,
) -> Result<Candidate, String> {
    let pod = prep.pod;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<((i32, i64, usize), Candidate)> = None;
    for name in &cache.node_order {
        let Some(node) = cache.nodes.get(name) else {
            continue;
        };
        if failures.get(name).is_some_and(|f| !f.resolvable) || prep.pre_filter.is_some() {
            *reasons.entry(NOT_HELPFUL.into()).or_default() += 1;
            continue;
        }
        let mut lower: Vec<&PodInfo> = node
            .pods
            .iter()
            .filter_map(|u| cache.pods.get(u))
            .filter(|p| p.priority < pod.priority && !p.deleting)
            .collect();
        let mut trial = node.clone();
        for p in &lower {
            trial.remove_pod(p);
        }
        if lower.is_empty() || prep.filter(&trial).is_err() {
            *reasons.entry(NO_VICTIMS.into()).or_default() += 1;
            continue;
        }
        // Most important first: they get the first chance to stay.
        lower.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)));
        let mut victims = Vec::new();
        for p in lower {
            trial.add_pod(p);
            if prep.filter(&trial).is_err() {
                trial.remove_pod(p);
                victims.push(p);
            }
        }
        let key = (
            victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN),
            victims.iter().map(|v| i64::from(v.priority)).sum::<i64>(),
            victims.len(),
        );
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            best = Some((
                key,
                Candidate {
                    node: name.clone(),
                    victims: victims
                        .iter()
                        .map(|v| (v.namespace.clone(), v.name.clone(), v.uid.clone()))
                        .collect(),
                },
            ));
        }
    }
    match best {
        Some((_, c)) => Ok(c),
        None => Err(fit_error(cache.nodes.len(), None, &reasons)),
    }
}
