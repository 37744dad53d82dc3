//! Floods of requests from strangers (no authenticated identity: 401s, `/cacerts`) become
//! counted summary lines instead of one line each, so anonymous traffic cannot flush the
//! audit trail or fill its disk.
//!
//! Per window (default 10 s) and per (source address, response code): the first
//! [`FULL_PER_KEY`] requests are written in full, at most [`FULL_PER_WINDOW`] in all; the rest
//! are counted. When the window ends, each key with counted requests gets one summary line:
//! its first counted request as the sample, with `audit.rampart.io/aggregated-count` (how many
//! requests it stands for), `requestReceivedTimestamp` the first of them and `stageTimestamp`
//! the last. Past [`MAX_KEYS`] addresses in one window, the rest share one key without an
//! address (`audit.rampart.io/aggregated-sources: many`).
//!
//! So one window writes at most `FULL_PER_WINDOW + MAX_KEYS + 1` stranger lines, each of a
//! bounded size (the request path truncates long fields), whatever the request rate. The
//! counts live in memory until their summary is written: a crash loses at most one window's
//! counts, never a line already written.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::event::{micro_timestamp, Event};

/// Full lines per (address, code) per window.
pub const FULL_PER_KEY: u32 = 5;
/// Full stranger lines per window, all addresses together.
pub const FULL_PER_WINDOW: u32 = 100;
/// Distinct (address, code) keys tracked per window.
pub const MAX_KEYS: usize = 256;

pub const COUNT: &str = "audit.rampart.io/aggregated-count";
const SOURCES: &str = "audit.rampart.io/aggregated-sources";

type Key = (Option<IpAddr>, u16);

struct Bucket {
    full: u32,
    counted: u64,
    first: Option<jiff::Timestamp>,
    last: Option<jiff::Timestamp>,
    sample: Option<Event>,
}

struct State {
    started: Instant,
    full: u32,
    buckets: HashMap<Key, Bucket>,
}

pub struct Flood {
    window: Duration,
    state: Mutex<State>,
}

/// What to do with a stranger's line.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write it in full.
    Write,
    /// Counted into its key's summary.
    Counted,
}

