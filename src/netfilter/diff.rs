//! From "what is applied" and "what is desired" to the nftables operations that turn one into
//! the other (a partial sync).
//!
//! Operations come out in dependency order — sets and chains are created before rules and
//! map elements refer to them; rules are flushed and elements deleted before the chains and
//! sets they refer to are deleted — so an incremental sync is one transaction, and a cold
//! start may be cut between any two operations into several transactions (each commits a
//! consistent prefix).
//!
//! Two levels: [`diff`] compares two whole [`Ruleset`]s chain by chain and element by
//! element; [`Applied::diff_parts`] first compares [`Parts`] by pointer and runs [`diff`] on
//! views holding only the changed parts (and the elements they touch), so its cost follows
//! the size of the change, not of the table — one Service changed among 10,000 costs the
//! same as among 10.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::batch::Element;
use super::ruleset::{Parts, Rule, Ruleset, Set};
use super::{ChainHook, SetSpec, Verdict};

/// One change to the table.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    DestroyTable,
    AddTable,
    AddSet(SetSpec),
    AddChain(String, Option<ChainHook>),
    DelElements(String, Vec<Element>),
    FlushChain(String),
    AddRule(String, Rule),
    AddElements(String, Vec<Element>),
    DestroyChain(String),
    DestroySet(String),
}

/// Counts of what one sync changed (tests, logs and benchmarks read them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub cold: bool,
    pub transactions: usize,
    pub messages: usize,
    /// Parts compared unequal by pointer (0 on a cold start).
    pub parts_changed: usize,
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

/// Who contributes which value to one element of a shared set, by part name (`None`: base).
type Contributors = BTreeMap<Option<String>, Option<Verdict>>;

/// What was applied, cut into parts, with an index of the shared-set elements by key so a
/// partial diff resolves contested keys without walking the other parts.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    parts: Parts,
    shared: HashMap<(String, Vec<u8>), Contributors>,
}

