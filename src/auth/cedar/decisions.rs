//! The decision cache: evaluated decisions by request key, bounded in bytes.
//!
//! Two generations, each allowed half the budget: entries go into the young one; when it is
//! full it becomes the old one (the previous old one is dropped) and a hit in the old
//! generation moves the entry back to the young one. That is an approximate LRU with O(1)
//! work per operation and a hard bound: at most [`BUDGET`] bytes of keys and decisions
//! whatever the keys are. Keys longer than [`MAX_KEY`] are not cached at all: only
//! attacker-chosen names or paths get that long, and evaluating costs microseconds.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::auth::Decision;

/// Bytes of keys and decisions kept, over both generations.
pub const BUDGET: usize = 16 << 20;
/// Longer keys are evaluated every time instead of cached.
pub const MAX_KEY: usize = 1024;
/// Fixed cost charged per entry (map slot, allocations' headers).
const ENTRY_OVERHEAD: usize = 96;

#[derive(Default)]
pub struct Decisions {
    inner: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    young: HashMap<String, Decision>,
    young_bytes: usize,
    old: HashMap<String, Decision>,
    old_bytes: usize,
}

fn cost(key: &str, d: &Decision) -> usize {
    ENTRY_OVERHEAD
        + key.len()
        + d.reason().len()
        + d.policies().iter().map(|p| p.len() + 24).sum::<usize>()
}

impl Generations {
    fn insert(&mut self, key: String, d: Decision) {
        let c = cost(&key, &d);
        if self.young_bytes + c > BUDGET / 2 {
            self.old = std::mem::take(&mut self.young);
            self.old_bytes = self.young_bytes;
            self.young_bytes = 0;
        }
        self.young_bytes += c;
        if let Some(prev) = self.young.insert(key, d) {
            // Replaced (two requests raced on the same key): charged twice, harmless.
            drop(prev);
        }
    }
}

impl Decisions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Decision> {
        let mut g = self.lock();
        if let Some(d) = g.young.get(key) {
            return Some(d.clone());
        }
        let (key, d) = g.old.remove_entry(key)?;
        g.old_bytes = g.old_bytes.saturating_sub(cost(&key, &d));
        g.insert(key, d.clone());
        Some(d)
    }

    pub fn insert(&self, key: String, d: Decision) {
        if key.len() > MAX_KEY {
            return;
        }
        self.lock().insert(key, d);
    }

    /// Bytes currently charged (both generations).
    pub fn bytes(&self) -> usize {
        let g = self.lock();
        g.young_bytes + g.old_bytes
    }

    /// Entries currently kept.
    pub fn entries(&self) -> usize {
        let g = self.lock();
        g.young.len() + g.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_budget_and_keeps_recent_entries() {
        let cache = Decisions::default();
        let d = Decision::deny(Vec::new(), "no policy permits it".into());
        for i in 0..200_000 {
            cache.insert(format!("{i:0>500}"), d.clone());
            if i % 10_000 == 0 {
                assert!(
                    cache.get(&format!("{:0>500}", 0)).is_some(),
                    "a hot key stays"
                );
            }
            assert!(cache.bytes() <= BUDGET);
        }
        assert!(cache.get(&format!("{:0>500}", 199_999)).is_some());
        assert!(cache.get(&format!("{:0>500}", 1)).is_none());
    }

    #[test]
    fn long_keys_are_not_kept() {
        let cache = Decisions::default();
        cache.insert("x".repeat(MAX_KEY + 1), Decision::allow(Vec::new()));
        assert_eq!(cache.entries(), 0);
    }
}
