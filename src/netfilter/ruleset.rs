//! The desired contents of one nftables table, as plain data: chains with their rules, sets
//! (and maps) with their elements. The service proxy and the NetworkPolicy engine compute
//! one of these with a pure function; [`super::applier::Applier`] turns the difference
//! between two of them into one netlink transaction.
//!
//! [`Parts`] is the same table cut into independent pieces — a fixed `base` (hooks, dispatch
//! chains, the named maps) and one part per object (a Service, a node's hostPorts) — so that
//! a sync can compare pieces by pointer and diff only those that changed, instead of the
//! whole table (upstream kube-proxy's partial sync). Invariants a [`Parts`] keeps:
//! - chain names and the names of sets a part defines are unique across parts (each carries
//!   its owner's identity);
//! - a part's entry for a set that `base` defines only contributes elements to it; if two
//!   parts contribute the same key, the first part in name order wins, as in
//!   [`Parts::materialize`] — so the incremental and the full diff agree.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::batch::Element;
use super::{ChainHook, Expr, Reg, SetSpec, Verdict};

/// A rule: plain expressions, or expressions ending in an anonymous verdict map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Plain(Vec<Expr>),
    Vmap {
        prefix: Vec<Expr>,
        sreg: Reg,
        key_type: u32,
        key_len: u32,
        elems: Vec<Element>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub hook: Option<ChainHook>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub spec: SetSpec,
    pub elements: BTreeMap<Vec<u8>, Option<Verdict>>,
}

/// The desired contents of one table (or of one part of it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    pub chains: BTreeMap<String, Chain>,
    pub sets: BTreeMap<String, Set>,
}

impl Ruleset {
    pub fn chain(&mut self, name: &str, hook: Option<ChainHook>, rules: Vec<Rule>) {
        self.chains.insert(name.to_string(), Chain { hook, rules });
    }

    pub fn set(&mut self, spec: SetSpec) {
        self.sets.insert(
            spec.name.clone(),
            Set {
                spec,
                elements: BTreeMap::new(),
            },
        );
    }

    /// Add an element to a set this ruleset holds (ignored otherwise).
    pub fn elem(&mut self, set: &str, key: Vec<u8>, v: Option<Verdict>) {
        if let Some(s) = self.sets.get_mut(set) {
            s.elements.insert(key, v);
        }
    }

    /// An empty ruleset holding `base`'s set specs (no elements), for building a part that
    /// contributes elements to them; [`Ruleset::prune_foreign`] drops the unused ones.
    pub fn with_sets_of(base: &Ruleset) -> Ruleset {
        Ruleset {
            chains: BTreeMap::new(),
            sets: base
                .sets
                .iter()
                .map(|(n, s)| {
                    (
                        n.clone(),
                        Set {
                            spec: s.spec.clone(),
                            elements: BTreeMap::new(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// Drop the sets `base` defines that this part contributes no element to.
    pub fn prune_foreign(&mut self, base: &Ruleset) {
        self.sets
            .retain(|n, s| !(base.sets.contains_key(n) && s.elements.is_empty()));
    }
}

/// One table cut into a fixed base and independently changing parts (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Parts {
    pub base: Arc<Ruleset>,
    pub parts: BTreeMap<String, Arc<Ruleset>>,
}

impl Parts {
    /// A table of one piece (no partial diff beyond the chain/element level).
    pub fn whole(r: Ruleset) -> Parts {
        Parts {
            base: Arc::new(r),
            parts: BTreeMap::new(),
        }
    }

    /// The whole table these parts make.
    pub fn materialize(&self) -> Ruleset {
        let mut r = (*self.base).clone();
        for p in self.parts.values() {
            merge_part(&mut r, &self.base, p);
        }
        r
    }
}

/// Add part `p`'s chains, own sets and contributed elements to `r` (first contributor of a
/// key wins; `base` tells which sets are shared).
fn merge_part(r: &mut Ruleset, base: &Ruleset, p: &Ruleset) {
    for (n, c) in &p.chains {
        r.chains.entry(n.clone()).or_insert_with(|| c.clone());
    }
    for (n, s) in &p.sets {
        if base.sets.contains_key(n) {
            if let Some(t) = r.sets.get_mut(n) {
                for (k, v) in &s.elements {
                    t.elements.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        } else {
            r.sets.entry(n.clone()).or_insert_with(|| s.clone());
        }
    }
}
