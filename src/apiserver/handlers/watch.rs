//! WATCH: a chunked stream of `{"type": ..., "object": ...}` lines.
//!
//! Upstream semantics: without a `resourceVersion` (or with "0") the current state is sent first
//! as ADDED events; with one, only changes after it. A start revision that has been compacted,
//! or a watcher that falls too far behind, gets an ERROR event carrying a 410 Expired Status
//! (clients re-list). `allowWatchBookmarks` adds periodic BOOKMARK events;
//! `sendInitialEvents=true` ends the initial state with the `k8s.io/initial-events-end`
//! bookmark; `timeoutSeconds` bounds the watch. With selectors, an object entering the
//! selection is ADDED and one leaving it DELETED, as upstream.
//!
//! Memory is bounded per watch whatever the client does (`stream.rs`): the response body is
//! *pulled* — nothing is produced until the connection can take it — the initial state is read
//! from the store snapshot page by page as it is sent, and live events wait in the store hub's
//! queue, whose event and byte limits close a watcher that does not keep up (410, the client
//! re-lists) and free what it held. Watches are counted per user and over the server
//! (`limits.rs`): past a cap the answer is 429 TooManyRequests.

mod limits;
mod stream;

use std::time::Duration;

use http::Response;
use http_body_util::{BodyExt, StreamBody};
use serde_json::Value;

use super::selectors::Selectors;
use super::{output, Ctx};
use crate::apiserver::edge::body::{error_response, Body};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::storage;
use crate::store::RangeRequest;

pub use limits::{WatchLimits, Watches};
pub use stream::SyncStream;

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
    let start = match rv.as_deref() {
        None | Some("0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    // The place is taken before any work, so a refused watch costs nothing.
    let slot = match limits::acquire(&ctx.state, &ctx.user.name) {
        Ok(slot) => slot,
        Err(e) => {
            let mut resp = error_response(&e);
            resp.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
            return Ok(resp);
        }
    };

    let store = ctx.state.store.clone();
    let ri = ctx.ri.clone();
    let table = output::wants_table(ctx);
    let (cols, row) = output::table_parts(ctx);
    let mode = output::include(ctx);
    let (group, kind_name) = (ctx.ri.group.clone(), ctx.ri.kind.clone());
    let render = move |obj: Value| -> Value {
        if !table {
            return obj;
        }
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let r = crate::apiserver::table::TableRow::new(row(&obj), &obj, mode).with_conditions(
            crate::apiserver::table::row_conditions(&group, &kind_name, &obj),
        );
        crate::apiserver::table::table(cols.clone(), vec![r], &rv, None, None)
    };

    // Without a resourceVersion the current state comes first: its first page is read here
    // (a store failure is then a plain Status), the rest as the client takes it.
    let (initial, start) = match start {
        Some(start) => (None, start),
        None => {
            let page = store
                .range(RangeRequest {
                    prefix: prefix.clone(),
                    limit: stream::FIRST_PAGE,
                    ..Default::default()
                })
                .await
                .map_err(|e| ApiError::from_store(e, &ri, ""))?;
            let revision = page.revision;
            (Some(page), revision)
        }
    };
    let body = stream::events(stream::Watch {
        store,
        prefix,
        ri,
        selectors,
        render: Box::new(render),
        raw: !table,
        initial,
        start,
        send_initial,
        bookmarks,
        deadline: tokio::time::Instant::now() + timeout,
        _slot: slot,
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(body)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
