//! The body of a whole (unpaginated) LIST, produced item by item as the connection takes it.
//!
//! A LIST without `limit` used to decode every object into one `Vec<Value>` and serialize the
//! whole list into one buffer: ~40 µs and a few KiB of heap per pod, all at once (10,000 pods
//! were 0.4 s of CPU and ~100 MiB of transient memory). Here the list is read from the store
//! snapshot at the list's revision one page (about [`PAGE_BYTES`]) at a time, and each object
//! is written into the response as it is reached: copied from its stored bytes with its
//! `resourceVersion` spliced in (`stored_json`) when nothing needs the decoded object, decoded
//! only when a selector must look at it or a Table row is rendered from it. hyper pulls the
//! body only when the connection has room, so one request holds one page plus one frame
//! (about [`FRAME_BYTES`]) whatever the list's size — constant memory per request.
//!
//! The envelope is upstream's, member for member: the list's (or Table's) JSON with an empty
//! `items` (`rows`) array is serialized once and the items are written inside that array.
//! A store error after the response has started (the snapshot compacted under a very slow
//! reader) can no longer become a Status: the body ends with an I/O error, so the client sees
//! a truncated response rather than a short list, as with upstream's streamed encoders.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::Value;

use super::selectors::Selectors;
use crate::api::ResourceInfo;
use crate::apiserver::edge::body::Body;
use crate::apiserver::stored_json;
use crate::apiserver::{storage, State};
use crate::store::{KeyValue, RangeRequest, RangeResponse};

/// Stored bytes read from the snapshot per page.
const PAGE_BYTES: usize = 256 * 1024;
/// Objects per page, at most.
const MAX_PAGE: usize = 1000;
/// Objects in the first page (read before the response starts, so a store error is a Status).
pub const FIRST_PAGE: usize = 100;
/// A frame is sent once it holds about this many bytes.
const FRAME_BYTES: usize = 64 * 1024;

/// Renders an object as a Table row's JSON.
pub type RowJson = Box<dyn Fn(&Value) -> Value + Send>;

/// What one streamed LIST needs.
pub struct ListBody {
    pub state: Arc<State>,
    pub prefix: String,
    pub ri: ResourceInfo,
    pub selectors: Selectors,
    /// `Some` for a Table (`as=Table`): each object becomes a row.
    pub row: Option<RowJson>,
    /// The envelope with an empty items/rows array, serialized (ends with `[]}`).
    pub envelope: Vec<u8>,
    /// The first page, read at the list's revision.
    pub first: RangeResponse,
}

struct Progress {
    b: ListBody,
    page: VecDeque<KeyValue>,
    more: bool,
    last_key: Option<String>,
    avg: usize,
    /// The envelope is written (`None` after the first frame).
    head: Option<Vec<u8>>,
    first_item: bool,
    finished: bool,
    fetched: usize,
    evaluated: usize,
    returned: usize,
}

fn average(items: &[KeyValue]) -> usize {
    let total: usize = items.iter().map(|kv| kv.value.len()).sum();
    (total / items.len().max(1)).max(1)
}

/// The response: 200, JSON, the body streamed.
pub fn response(mut b: ListBody) -> Response<Body> {
    let mut head = std::mem::take(&mut b.envelope);
    // Cut the closing `]}` of the empty array: the items go in between.
    head.truncate(head.len().saturating_sub(2));
    let items = std::mem::take(&mut b.first.items);
    let p = Progress {
        fetched: items.len(),
        more: b.first.more,
        avg: average(&items),
        page: items.into(),
        last_key: None,
        head: Some(head),
        first_item: true,
        finished: false,
        evaluated: 0,
        returned: 0,
        b,
    };
    let stream = futures::stream::unfold(p, |mut p| async move {
        let chunk = next_chunk(&mut p).await?;
        Some((chunk, p))
    });
    let body = super::watch::SyncStream::new(stream.boxed());
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(body)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The next frame of the body, `None` when it is complete.
async fn next_chunk(p: &mut Progress) -> Option<Result<Frame<Bytes>, std::io::Error>> {
    if p.finished {
        return None;
    }
    let mut out = p.head.take().unwrap_or_default();
    loop {
        while let Some(kv) = p.page.pop_front() {
            p.last_key = Some(kv.key.clone());
            if let Err(e) = write_item(p, &kv, &mut out) {
                p.finished = true;
                return Some(Err(std::io::Error::other(e.message)));
            }
            if out.len() >= FRAME_BYTES {
                return Some(Ok(Frame::data(Bytes::from(out))));
            }
        }
        if !p.more {
            break;
        }
        let limit = (PAGE_BYTES / p.avg).clamp(1, MAX_PAGE);
        let read =
            p.b.state
                .store
                .range(RangeRequest {
                    prefix: p.b.prefix.clone(),
                    start_after: p.last_key.clone(),
                    limit,
                    revision: Some(p.b.first.revision),
                })
                .await;
        match read {
            Ok(next) => {
                p.fetched += next.items.len();
                p.avg = average(&next.items);
                p.more = next.more && !next.items.is_empty();
                p.page.extend(next.items);
            }
            Err(e) => {
                p.finished = true;
                tracing::warn!(error = %e, prefix = %p.b.prefix, "LIST ended early: store read failed");
                return Some(Err(std::io::Error::other(e.to_string())));
            }
        }
    }
    out.extend_from_slice(b"]}\n");
    p.finished = true;
    p.b.state
        .metrics
        .observe_list(&p.b.ri.group_resource(), p.fetched, p.evaluated, p.returned);
    Some(Ok(Frame::data(Bytes::from(out))))
}

/// Append one object (or its row) if it matches.
fn write_item(
    p: &mut Progress,
    kv: &KeyValue,
    out: &mut Vec<u8>,
) -> crate::apiserver::status::ApiResult<()> {
    p.evaluated += 1;
    let comma = |p: &mut Progress, out: &mut Vec<u8>| {
        if !p.first_item {
            out.push(b',');
        }
        p.first_item = false;
        p.returned += 1;
    };
    if p.b.row.is_none() && p.b.selectors.everything() {
        comma(p, out);
        return stored_json::write(out, &kv.value, kv.mod_revision, &p.b.ri);
    }
    let obj = storage::decode(kv, &p.b.ri)?;
    if !p.b.selectors.matches(&obj) {
        return Ok(());
    }
    comma(p, out);
    let written = match &p.b.row {
        Some(row) => serde_json::to_writer(&mut *out, &row(&obj)),
        None => serde_json::to_writer(&mut *out, &obj),
    };
    written.map_err(|e| {
        crate::apiserver::status::ApiError::internal(format!("cannot encode object: {e}"))
    })
}
