//! The body of one watch response, produced only as the connection takes it.
//!
//! hyper polls a response body only when the connection has room for more (HTTP/2 stream
//! capacity, HTTP/1.1 write buffer), so a body that does its work inside `poll_next` needs no
//! queue of its own: a client that stops reading stops the work. What one watch can hold at a
//! time is therefore: one page of the initial state (about [`PAGE_BYTES`], or one object), or
//! the store hub's queue of live events (bounded in events and bytes; a watcher past it is
//! dropped and its queue freed, see `store::watch`), plus what hyper has buffered for the
//! connection. The initial state is read in pages from the snapshot at the watch's start
//! revision (as a paginated list is), never decoded all at once; a compaction that overtakes
//! a very slow reader ends the watch with 410 Expired, as upstream, and the client re-lists.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::limits::Slot;
use crate::api::ResourceInfo;
use crate::apiserver::handlers::selectors::Selectors;
use crate::apiserver::status::ApiError;
use crate::apiserver::{storage, stored_json};
use crate::store::{Backend, EventKind, KeyValue, RangeRequest, RangeResponse, WatchStream};

const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// Items in the first page of the initial state (read before the response starts): one, since
/// object sizes are unknown until then (16 objects of 1.5 MiB would be 24 MiB per watch).
pub const FIRST_PAGE: usize = 1;
/// Later pages hold about this many bytes of stored objects...
const PAGE_BYTES: usize = 64 * 1024;
/// ...and between 1 and this many objects.
const MAX_PAGE: usize = 500;

type Render = Box<dyn Fn(Value) -> Value + Send>;
type Line = Result<Frame<Bytes>, std::io::Error>;

/// Everything one watch needs; see [`events`].
pub struct Watch {
    pub store: Arc<dyn Backend>,
    pub prefix: String,
    pub ri: ResourceInfo,
    pub selectors: Selectors,
    pub render: Render,
    /// Objects are sent as stored (no Table rendering): live events are spliced from the
    /// stored bytes without decoding (`stored_json`) when no selector needs the object.
    pub raw: bool,
    /// The first page of the initial state (`None`: no initial state).
    pub initial: Option<RangeResponse>,
    /// The revision the initial state was read at, or the one the client asked to watch from.
    pub start: u64,
    pub send_initial: bool,
    pub bookmarks: bool,
    pub deadline: Instant,
    /// Held for as long as the body lives.
    pub _slot: Slot,
}

enum Phase {
    /// Sending the initial state: the page in hand and whether the snapshot has more.
    Initial {
        page: VecDeque<KeyValue>,
        more: bool,
        last_key: Option<String>,
        avg: usize,
    },
    /// Initial state sent; open the store watch next.
    Subscribe,
    Live(WatchStream),
    Done,
}

struct State {
    w: Watch,
    phase: Phase,
    last: u64,
    tick: tokio::time::Interval,
}

