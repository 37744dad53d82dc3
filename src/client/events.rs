//! Writing core/v1 Events with client-go's event correlation (`tools/record`'s
//! `EventCorrelator`), so a repeated event is one Event with a growing `count` and a moving
//! `lastTimestamp` — what `kubectl describe` prints as `(x5 over 2m)` — instead of one object
//! per occurrence.
//!
//! - Aggregation (`EventAggregator`): events that differ only in their message (same source,
//!   involved object, type, reason) are *similar*; from the 10th distinct message within 10
//!   minutes on they are folded into one Event whose message is prefixed with
//!   `(combined from similar events): `.
//! - Deduplication (`eventLogger`): an event equal to one already written (same source,
//!   involved object, type, reason, message) patches that Event's `count`, `lastTimestamp`
//!   and `message` (and `series`, which events.k8s.io/v1 shows) rather than creating a new
//!   one; its `firstTimestamp` stays. If the Event is
//!   gone (expired, deleted) it is created again with a count of 1.
//!
//! Invariants: recording never blocks the caller (a bounded queue per writer; a full queue
//! drops the event, as upstream's broadcaster drops rather than slow its component); the
//! caches hold at most [`CACHE_SIZE`] keys each (oldest dropped first, as client-go's LRU);
//! events with the same key go to the same writer, in order, so a patch never overtakes the
//! create it refers to.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;

/// client-go's `maxLruCacheEntries`.
pub const CACHE_SIZE: usize = 4096;
/// client-go's `defaultAggregateMaxEvents` and `defaultAggregateIntervalInSeconds`.
const AGGREGATE_MAX: usize = 10;
const AGGREGATE_INTERVAL: Duration = Duration::from_secs(600);
const COMBINED: &str = "(combined from similar events): ";
/// Writers per sink, and events queued per writer.
const WRITERS: usize = 4;
const QUEUE: usize = 256;

/// A map that forgets its oldest keys past a bound.
struct Bounded<V> {
    map: HashMap<String, V>,
    order: VecDeque<String>,
}

impl<V> Default for Bounded<V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<V> Bounded<V> {
    fn entry(&mut self, key: &str, new: impl FnOnce() -> V) -> &mut V {
        if !self.map.contains_key(key) {
            while self.map.len() >= CACHE_SIZE {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                self.map.remove(&old);
            }
            self.order.push_back(key.to_string());
        }
        self.map.entry(key.to_string()).or_insert_with(new)
    }

    fn remove(&mut self, key: &str) {
        if self.map.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }
}

struct Similar {
    messages: HashSet<String>,
    last: Instant,
}

struct Seen {
    name: String,
    count: i32,
    first: Option<Time>,
}

/// The correlator's decision for one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A new Event.
    Create(Box<Event>),
    /// Bump an existing Event: its name, new count, and the (possibly combined) message.
    Bump(Box<Event>),
}

/// client-go's `EventCorrelator` (aggregation and deduplication; no spam filter).
#[derive(Default)]
pub struct Correlator {
    similar: Bounded<Similar>,
    seen: Bounded<Seen>,
}

fn similar_key(e: &Event) -> String {
    let o = &e.involved_object;
    let src = e.source.as_ref();
    [
        src.and_then(|s| s.component.as_deref()).unwrap_or_default(),
        src.and_then(|s| s.host.as_deref()).unwrap_or_default(),
        o.kind.as_deref().unwrap_or_default(),
        o.namespace.as_deref().unwrap_or_default(),
        o.name.as_deref().unwrap_or_default(),
        o.uid.as_deref().unwrap_or_default(),
        o.api_version.as_deref().unwrap_or_default(),
        e.type_.as_deref().unwrap_or_default(),
        e.reason.as_deref().unwrap_or_default(),
        e.reporting_component.as_deref().unwrap_or_default(),
        e.reporting_instance.as_deref().unwrap_or_default(),
    ]
    .join("\u{0}")
}

impl Correlator {
    /// Decide how `e` (a fresh Event: unique name, count 1) is written.
    pub fn correlate(&mut self, mut e: Event, now: Instant) -> Write {
        let similar = similar_key(&e);
        let message = e.message.clone().unwrap_or_default();
        let group = self.similar.entry(&similar, || Similar {
            messages: HashSet::new(),
            last: now,
        });
        if now.duration_since(group.last) > AGGREGATE_INTERVAL {
            group.messages.clear();
        }
        group.last = now;
        group.messages.insert(message.clone());
        let key = if group.messages.len() >= AGGREGATE_MAX {
            e.message = Some(format!("{COMBINED}{message}"));
            similar
        } else {
            format!("{similar}\u{0}{message}")
        };
        let fresh_name = e.metadata.name.clone().unwrap_or_default();
        let first = e.first_timestamp.clone();
        let seen = self.seen.entry(&key, || Seen {
            name: fresh_name,
            count: 0,
            first,
        });
        seen.count = seen.count.saturating_add(1);
        if seen.count == 1 {
            return Write::Create(Box::new(e));
        }
        e.metadata.name = Some(seen.name.clone());
        e.count = Some(seen.count);
        e.first_timestamp = seen.first.clone();
        Write::Bump(Box::new(e))
    }

    /// The Event behind a key is gone: the next occurrence starts a new one.
    fn forget(&mut self, e: &Event) {
        let similar = similar_key(e);
        let message = e.message.clone().unwrap_or_default();
        self.seen.remove(&similar);
        self.seen.remove(&format!("{similar}\u{0}{message}"));
    }
}

