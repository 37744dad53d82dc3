//! The scheduling queue, as upstream's PriorityQueue: an *active* heap (highest priority
//! first, then oldest), a *backoff* queue (pods that failed recently wait 1 s doubling to 10 s
//! per attempt) and an *unschedulable* set of pods that wait for a cluster change.
//!
//! Invariants: a pending pod is in exactly one of active / backoff / unschedulable / in-flight
//! (popped, being scheduled); a cluster change moves unschedulable pods to backoff (or active
//! once their back-off has passed), so however many events arrive, each pod is retried at most
//! once per back-off period — never a hot loop. Unschedulable pods are also retried after
//! 5 minutes without any change (upstream's `podMaxInUnschedulablePodsDuration`).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

#[derive(Debug)]
struct Entry {
    priority: i32,
    seq: u64,
    attempts: u32,
    failed_at: Option<Instant>,
    at: Where,
}

#[derive(Debug, Default)]
pub struct Queue {
    entries: HashMap<String, Entry>,
    active: BinaryHeap<(i32, Reverse<u64>, String)>,
    backoff: BTreeSet<(Instant, u64, String)>,
    seq: u64,
}

fn backoff_for(attempts: u32) -> Duration {
    let shift = attempts.saturating_sub(1).min(8);
    (INITIAL_BACKOFF * (1u32 << shift)).min(MAX_BACKOFF)
}

impl Queue {
    /// A new pending pod (or a known one: nothing changes).
    pub fn add(&mut self, uid: &str, priority: i32) {
        if self.entries.contains_key(uid) {
            return;
        }
        self.seq += 1;
        self.entries.insert(
            uid.to_string(),
            Entry {
                priority,
                seq: self.seq,
                attempts: 0,
                failed_at: None,
                at: Where::Active,
            },
        );
        self.active
            .push((priority, Reverse(self.seq), uid.to_string()));
    }

    /// Forget a pod (bound elsewhere, deleted).
    pub fn remove(&mut self, uid: &str) {
        // Heap and backoff entries of removed pods are skipped when popped.
        self.entries.remove(uid);
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.entries.contains_key(uid)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The next pod to schedule, moving due back-offs to active first.
    pub fn pop(&mut self, now: Instant) -> Option<String> {
        self.flush_backoff(now);
        while let Some((_, Reverse(seq), uid)) = self.active.pop() {
            if let Some(e) = self.entries.get_mut(&uid) {
                if e.at == Where::Active && e.seq == seq {
                    e.at = Where::InFlight;
                    return Some(uid);
                }
            }
        }
        None
    }

    fn push_active(&mut self, uid: &str) {
        self.seq += 1;
        if let Some(e) = self.entries.get_mut(uid) {
            e.at = Where::Active;
            e.seq = self.seq;
            self.active
                .push((e.priority, Reverse(self.seq), uid.to_string()));
        }
    }

    fn flush_backoff(&mut self, now: Instant) {
        while let Some(first) = self.backoff.first().cloned() {
            if first.0 > now {
                break;
            }
            self.backoff.remove(&first);
            let (_, seq, uid) = first;
            if self
                .entries
                .get(&uid)
                .is_some_and(|e| e.at == Where::Backoff && e.seq == seq)
            {
                self.push_active(&uid);
            }
        }
    }

    /// When the next back-off ends (the main loop sleeps until then).
    pub fn next_backoff(&self) -> Option<Instant> {
        self.backoff.first().map(|b| b.0)
    }

    /// A popped pod that did not fit: wait for a cluster change.
    pub fn unschedulable(&mut self, uid: &str, now: Instant) {
        if let Some(e) = self.entries.get_mut(uid) {
            e.attempts += 1;
            e.failed_at = Some(now);
            e.at = Where::Unschedulable;
        }
    }

    /// A popped pod whose attempt failed for a transient reason (API error): back off.
    pub fn retry(&mut self, uid: &str, now: Instant) {
        if let Some(e) = self.entries.get_mut(uid) {
            e.attempts += 1;
            e.failed_at = Some(now);
        }
        self.backoff_or_activate(uid, now);
    }

    fn backoff_or_activate(&mut self, uid: &str, now: Instant) {
        self.seq += 1;
        let seq = self.seq;
        let Some(e) = self.entries.get_mut(uid) else {
            return;
        };
        let until = e.failed_at.unwrap_or(now) + backoff_for(e.attempts);
        if until <= now {
            self.push_active(uid);
            return;
        }
        e.at = Where::Backoff;
        e.seq = seq;
        self.backoff.insert((until, seq, uid.to_string()));
    }

    /// A cluster change that may let unschedulable pods fit.
    pub fn cluster_changed(&mut self, now: Instant) {
        let waiting: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.at == Where::Unschedulable)
            .map(|(u, _)| u.clone())
            .collect();
        for uid in waiting {
            self.backoff_or_activate(&uid, now);
        }
    }

    /// Retry pods unschedulable for longer than [`MAX_UNSCHEDULABLE`].
    pub fn flush_stale(&mut self, now: Instant) {
        let stale: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.at == Where::Unschedulable
                    && e.failed_at
                        .is_some_and(|f| now.duration_since(f) >= MAX_UNSCHEDULABLE)
            })
            .map(|(u, _)| u.clone())
            .collect();
        for uid in stale {
            self.push_active(&uid);
        }
    }

    /// Is the pod being scheduled right now (popped, not yet requeued)?
    pub fn in_flight(&self, uid: &str) -> bool {
        self.entries
            .get(uid)
            .is_some_and(|e| e.at == Where::InFlight)
    }

    /// Is any pod waiting in the active heap?
    pub fn has_active(&self) -> bool {
        self.entries.values().any(|e| e.at == Where::Active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_then_age_and_backoff() {
        let mut q = Queue::default();
        let t = Instant::now();
        q.add("low", 0);
        q.add("high", 10);
        q.add("low2", 0);
        assert_eq!(q.pop(t).as_deref(), Some("high"));
        assert_eq!(q.pop(t).as_deref(), Some("low"));
        q.unschedulable("low", t);
        // A change moves it to backoff (1 s), not straight back.
        q.cluster_changed(t);
        assert_eq!(q.pop(t).as_deref(), Some("low2"));
        assert_eq!(q.pop(t), None);
        assert!(q.next_backoff().is_some());
        assert_eq!(
            q.pop(t + Duration::from_millis(1100)).as_deref(),
            Some("low")
        );
        // Unschedulable without a change: stays put.
        q.unschedulable("low", t);
        assert_eq!(q.pop(t + Duration::from_secs(60)), None);
        q.flush_stale(t + MAX_UNSCHEDULABLE);
        assert_eq!(q.pop(t + MAX_UNSCHEDULABLE).as_deref(), Some("low"));
        assert_eq!(backoff_for(1), Duration::from_secs(1));
        assert_eq!(backoff_for(3), Duration::from_secs(4));
        assert_eq!(backoff_for(10), MAX_BACKOFF);
    }
}
