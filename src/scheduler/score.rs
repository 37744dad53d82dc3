//! Score plugins: rank the feasible nodes, each plugin 0..=100 times its weight, as upstream's
//! defaults — NodeResourcesFit/LeastAllocated (1), NodeResourcesBalancedAllocation (1),
//! ImageLocality (1), NodeAffinity preferred terms (2), TaintToleration PreferNoSchedule (3),
//! InterPodAffinity preferred terms (2) and spreading of one controller's replicas across
//! nodes and zones (2, upstream's default PodTopologySpread constraints: hostname and zone).
//!
//! Simplification: ImageLocality's spread factor counts the feasible nodes holding the image
//! rather than every node.

use std::collections::HashMap;

use super::cache::{Cache, NodeInfo};
use super::filter::Prepared;
use crate::api::matching;

pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const MB: i64 = 1024 * 1024;

/// Scale raw values to 0..=100 (highest raw = 100), or reversed (lowest raw = 100).
fn normalize(raw: &mut [i64], reverse: bool) {
    let max = raw.iter().copied().max().unwrap_or(0);
    let min = raw.iter().copied().min().unwrap_or(0);
    for v in raw.iter_mut() {
        *v = if max == min {
            if reverse || max > 0 {
                100
            } else {
                0
            }
        } else if reverse {
            (max - *v) * 100 / (max - min)
        } else {
            (*v - min) * 100 / (max - min)
        };
    }
}

fn least_allocated(p: &Prepared, n: &NodeInfo) -> i64 {
    let score = |alloc: i64, used: i64| {
        if alloc <= 0 || used > alloc {
            0
        } else {
            (alloc - used) * 100 / alloc
        }
    };
    let cpu = score(
        n.allocatable.milli_cpu,
        n.nonzero_requested.0 + p.pod.nonzero.0,
    );
    let mem = score(
        n.allocatable.memory,
        n.nonzero_requested.1 + p.pod.nonzero.1,
    );
    (cpu + mem) / 2
}

fn balanced(p: &Prepared, n: &NodeInfo) -> i64 {
    let frac = |alloc: i64, used: i64| {
        if alloc <= 0 {
            1.0
        } else {
            (used as f64 / alloc as f64).min(1.0)
        }
    };
    let c = frac(
        n.allocatable.milli_cpu,
        n.requested.milli_cpu + p.pod.requests.milli_cpu,
    );
    let m = frac(
        n.allocatable.memory,
        n.requested.memory + p.pod.requests.memory,
    );
    let std = (c - m).abs() / 2.0;
    ((1.0 - std) * 100.0) as i64
}

