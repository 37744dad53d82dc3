//! The live half of watches: a hub the single writer publishes committed events to, fanning
//! them out to per-watcher bounded queues.
//!
//! Invariants: events are published in revision order, once each, after they are durable; a
//! subscriber registered while the hub's last published revision is `L` receives exactly the
//! events with revision `> L` (its owner replays `(from, L]` from history), so replay plus live is
//! gap-free and duplicate-free. Publishing never blocks: a queue that would pass its limits —
//! a number of events *and* a number of bytes — marks that watcher as lagged and drops it (the
//! same trade the Kubernetes watch cache makes with slow watchers). A lagged queue is emptied
//! at once, by the publisher, so a watcher whose reader stopped polling (a client that never
//! reads its response) holds no event memory. Across all watchers the queued bytes are capped
//! too: past that cap the watcher with the largest queue is dropped first. Events are shared
//! between queues (`Arc`), so the caps count bytes as if each queue owned its events: real
//! memory is at most that.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::{Event, Revision};

/// What one watcher and all of them together may have queued before the slowest is dropped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Events per watcher.
    pub events: usize,
    /// Bytes (keys and values) per watcher; one event larger than this is still accepted by
    /// an empty queue, so a big object never lags an idle watcher.
    pub bytes: usize,
    /// Bytes over every watcher.
    pub total_bytes: usize,
}

pub(crate) struct Hub {
    inner: Mutex<HubInner>,
    limits: Limits,
    /// Bytes queued over all watchers (each queue adds and subtracts its own).
    total: Arc<AtomicUsize>,
}

struct HubInner {
    last: Revision,
    closed: bool,
    subs: Vec<Sub>,
}

struct Sub {
    prefix: String,
    queue: Arc<Queue>,
}

/// One watcher's queue, shared by the hub (producer) and the [`Subscription`] (consumer).
struct Queue {
    state: Mutex<QueueState>,
    total: Arc<AtomicUsize>,
}

#[derive(Default)]
struct QueueState {
    events: VecDeque<Arc<Event>>,
    bytes: usize,
    /// Dropped for falling behind: the consumer gets `None` and reports `WatchTooSlow`.
    lagged: bool,
    /// The hub shut down.
    closed: bool,
    /// The consumer went away; the hub forgets the queue at its next publish.
    dropped: bool,
    waker: Option<Waker>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the state half-updated in a way
    // that matters (worst case a watcher is dropped), so recover from poisoning.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The bytes an event is charged for: what it holds plus a fixed overhead per entry.
fn cost(ev: &Event) -> usize {
    64 + ev.key.len() + ev.value.len() + ev.prev_value.as_ref().map_or(0, |p| p.len())
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        lock(&self.state)
    }

    /// Empty the queue and end it; frees its events now, whoever holds the consumer.
    fn finish(&self, st: &mut QueueState) {
        st.events.clear();
        self.total.fetch_sub(st.bytes, Ordering::Relaxed);
        st.bytes = 0;
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }
}

/// The receiving end of one watcher's live queue.
pub(crate) struct Subscription {
    /// Last revision published before this subscriber was registered: replay up to here.
    pub replay_until: Revision,
    queue: Arc<Queue>,
}

impl Subscription {
    /// The next live event; `None` once the watcher was dropped (see [`Self::lagged`]) or the
    /// hub closed.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Arc<Event>>> {
        let mut st = self.queue.lock();
        if st.lagged || st.closed {
            return Poll::Ready(None);
        }
        if let Some(ev) = st.events.pop_front() {
            let c = cost(&ev);
            st.bytes -= c;
            self.queue.total.fetch_sub(c, Ordering::Relaxed);
            return Poll::Ready(Some(ev));
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Whether the hub dropped this watcher for falling behind.
    pub fn lagged(&self) -> bool {
        self.queue.lock().lagged
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut st = self.queue.lock();
        st.dropped = true;
        self.queue.finish(&mut st);
    }
}

impl Hub {
    pub fn new(last: Revision, limits: Limits) -> Self {
        Hub {
            inner: Mutex::new(HubInner {
                last,
                closed: false,
                subs: Vec::new(),
            }),
            limits: Limits {
                events: limits.events.max(1),
                bytes: limits.bytes.max(1),
                total_bytes: limits.total_bytes.max(1),
            },
            total: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn subscribe(&self, prefix: &str) -> Option<Subscription> {
        let mut inner = lock(&self.inner);
        if inner.closed {
            return None;
        }
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
            total: self.total.clone(),
        });
        inner.subs.push(Sub {
            prefix: prefix.to_string(),
            queue: queue.clone(),
        });
        Some(Subscription {
            replay_until: inner.last,
            queue,
        })
    }