impl Flood {
    pub fn new(window: Duration) -> Flood {
        Flood {
            window,
            state: Mutex::new(State {
                started: Instant::now(),
                full: 0,
                buckets: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Summaries of a window that has ended (all of them when `force`), to be written
    /// before anything newer.
    pub fn due(&self, force: bool) -> Vec<Event> {
        let mut s = self.lock();
        if !force && s.started.elapsed() < self.window {
            return Vec::new();
        }
        Self::roll(&mut s)
    }

    fn roll(s: &mut State) -> Vec<Event> {
        s.started = Instant::now();
        s.full = 0;
        let mut out: Vec<(Key, Event)> = s
            .buckets
            .drain()
            .filter_map(|(key, b)| summary(key, b).map(|e| (key, e)))
            .collect();
        // Deterministic order (by the first counted request) keeps the log readable.
        out.sort_by(|a, b| {
            a.1.request_received_timestamp
                .cmp(&b.1.request_received_timestamp)
                .then(a.0.cmp(&b.0))
        });
        out.into_iter().map(|(_, e)| e).collect()
    }

    /// Decide about one stranger's line: summaries of an ended window come back first (to
    /// be written before it), then whether the line itself is written or counted.
    pub fn admit(&self, ip: IpAddr, event: &Event) -> (Vec<Event>, Verdict) {
        let mut s = self.lock();
        let due = if s.started.elapsed() >= self.window {
            Self::roll(&mut s)
        } else {
            Vec::new()
        };
        let code = event.response_status.as_ref().map_or(0, |r| r.code);
        let mut key = (Some(ip), code);
        if !s.buckets.contains_key(&key) && s.buckets.len() >= MAX_KEYS {
            key = (None, code);
        }
        let full_left = s.full < FULL_PER_WINDOW;
        let bucket = s.buckets.entry(key).or_insert(Bucket {
            full: 0,
            counted: 0,
            first: None,
            last: None,
            sample: None,
        });
        if full_left && bucket.full < FULL_PER_KEY && key.0.is_some() {
            bucket.full += 1;
            s.full += 1;
            return (due, Verdict::Write);
        }
        let now = jiff::Timestamp::now();
        bucket.counted += 1;
        bucket.first.get_or_insert(now);
        bucket.last = Some(now);
        if bucket.sample.is_none() {
            bucket.sample = Some(event.clone());
        }
        (due, Verdict::Counted)
    }
}

fn summary(key: Key, b: Bucket) -> Option<Event> {
    if b.counted == 0 {
        return None;
    }
    let mut e = b.sample?;
    e.audit_id = uuid::Uuid::new_v4().to_string();
    if let Some(first) = b.first {
        e.request_received_timestamp = micro_timestamp(first);
    }
    if let Some(last) = b.last {
        e.stage_timestamp = micro_timestamp(last);
    }
    e.annotations.insert(COUNT.into(), b.counted.to_string());
    match key.0 {
        Some(ip) => e.source_ips = vec![ip.to_string()],
        None => {
            e.source_ips.clear();
            e.annotations.insert(SOURCES.into(), "many".into());
        }
    }
    e.prev_hash = String::new();
    e.hash = None;
    Some(e)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests may sleep
mod tests {
    use super::*;
    use crate::auth::audit::ResponseStatus;

    fn stranger(uri: &str) -> Event {
        Event {
            kind: "Event".into(),
            request_uri: uri.into(),
            response_status: Some(ResponseStatus {
                code: 401,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_flood_from_one_address_is_a_few_lines_and_a_count() {
        let f = Flood::new(Duration::from_secs(3600));
        let ip: IpAddr = [192, 0, 2, 1].into();
        let mut written = 0;
        for i in 0..10_000 {
            let (due, v) = f.admit(ip, &stranger(&format!("/x/{i}")));
            assert!(due.is_empty());
            if v == Verdict::Write {
                written += 1;
            }
        }
        assert_eq!(written, FULL_PER_KEY);
        let summaries = f.due(true);
        assert_eq!(summaries.len(), 1);
        assert_eq!(
            summaries[0].annotations[COUNT],
            (10_000 - FULL_PER_KEY).to_string()
        );
        assert_eq!(summaries[0].request_uri, format!("/x/{FULL_PER_KEY}"));
        assert!(f.due(true).is_empty(), "counts start over");
    }

    #[test]
    fn many_addresses_share_bounded_keys() {
        let f = Flood::new(Duration::from_secs(3600));
        let mut written = 0;
        for i in 0..5_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            if f.admit(ip, &stranger("/")).1 == Verdict::Write {
                written += 1;
            }
        }
        assert_eq!(written, FULL_PER_WINDOW);
        let summaries = f.due(true);
        assert!(summaries.len() <= MAX_KEYS + 1, "{}", summaries.len());
        let total: u64 = summaries
            .iter()
            .map(|s| s.annotations[COUNT].parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, 5_000 - u64::from(FULL_PER_WINDOW));
        assert!(summaries
            .iter()
            .any(|s| s.annotations.get(SOURCES).is_some_and(|v| v == "many")));
    }

    #[test]
    fn an_ended_window_hands_back_its_summaries() {
        let f = Flood::new(Duration::from_millis(50));
        let ip: IpAddr = [192, 0, 2, 1].into();
        for _ in 0..(FULL_PER_KEY + 3) {
            f.admit(ip, &stranger("/"));
        }
        assert!(f.due(false).is_empty(), "window still open");
        std::thread::sleep(Duration::from_millis(60));
        let (due, v) = f.admit(ip, &stranger("/"));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].annotations[COUNT], "3");
        assert_eq!(v, Verdict::Write, "a new window writes in full again");
    }
}
