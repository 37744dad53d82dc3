//! The live half of watches: a hub the single writer publishes committed events to, fanning
//! them out to per-watcher bounded queues.
//!
//! Invariants: events are published in revision order, once each, after they are durable; a
//! subscriber registered while the hub's last published revision is `L` receives exactly the
//! events with revision `> L` (its owner replays `(from, L]` from history), so replay plus live is
//! gap-free and duplicate-free. Publishing never blocks: a full queue marks that watcher as
//! lagged and drops it (the same trade the Kubernetes watch cache makes with slow watchers).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::{Event, Revision};

pub(crate) struct Hub {
    inner: Mutex<HubInner>,
    buffer: usize,
}

struct HubInner {
    last: Revision,
    closed: bool,
    subs: Vec<Sub>,
}

struct Sub {
    prefix: String,
    tx: mpsc::Sender<Arc<Event>>,
    lagged: Arc<AtomicBool>,
}

/// The receiving end of one watcher's live queue.
pub(crate) struct Subscription {
    /// Last revision published before this subscriber was registered: replay up to here.
    pub replay_until: Revision,
    pub rx: mpsc::Receiver<Arc<Event>>,
    pub lagged: Arc<AtomicBool>,
}

impl Hub {
    pub fn new(last: Revision, buffer: usize) -> Self {
        Hub {
            inner: Mutex::new(HubInner {
                last,
                closed: false,
                subs: Vec::new(),
            }),
            buffer: buffer.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubInner> {
        // A panic while holding this lock cannot leave the list half-updated in a way that
        // matters (worst case a watcher is dropped), so recover from poisoning.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self, prefix: &str) -> Option<Subscription> {
        let mut inner = self.lock();
        if inner.closed {
            return None;
        }
        let (tx, rx) = mpsc::channel(self.buffer);
        let lagged = Arc::new(AtomicBool::new(false));
        inner.subs.push(Sub {
            prefix: prefix.to_string(),
            tx,
            lagged: lagged.clone(),
        });
        Some(Subscription {
            replay_until: inner.last,
            rx,
            lagged,
        })
    }

    pub fn publish(&self, events: &[Arc<Event>]) {
        let mut inner = self.lock();
        for ev in events {
            inner.subs.retain(|sub| {
                if !ev.key.starts_with(&sub.prefix) {
                    return !sub.tx.is_closed();
                }
                match sub.tx.try_send(ev.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        sub.lagged.store(true, Ordering::SeqCst);
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
            inner.last = inner.last.max(ev.revision);
        }
    }

    /// Number of live watchers (for metrics and tests).
    pub fn watchers(&self) -> usize {
        let mut inner = self.lock();
        inner.subs.retain(|s| !s.tx.is_closed());
        inner.subs.len()
    }

    /// End every live watch; used when the store shuts down.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.subs.clear();
    }
}