    pub fn publish(&self, events: &[Arc<Event>]) {
        let mut inner = lock(&self.inner);
        let limits = self.limits;
        for ev in events {
            let c = cost(ev);
            inner.subs.retain(|sub| {
                let mut st = sub.queue.lock();
                if st.dropped {
                    return false;
                }
                if !ev.key.starts_with(&sub.prefix) {
                    return true;
                }
                let full = st.events.len() >= limits.events
                    || (!st.events.is_empty() && st.bytes + c > limits.bytes);
                if full {
                    st.lagged = true;
                    sub.queue.finish(&mut st);
                    return false;
                }
                st.events.push_back(ev.clone());
                st.bytes += c;
                self.total.fetch_add(c, Ordering::Relaxed);
                if let Some(w) = st.waker.take() {
                    w.wake();
                }
                true
            });
            inner.last = inner.last.max(ev.revision);
        }
        // Over the global cap: drop the watchers furthest behind until under it.
        while self.total.load(Ordering::Relaxed) > limits.total_bytes {
            let largest = (0..inner.subs.len())
                .map(|i| (inner.subs[i].queue.lock().bytes, i))
                .max();
            let Some((bytes, i)) = largest.filter(|(b, _)| *b > 0) else {
                break;
            };
            let _ = bytes;
            let sub = inner.subs.swap_remove(i);
            let mut st = sub.queue.lock();
            st.lagged = true;
            sub.queue.finish(&mut st);
        }
    }

    /// Number of live watchers (for metrics and tests).
    pub fn watchers(&self) -> usize {
        let mut inner = lock(&self.inner);
        inner.subs.retain(|s| !s.queue.lock().dropped);
        inner.subs.len()
    }

    /// End every live watch; used when the store shuts down.
    pub fn close(&self) {
        let mut inner = lock(&self.inner);
        inner.closed = true;
        for sub in inner.subs.drain(..) {
            let mut st = sub.queue.lock();
            st.closed = true;
            sub.queue.finish(&mut st);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventKind;
    use bytes::Bytes;

    fn ev(rev: Revision, key: &str, size: usize) -> Arc<Event> {
        Arc::new(Event {
            kind: EventKind::Create,
            key: key.into(),
            value: Bytes::from(vec![b'x'; size]),
            revision: rev,
            prev_value: None,
        })
    }

    fn limits(events: usize, bytes: usize, total_bytes: usize) -> Limits {
        Limits {
            events,
            bytes,
            total_bytes,
        }
    }

    #[tokio::test]
    async fn byte_budget_drops_a_slow_watcher_and_frees_its_queue() {
        let hub = Hub::new(0, limits(1000, 10_000, 1 << 30));
        let mut slow = hub.subscribe("/a/").expect("open");
        let mut fast = hub.subscribe("/a/").expect("open");
        for rev in 1..=30 {
            hub.publish(&[ev(rev, "/a/x", 1000)]);
            assert_eq!(fast.recv().await.map(|e| e.revision), Some(rev));
        }
        // ~10 events of 1 KB fit in 10 KB; the slow one was dropped and its queue emptied.
        assert!(slow.lagged());
        assert_eq!(slow.recv().await, None);
        assert_eq!(hub.total.load(Ordering::Relaxed), 0);
        assert_eq!(hub.watchers(), 1);
    }

    #[tokio::test]
    async fn a_big_event_reaches_an_idle_watcher() {
        let hub = Hub::new(0, limits(1000, 1000, 1 << 30));
        let mut w = hub.subscribe("/a/").expect("open");
        hub.publish(&[ev(1, "/a/big", 50_000)]);
        assert_eq!(w.recv().await.map(|e| e.revision), Some(1));
        assert!(!w.lagged());
    }

    #[tokio::test]
    async fn global_budget_drops_the_largest_queue_first() {
        let hub = Hub::new(0, limits(1000, 1 << 20, 50_000));
        let big = hub.subscribe("/a/").expect("open");
        let mut small = hub.subscribe("/b/").expect("open");
        for rev in 1..=60 {
            hub.publish(&[ev(rev, "/a/x", 1000)]);
        }
        hub.publish(&[ev(61, "/b/y", 100)]);
        assert!(big.lagged(), "the watcher holding most was dropped");
        assert_eq!(small.recv().await.map(|e| e.revision), Some(61));
        assert!(hub.total.load(Ordering::Relaxed) <= 50_000);
    }

    #[tokio::test]
    async fn dropped_subscriptions_are_forgotten() {
        let hub = Hub::new(0, limits(10, 1 << 20, 1 << 30));
        let w = hub.subscribe("/a/").expect("open");
        hub.publish(&[ev(1, "/a/x", 10)]);
        drop(w);
        assert_eq!(hub.total.load(Ordering::Relaxed), 0);
        assert_eq!(hub.watchers(), 0);
    }
}