/// Score every node in `nodes` (all feasible); returns the totals in the same order.
pub fn score(p: &Prepared, cache: &Cache, nodes: &[&NodeInfo]) -> Vec<i64> {
    let len = nodes.len();
    let mut total: Vec<i64> = nodes
        .iter()
        .map(|n| least_allocated(p, n) + balanced(p, n))
        .collect();
    let spec = p.spec();

    // ImageLocality.
    let images: Vec<&str> = spec
        .containers
        .iter()
        .filter_map(|c| c.image.as_deref())
        .collect();
    if nodes.iter().any(|n| !n.images.is_empty()) && !images.is_empty() {
        let holders: HashMap<&str, i64> = images
            .iter()
            .map(|i| {
                (
                    *i,
                    nodes.iter().filter(|n| n.images.contains_key(*i)).count() as i64,
                )
            })
            .collect();
        let (min, max) = (23 * MB, 1000 * MB * images.len() as i64);
        for (i, n) in nodes.iter().enumerate() {
            let sum: i64 = images
                .iter()
                .filter_map(|img| {
                    n.images
                        .get(*img)
                        .map(|size| size * holders.get(img).copied().unwrap_or(0) / len as i64)
                })
                .sum();
            total[i] += (sum.clamp(min, max) - min) * 100 / (max - min);
        }
    }

    let affinity = spec.affinity.clone().unwrap_or_default();
    // NodeAffinity preferred terms.
    if let Some(pref) = affinity.node_affinity.as_ref().and_then(|a| {
        a.preferred_during_scheduling_ignored_during_execution
            .as_ref()
    }) {
        let mut raw: Vec<i64> = nodes
            .iter()
            .map(|n| {
                pref.iter()
                    .filter(|t| {
                        let sel = k8s_openapi::api::core::v1::NodeSelector {
                            node_selector_terms: vec![t.preference.clone()],
                        };
                        matching::node_selector(&sel, &n.name, &n.labels)
                    })
                    .map(|t| i64::from(t.weight))
                    .sum()
            })
            .collect();
        normalize(&mut raw, false);
        add(&mut total, &raw, 2);
    }

    // TaintToleration: fewer untolerated PreferNoSchedule taints is better.
    let mut raw: Vec<i64> = nodes
        .iter()
        .map(|n| {
            n.taints
                .iter()
                .filter(|t| {
                    t.effect == "PreferNoSchedule"
                        && !p
                            .tolerations()
                            .iter()
                            .any(|tol| matching::tolerates(tol, t))
                })
                .count() as i64
        })
        .collect();
    normalize(&mut raw, true);
    add(&mut total, &raw, 3);

    // InterPodAffinity preferred terms of the incoming pod.
    let pref_aff = affinity
        .pod_affinity
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
        .unwrap_or_default();
    let pref_anti = affinity
        .pod_anti_affinity
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
        .unwrap_or_default();
    if !pref_aff.is_empty() || !pref_anti.is_empty() {
        let weighted = pref_aff
            .iter()
            .map(|t| (&t.pod_affinity_term, i64::from(t.weight)))
            .chain(
                pref_anti
                    .iter()
                    .map(|t| (&t.pod_affinity_term, -i64::from(t.weight))),
            );
        // topology key → value → accumulated weight.
        let mut by_domain: HashMap<(String, String), i64> = HashMap::new();
        for (term, w) in weighted {
            for other in cache.pods.values().filter(|o| !o.deleting) {
                let ns_ok = match &term.namespaces {
                    Some(l) if !l.is_empty() => l.contains(&other.namespace),
                    _ => other.namespace == p.pod.namespace,
                };
                if !ns_ok || !matching::label_selector(term.label_selector.as_ref(), &other.labels)
                {
                    continue;
                }
                if let Some(v) = cache
                    .nodes
                    .get(&other.node_name)
                    .and_then(|n| n.labels.get(&term.topology_key))
                {
                    *by_domain
                        .entry((term.topology_key.clone(), v.clone()))
                        .or_default() += w;
                }
            }
        }
        let mut raw: Vec<i64> = nodes
            .iter()
            .map(|n| {
                by_domain
                    .iter()
                    .filter(|((k, v), _)| n.labels.get(k) == Some(v))
                    .map(|(_, w)| *w)
                    .sum()
            })
            .collect();
        normalize(&mut raw, false);
        add(&mut total, &raw, 2);
    }

    // Spreading replicas of the pod's controller across nodes (and zones, when labelled):
    // counts kept by the cache per node and per zone, so this is one lookup per node (an
    // empty map on most nodes) and a scan of a few zones.
    if let Some(owner) = p.pod.owner.as_ref() {
        let mut raw: Vec<i64> = nodes
            .iter()
            .map(|n| n.owners.get(owner).copied().unwrap_or(0))
            .collect();
        normalize(&mut raw, true);
        let per_zone: Vec<(&str, i64)> = cache
            .owner_zones
            .get(owner)
            .map(|z| z.iter().map(|(k, v)| (k.as_str(), *v)).collect())
            .unwrap_or_default();
        if !per_zone.is_empty() {
            let mut zraw: Vec<i64> = nodes
                .iter()
                .map(|n| {
                    n.zone.as_deref().map_or(0, |z| {
                        per_zone
                            .iter()
                            .find(|(k, _)| *k == z)
                            .map_or(0, |(_, c)| *c)
                    })
                })
                .collect();
            normalize(&mut zraw, true);
            // Upstream weighs the zone spread 2/3 and the node spread 1/3.
            for (r, z) in raw.iter_mut().zip(zraw) {
                *r = (*r + 2 * z) / 3;
            }
        }
        add(&mut total, &raw, 2);
    }
    total
}

fn add(total: &mut [i64], raw: &[i64], weight: i64) {
    for (t, r) in total.iter_mut().zip(raw) {
        *t += r * weight;
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalizes() {
        let mut v = vec![0, 5, 10];
        normalize(&mut v, false);
        assert_eq!(v, vec![0, 50, 100]);
        let mut v = vec![0, 5, 10];
        normalize(&mut v, true);
        assert_eq!(v, vec![100, 50, 0]);
        let mut v = vec![3, 3];
        normalize(&mut v, true);
        assert_eq!(v, vec![100, 100]);
    }
}