/// Writes correlated Events for one component.
#[derive(Clone)]
pub struct Sink {
    correlator: Arc<Mutex<Correlator>>,
    writers: Arc<Vec<mpsc::Sender<Write>>>,
}

impl Sink {
    /// Start the writers (they end when every clone of the sink is dropped). Must be called
    /// inside a tokio runtime.
    pub fn start(client: kube::Client) -> Sink {
        let correlator = Arc::new(Mutex::new(Correlator::default()));
        let mut writers = Vec::with_capacity(WRITERS);
        for _ in 0..WRITERS {
            let (tx, mut rx) = mpsc::channel::<Write>(QUEUE);
            let client = client.clone();
            let correlator = correlator.clone();
            tokio::spawn(async move {
                while let Some(w) = rx.recv().await {
                    write(&client, &correlator, w).await;
                }
            });
            writers.push(tx);
        }
        Sink {
            correlator,
            writers: Arc::new(writers),
        }
    }

    /// Record `e` (fire and forget).
    pub fn record(&self, e: Event) {
        let shard = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            similar_key(&e).hash(&mut h);
            (h.finish() as usize) % WRITERS.max(1)
        };
        let w = match self.correlator.lock() {
            Ok(mut c) => c.correlate(e, Instant::now()),
            Err(_) => Write::Create(Box::new(e)),
        };
        if let Some(tx) = self.writers.get(shard) {
            if tx.try_send(w).is_err() {
                tracing::debug!("event queue full; dropping an event");
            }
        }
    }
}

async fn write(client: &kube::Client, correlator: &Mutex<Correlator>, w: Write) {
    match w {
        Write::Create(e) => create(client, *e).await,
        Write::Bump(e) => {
            let ns = e.metadata.namespace.clone().unwrap_or_default();
            let name = e.metadata.name.clone().unwrap_or_default();
            let api: Api<Event> = Api::namespaced(client.clone(), &ns);
            // `series` too, as the events.k8s.io recorder writes a repeat, so the new API
            // (a view of the same stored Event) shows `series.count`/`lastObservedTime`.
            let patch = json!({
                "count": e.count,
                "lastTimestamp": e.last_timestamp,
                "message": e.message,
                "series": {"count": e.count, "lastObservedTime": MicroTime(jiff::Timestamp::now())},
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    // Gone: start again with a count of one, as client-go does.
                    if let Ok(mut c) = correlator.lock() {
                        c.forget(&e);
                        let _ = c.correlate((*e).clone(), Instant::now());
                    }
                    let mut fresh = *e;
                    fresh.count = Some(1);
                    fresh.first_timestamp = fresh.last_timestamp.clone();
                    fresh.metadata.resource_version = None;
                    create(client, fresh).await;
                }
                Err(err) => tracing::debug!(error = %err, event = %name, "cannot update an event"),
            }
        }
    }
}

async fn create(client: &kube::Client, e: Event) {
    let ns = e.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Err(err) = api.create(&PostParams::default(), &e).await {
        tracing::debug!(error = %err, "cannot record an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EventSource, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn ev(name: &str, reason: &str, message: &str) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                name: Some("p".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Warning".into()),
            count: Some(1),
            source: Some(EventSource {
                component: Some("test".into()),
                host: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn repeats_bump_one_event() {
        let mut c = Correlator::default();
        let now = Instant::now();
        assert!(matches!(
            c.correlate(ev("a", "R", "m"), now),
            Write::Create(_)
        ));
        for n in 2..=5 {
            match c.correlate(ev(&format!("x{n}"), "R", "m"), now) {
                Write::Bump(e) => {
                    assert_eq!(e.metadata.name.as_deref(), Some("a"));
                    assert_eq!(e.count, Some(n));
                }
                w => panic!("expected a bump, got {w:?}"),
            }
        }
        // Another reason is another event.
        assert!(matches!(
            c.correlate(ev("b", "Other", "m"), now),
            Write::Create(_)
        ));
    }

    #[test]
    fn many_similar_messages_are_combined() {
        let mut c = Correlator::default();
        let now = Instant::now();
        for i in 0..9 {
            assert!(matches!(
                c.correlate(ev(&format!("e{i}"), "R", &format!("m{i}")), now),
                Write::Create(_)
            ));
        }
        let Write::Create(tenth) = c.correlate(ev("e9", "R", "m9"), now) else {
            panic!("the first combined event is created");
        };
        assert_eq!(
            tenth.message.as_deref(),
            Some("(combined from similar events): m9")
        );
        let Write::Bump(e) = c.correlate(ev("e10", "R", "m10"), now) else {
            panic!("later ones bump the combined event");
        };
        assert_eq!(e.metadata.name.as_deref(), Some("e9"));
        assert_eq!(e.count, Some(2));
        // After the interval the group starts over.
        let later = now + AGGREGATE_INTERVAL + Duration::from_secs(1);
        assert!(matches!(
            c.correlate(ev("f", "R", "fresh"), later),
            Write::Create(_)
        ));
    }

    #[test]
    fn the_caches_are_bounded() {
        let mut c = Correlator::default();
        let now = Instant::now();
        for i in 0..(CACHE_SIZE + 10) {
            let mut e = ev(&format!("e{i}"), "R", "m");
            e.involved_object.name = Some(format!("p{i}"));
            let _ = c.correlate(e, now);
        }
        assert!(c.seen.map.len() <= CACHE_SIZE && c.similar.map.len() <= CACHE_SIZE);
        assert_eq!(c.seen.map.len(), c.seen.order.len());
    }
}
