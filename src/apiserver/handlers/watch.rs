//! WATCH: a chunked stream of `{"type": ..., "object": ...}` lines.
//!
//! Upstream semantics: without a `resourceVersion` (or with "0") the current state is sent first
//! as ADDED events; with one, only changes after it. A start revision that has been compacted,
//! or a watcher that falls too far behind, gets an ERROR event carrying a 410 Expired Status
//! (clients re-list). `allowWatchBookmarks` adds periodic BOOKMARK events;
//! `sendInitialEvents=true` ends the initial state with the `k8s.io/initial-events-end`
//! bookmark; `timeoutSeconds` bounds the watch. With selectors, an object entering the
//! selection is ADDED and one leaving it DELETED, as upstream.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::list::Selectors;
use super::{output, Ctx};
use crate::apiserver::body::Body;
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::storage;
use crate::store::{EventKind, RangeRequest};

const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

pub async fn watch(ctx: &Ctx) -> ApiResult<Response<Body>> {
    let selectors = Selectors::parse(ctx)?;
    let ns =
        (!ctx.info.namespace.is_empty() && ctx.ri.namespaced).then_some(ctx.info.namespace.clone());
    let prefix = storage::prefix(&ctx.ri, ns.as_deref());
    let send_initial = ctx.query.flag("sendInitialEvents");
    let bookmarks = ctx.query.flag("allowWatchBookmarks");
    let rv = ctx.query.get("resourceVersion").map(str::to_string);
    let timeout = match ctx.query.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        None => Duration::from_secs(1800 + rand::random_range(0..1800)),
    };
    let store = ctx.state.store.clone();
    let ri = ctx.ri.clone();
    let table = output::wants_table(ctx);
    let (cols, row) = output::table_parts(ctx);
    let mode = output::include(ctx);
    let (group, kind_name) = (ctx.ri.group.clone(), ctx.ri.kind.clone());
    let render = move |obj: &Value| -> Value {
        if !table {
            return obj.clone();
        }
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let r = crate::apiserver::table::TableRow::new(row(obj), obj, mode).with_conditions(
            crate::apiserver::table::row_conditions(&group, &kind_name, obj),
        );
        crate::apiserver::table::table(cols.clone(), vec![r], &rv, None, None)
    };

    // Initial state and the revision to watch from.
    let (initial, start) = match rv.as_deref() {
        None | Some("0") => {
            let snapshot = store
                .range(RangeRequest {
                    prefix: prefix.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|e| ApiError::from_store(e, &ri, ""))?;
            let objs: Vec<Value> = snapshot
                .items
                .iter()
                .filter_map(|kv| storage::decode(kv, &ri).ok())
                .filter(|o| selectors.matches(o))
                .collect();
            (objs, snapshot.revision)
        }
        Some(rv) => {
            let start = rv
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
            (Vec::new(), start)
        }
    };

    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(64);
    let metrics_state = ctx.state.clone();
    metrics_state
        .metrics
        .watches
        .fetch_add(1, Ordering::Relaxed);
    let kind = ri.kind.clone();
    let api_version = ri.api_version();
    tokio::spawn(async move {
        let line = |typ: &str, obj: Value| -> Result<Frame<Bytes>, std::io::Error> {
            let mut bytes =
                serde_json::to_vec(&json!({"type": typ, "object": obj})).unwrap_or_default();
            bytes.push(b'\n');
            Ok(Frame::data(Bytes::from(bytes)))
        };
        let bookmark = |rev: u64, initial_end: bool| -> Value {
            let mut meta = json!({"resourceVersion": rev.to_string()});
            if initial_end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            json!({"kind": kind, "apiVersion": api_version, "metadata": meta})
        };
        let run = async {
            for obj in initial {
                if tx.send(line("ADDED", render(&obj))).await.is_err() {
                    return;
                }
            }
            if send_initial
                && bookmarks
                && tx
                    .send(line("BOOKMARK", bookmark(start, true)))
                    .await
                    .is_err()
            {
                return;
            }
            let mut events = match store.watch(&prefix, start).await {
                Ok(w) => w,
                Err(e) => {
                    let status = ApiError::from_store(e, &ri, "").to_status();
                    let _ = tx.send(line("ERROR", status)).await;
                    return;
                }
            };
            let mut last = start;
            let mut tick = tokio::time::interval(BOOKMARK_EVERY);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick(), if bookmarks => {
                        if tx.send(line("BOOKMARK", bookmark(last, false))).await.is_err() {
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                    ev = events.next() => {
                        let ev = match ev {
                            Some(Ok(ev)) => ev,
                            Some(Err(e)) => {
                                let status = ApiError::from_store(e, &ri, "").to_status();
                                let _ = tx.send(line("ERROR", status)).await;
                                return;
                            }
                            None => return,
                        };
                        last = ev.revision;
                        let Ok(obj) = storage::decode_bytes(&ev.value, ev.revision, &ri) else {
                            continue;
                        };
                        let now_matches = selectors.matches(&obj);
                        let typ = match ev.kind {
                            EventKind::Create | EventKind::Delete if !now_matches => continue,
                            EventKind::Create => "ADDED",
                            EventKind::Delete => "DELETED",
                            EventKind::Update => {
                                let before = ev
                                    .prev_value
                                    .as_ref()
                                    .and_then(|p| storage::decode_bytes(p, ev.revision, &ri).ok())
                                    .is_some_and(|o| selectors.matches(&o));
                                // Upstream: entering the selection is ADDED, leaving it DELETED.
                                match (before, now_matches) {
                                    (true, true) => "MODIFIED",
                                    (false, true) => "ADDED",
                                    (true, false) => "DELETED",
                                    (false, false) => continue,
                                }
                            }
                        };
                        if tx.send(line(typ, render(&obj))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        let _ = tokio::time::timeout(timeout, run).await;
        metrics_state
            .metrics
            .watches
            .fetch_sub(1, Ordering::Relaxed);
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