/// The elements `r` gives to the sets `base` defines.
fn contributions<'a>(
    base: &'a Ruleset,
    r: &'a Ruleset,
) -> impl Iterator<Item = (&'a String, &'a Vec<u8>, &'a Option<Verdict>)> + 'a {
    r.sets
        .iter()
        .filter(move |(n, _)| base.sets.contains_key(*n))
        .flat_map(|(n, s)| s.elements.iter().map(move |(k, v)| (n, k, v)))
}

impl Applied {
    /// The state after applying `parts` in full.
    pub fn new(parts: Parts) -> Applied {
        let mut a = Applied {
            parts: Parts {
                base: parts.base.clone(),
                parts: BTreeMap::new(),
            },
            shared: HashMap::new(),
        };
        for (n, k, v) in contributions(&parts.base, &parts.base) {
            a.shared
                .entry((n.clone(), k.clone()))
                .or_default()
                .insert(None, v.clone());
        }
        for (name, p) in &parts.parts {
            a.add_part(name, p.clone());
        }
        a
    }

    fn add_part(&mut self, name: &str, p: Arc<Ruleset>) {
        for (n, k, v) in contributions(&self.parts.base, &p) {
            self.shared
                .entry((n.clone(), k.clone()))
                .or_default()
                .insert(Some(name.to_string()), v.clone());
        }
        self.parts.parts.insert(name.to_string(), p);
    }

    fn remove_part(&mut self, name: &str) {
        let Some(p) = self.parts.parts.remove(name) else {
            return;
        };
        let key = Some(name.to_string());
        for (n, k, _) in contributions(&self.parts.base, &p) {
            let id = (n.clone(), k.clone());
            if let Some(c) = self.shared.get_mut(&id) {
                c.remove(&key);
                if c.is_empty() {
                    self.shared.remove(&id);
                }
            }
        }
    }

    /// Operations from this state to `desired`: a full diff when the base changed, else a
    /// diff of only the parts that are not the same allocation as before. Returns the names
    /// of the changed parts for [`Applied::commit`].
    pub fn diff_parts(&self, desired: &Parts) -> (Vec<Op>, SyncStats, Vec<String>) {
        if self.parts.parts.is_empty() && desired.parts.is_empty() {
            // A table of one piece: the chain/element diff is all there is.
            let (ops, st) = diff(Some(&self.parts.base), &desired.base);
            return (ops, st, Vec::new());
        }
        if !Arc::ptr_eq(&self.parts.base, &desired.base) && *self.parts.base != *desired.base {
            let (ops, st) = diff(Some(&self.parts.materialize()), &desired.materialize());
            return (ops, st, Vec::new());
        }
        let changed: Vec<String> = self
            .parts
            .parts
            .keys()
            .chain(desired.parts.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(
                |n| match (self.parts.parts.get(*n), desired.parts.get(*n)) {
                    (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
                    _ => true,
                },
            )
            .cloned()
            .collect();
        if changed.is_empty() {
            return (Vec::new(), SyncStats::default(), changed);
        }
        let base = &self.parts.base;
        // Views: the shared sets (specs, and only the touched elements), plus every chain and
        // set of the changed parts, before and after.
        let shells = |r: &Ruleset| -> Ruleset {
            Ruleset {
                chains: BTreeMap::new(),
                sets: r
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
        };
        let mut old = shells(base);
        let mut new = shells(base);
        let mut touched: BTreeSet<(String, Vec<u8>)> = BTreeSet::new();
        let mut incoming: HashMap<(String, Vec<u8>), Contributors> = HashMap::new();
        for n in &changed {
            let key = Some(n.clone());
            if let Some(p) = self.parts.parts.get(n) {
                merge_own(&mut old, base, p);
                for (s, k, _) in contributions(base, p) {
                    touched.insert((s.clone(), k.clone()));
                }
            }
            if let Some(p) = desired.parts.get(n) {
                merge_own(&mut new, base, p);
                for (s, k, v) in contributions(base, p) {
                    touched.insert((s.clone(), k.clone()));
                    incoming
                        .entry((s.clone(), k.clone()))
                        .or_default()
                        .insert(key.clone(), v.clone());
                }
            }
        }
        let changed_keys: BTreeSet<Option<String>> =
            changed.iter().map(|n| Some(n.clone())).collect();
        for id in &touched {
            let before = self.shared.get(id);
            let was = before.and_then(|c| c.values().next());
            let mut after: Contributors = before
                .map(|c| {
                    c.iter()
                        .filter(|(o, _)| !changed_keys.contains(*o))
                        .map(|(o, v)| (o.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(c) = incoming.get(id) {
                after.extend(c.iter().map(|(o, v)| (o.clone(), v.clone())));
            }
            let now = after.values().next();
            if let Some(v) = was {
                if let Some(s) = old.sets.get_mut(&id.0) {
                    s.elements.insert(id.1.clone(), v.clone());
                }
            }
            if let Some(v) = now {
                if let Some(s) = new.sets.get_mut(&id.0) {
                    s.elements.insert(id.1.clone(), v.clone());
                }
            }
        }
        let (ops, mut st) = diff(Some(&old), &new);
        st.parts_changed = changed.len();
        (ops, st, changed)
    }

    /// Record that `desired` is applied, after a successful [`Applied::diff_parts`] whose
    /// changed parts were `changed` (a full diff returns none: rebuild the index).
    pub fn commit(&mut self, desired: &Parts, changed: &[String]) {
        if !Arc::ptr_eq(&self.parts.base, &desired.base) {
            *self = Applied::new(desired.clone());
            return;
        }
        for n in changed {
            self.remove_part(n);
            if let Some(p) = desired.parts.get(n) {
                self.add_part(n, p.clone());
            }
        }
    }
}

/// A changed part's own chains and sets (not its contributions to shared sets).
fn merge_own(view: &mut Ruleset, base: &Ruleset, p: &Ruleset) {
    for (n, c) in &p.chains {
        view.chains.insert(n.clone(), c.clone());
    }
    for (n, s) in &p.sets {
        if !base.sets.contains_key(n) {
            view.sets.insert(n.clone(), s.clone());
        }
    }
}