/// The response body of a watch.
pub fn events(mut w: Watch) -> SyncStream {
    let phase = match w.initial.take() {
        Some(page) => {
            let avg = average(&page.items);
            Phase::Initial {
                more: page.more,
                last_key: None,
                page: page.items.into(),
                avg,
            }
        }
        None => Phase::Subscribe,
    };
    let mut tick = tokio::time::interval_at(Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let st = State {
        last: w.start,
        w,
        phase,
        tick,
    };
    SyncStream(std::sync::Mutex::new(
        futures::stream::unfold(st, |mut st| async move {
            let line = next(&mut st).await?;
            Some((Ok::<_, std::io::Error>(line), st))
        })
        .boxed(),
    ))
}

fn average(items: &[KeyValue]) -> usize {
    let total: usize = items.iter().map(|kv| kv.value.len() + kv.key.len()).sum();
    (total / items.len().max(1)).max(1)
}

fn frame(typ: &str, obj: Value) -> Frame<Bytes> {
    let mut bytes = serde_json::to_vec(&json!({"type": typ, "object": obj})).unwrap_or_default();
    bytes.push(b'\n');
    Frame::data(Bytes::from(bytes))
}

/// A frame for an object sent as stored, without decoding it (see `stored_json`).
fn raw_frame(typ: &str, value: &[u8], revision: u64, ri: &ResourceInfo) -> Option<Frame<Bytes>> {
    let mut bytes = Vec::with_capacity(value.len() + 64);
    bytes.extend_from_slice(b"{\"type\":\"");
    bytes.extend_from_slice(typ.as_bytes());
    bytes.extend_from_slice(b"\",\"object\":");
    stored_json::write(&mut bytes, value, revision, ri).ok()?;
    bytes.extend_from_slice(b"}\n");
    Some(Frame::data(Bytes::from(bytes)))
}

fn error_frame(e: ApiError) -> Frame<Bytes> {
    frame("ERROR", e.to_status())
}

fn bookmark(w: &Watch, rev: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": w.ri.kind, "apiVersion": w.ri.api_version(), "metadata": meta})
}

/// The next line of the response, `None` when the watch is over.
async fn next(st: &mut State) -> Option<Frame<Bytes>> {
    loop {
        if Instant::now() >= st.w.deadline {
            st.phase = Phase::Done;
        }
        match &mut st.phase {
            Phase::Done => return None,
            Phase::Initial {
                page,
                more,
                last_key,
                avg,
            } => {
                if let Some(kv) = page.pop_front() {
                    *last_key = Some(kv.key.clone());
                    if st.w.raw && st.w.selectors.everything() {
                        match raw_frame("ADDED", &kv.value, kv.mod_revision, &st.w.ri) {
                            Some(f) => return Some(f),
                            None => continue,
                        }
                    }
                    let Ok(obj) = storage::decode(&kv, &st.w.ri) else {
                        continue;
                    };
                    if !st.w.selectors.matches(&obj) {
                        continue;
                    }
                    return Some(frame("ADDED", (st.w.render)(obj)));
                }
                if *more {
                    // The next page, from the same snapshot, sized to about PAGE_BYTES.
                    let limit = (PAGE_BYTES / *avg).clamp(1, MAX_PAGE);
                    let read =
                        st.w.store
                            .range(RangeRequest {
                                prefix: st.w.prefix.clone(),
                                start_after: last_key.clone(),
                                limit,
                                revision: Some(st.w.start),
                            })
                            .await;
                    match read {
                        Ok(next) => {
                            *avg = average(&next.items);
                            *more = next.more && !next.items.is_empty();
                            page.extend(next.items);
                        }
                        Err(e) => {
                            st.phase = Phase::Done;
                            return Some(error_frame(ApiError::from_store(e, &st.w.ri, "")));
                        }
                    }
                    continue;
                }
                st.phase = Phase::Subscribe;
                if st.w.send_initial && st.w.bookmarks {
                    return Some(frame("BOOKMARK", bookmark(&st.w, st.w.start, true)));
                }
            }
            Phase::Subscribe => match st.w.store.watch(&st.w.prefix, st.w.start).await {
                Ok(events) => st.phase = Phase::Live(events),
                Err(e) => {
                    st.phase = Phase::Done;
                    return Some(error_frame(ApiError::from_store(e, &st.w.ri, "")));
                }
            },
            Phase::Live(events) => {
                let ev = tokio::select! {
                    _ = st.tick.tick(), if st.w.bookmarks => {
                        return Some(frame("BOOKMARK", bookmark(&st.w, st.last, false)));
                    }
                    _ = tokio::time::sleep_until(st.w.deadline) => {
                        st.phase = Phase::Done;
                        return None;
                    }
                    ev = events.next() => ev,
                };
                let ev = match ev {
                    Some(Ok(ev)) => ev,
                    Some(Err(e)) => {
                        st.phase = Phase::Done;
                        return Some(error_frame(ApiError::from_store(e, &st.w.ri, "")));
                    }
                    None => {
                        st.phase = Phase::Done;
                        return None;
                    }
                };
                st.last = ev.revision;
                let sel = &st.w.selectors;
                // Without selectors everything matches: the previous value is not decoded.
                let match_all = sel.labels.0.is_empty() && sel.fields.0.is_empty();
                if match_all && st.w.raw {
                    let typ = match ev.kind {
                        EventKind::Create => "ADDED",
                        EventKind::Delete => "DELETED",
                        EventKind::Update => "MODIFIED",
                    };
                    match raw_frame(typ, &ev.value, ev.revision, &st.w.ri) {
                        Some(f) => return Some(f),
                        None => continue,
                    }
                }
                let Ok(obj) = storage::decode_bytes(&ev.value, ev.revision, &st.w.ri) else {
                    continue;
                };
                let now_matches = match_all || sel.matches(&obj);
                let typ = match ev.kind {
                    EventKind::Create | EventKind::Delete if !now_matches => continue,
                    EventKind::Create => "ADDED",
                    EventKind::Delete => "DELETED",
                    EventKind::Update if match_all => "MODIFIED",
                    EventKind::Update => {
                        let before = ev
                            .prev_value
                            .as_ref()
                            .and_then(|p| storage::decode_bytes(p, ev.revision, &st.w.ri).ok())
                            .is_some_and(|o| sel.matches(&o));
                        // Upstream: entering the selection is ADDED, leaving it DELETED.
                        match (before, now_matches) {
                            (true, true) => "MODIFIED",
                            (false, true) => "ADDED",
                            (true, false) => "DELETED",
                            (false, false) => continue,
                        }
                    }
                };
                return Some(frame(typ, (st.w.render)(obj)));
            }
        }
    }
}

/// A `Send` stream made `Sync` for hyper's boxed body: it is only ever polled through
/// `&mut self`, so the mutex is never locked (`get_mut`).
pub struct SyncStream(std::sync::Mutex<BoxStream<'static, Line>>);

impl SyncStream {
    pub fn new(s: BoxStream<'static, Line>) -> SyncStream {
        SyncStream(std::sync::Mutex::new(s))
    }
}

impl Stream for SyncStream {
    type Item = Line;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Line>> {
        match self.get_mut().0.get_mut() {
            Ok(s) => s.as_mut().poll_next(cx),
            Err(p) => p.into_inner().as_mut().poll_next(cx),
        }
    }
}
