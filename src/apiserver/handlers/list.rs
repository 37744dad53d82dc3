//! LIST: label and field selectors, `limit`/`continue` pagination from one consistent snapshot,
//! `resourceVersion`/`resourceVersionMatch`, all-namespace lists, and `as=Table`.
//!
//! Invariant: a list decodes no more than it needs. Without selectors it fetches `limit`
//! objects (the store says whether more follow); with selectors it scans pages of at least 50
//! raw values but decodes them one by one and stops at the `limit`-th match. Upstream's
//! `apiserver_storage_list_{fetched,evaluated,returned}_objects_total` count it.

use base64::Engine;
use http::Response;
use serde_json::{json, Value};

use super::selectors::Selectors;
use super::{list_stream, output, Ctx};
use crate::apiserver::edge::body::Body;
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::{storage, table};
use crate::store::RangeRequest;

fn encode_continue(rev: u64, start: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": start});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

fn decode_continue(token: &str) -> ApiResult<(u64, String)> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = v["rv"].as_u64().filter(|r| *r > 0).ok_or_else(bad)?;
    let start = v["start"].as_str().ok_or_else(bad)?.to_string();
    if start.contains("..") || start.starts_with('/') {
        return Err(bad());
    }
    Ok((rev, start))
}

fn store_error(ctx: &Ctx, e: crate::store::Error) -> ApiError {
    match e {
        crate::store::Error::Compacted { .. } if ctx.query.get("continue").is_some() => {
            ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results.")
        }
        other => ApiError::from_store(other, &ctx.ri, ""),
    }
}

/// A whole LIST (no `limit`) as a streamed body: upstream's envelope (a `<Kind>List`, or a
/// Table for `as=Table`) with the items written into it page by page.
fn streamed(
    ctx: &Ctx,
    selectors: Selectors,
    prefix: String,
    first: crate::store::RangeResponse,
) -> Response<Body> {
    let rv = first.revision.to_string();
    let (envelope, row) = if output::wants_table(ctx) {
        let (cols, row) = output::table_parts(ctx);
        let mode = output::include(ctx);
        let (group, kind) = (ctx.ri.group.clone(), ctx.ri.kind.clone());
        let row: list_stream::RowJson = Box::new(move |o: &Value| {
            table::TableRow::new(row(o), o, mode)
                .with_conditions(table::row_conditions(&group, &kind, o))
                .into_json()
        });
        (table::table(cols, Vec::new(), &rv, None, None), Some(row))
    } else {
        let mut list = serde_json::Map::new();
        list.insert("kind".into(), json!(ctx.ri.list_kind));
        list.insert("apiVersion".into(), json!(ctx.ri.api_version()));
        list.insert("metadata".into(), json!({"resourceVersion": rv}));
        list.insert("items".into(), json!([]));
        (Value::Object(list), None)
    };
    list_stream::response(list_stream::ListBody {
        state: ctx.state.clone(),
        prefix,
        ri: ctx.ri.clone(),
        selectors,
        row,
        envelope: serde_json::to_vec(&envelope).unwrap_or_default(),
        first,
    })
}

pub async fn list(ctx: &Ctx) -> ApiResult<Response<Body>> {
    let selectors = Selectors::parse(ctx)?;
    let limit = match ctx.query.get("limit") {
        None => 0,
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?
            .max(0) as usize,
    };
    let ns = (!ctx.info.namespace.is_empty() && ctx.ri.namespaced)
        .then_some(ctx.info.namespace.as_str());
    let prefix = storage::prefix(&ctx.ri, ns);
    let (mut revision, mut start_after) = match ctx.query.get("continue") {
        Some(token) => {
            let (rev, start) = decode_continue(token)?;
            (Some(rev), Some(format!("{prefix}{start}")))
        }
        None => {
            let rv = ctx.query.get("resourceVersion");
            let exact = ctx.query.get("resourceVersionMatch") == Some("Exact");
            match rv {
                Some(rv) if exact => (
                    Some(rv.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                    })?),
                    None,
                ),
                Some(rv) if rv != "0" => {
                    rv.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                    })?;
                    (None, None)
                }
                _ => (None, None),
            }
        }
    };
    if limit == 0 {
        // The whole list: streamed from the snapshot (`list_stream`), never held at once.
        let first = ctx
            .state
            .store
            .range(RangeRequest {
                prefix: prefix.clone(),
                start_after,
                limit: list_stream::FIRST_PAGE,
                revision,
            })
            .await
            .map_err(|e| store_error(ctx, e))?;
        return Ok(streamed(ctx, selectors, prefix, first));
    }
    let page = match limit {
        0 => 0,
        l if selectors.everything() => l,
        l => l.max(50),
    };
    let mut items = Vec::new();
    let mut more = false;
    let mut last_key = None;
    let (mut fetched, mut evaluated) = (0usize, 0usize);
    let served_rev;
    loop {
        let resp = ctx
            .state
            .store
            .range(RangeRequest {
                prefix: prefix.clone(),
                start_after: start_after.clone(),
                limit: page,
                revision,
            })
            .await
            .map_err(|e| store_error(ctx, e))?;
        revision = Some(resp.revision);
        let n = resp.items.len();
        fetched += n;
        // Decoding thousands of objects is CPU work: let the runtime move other tasks away.
        // One at a time, stopping at the limit: what is not returned is not decoded.
        let filled = tokio::task::block_in_place(|| -> ApiResult<Option<bool>> {
            for (i, kv) in resp.items.iter().enumerate() {
                let obj = storage::decode(kv, &ctx.ri)?;
                evaluated += 1;
                last_key = Some(kv.key.clone());
                if !selectors.matches(&obj) {
                    continue;
                }
                items.push(obj);
                if limit > 0 && items.len() == limit {
                    return Ok(Some(i + 1 < n || resp.more));
                }
            }
            Ok(None)
        })?;
        if let Some(rest) = filled {
            more = rest;
        }
        if filled.is_some() || !resp.more || limit == 0 {
            served_rev = resp.revision;
            break;
        }
        start_after = last_key.clone();
    }
    ctx.state
        .metrics
        .observe_list(&ctx.ri.group_resource(), fetched, evaluated, items.len());
    let continue_token = match (more, &last_key) {
        (true, Some(k)) => Some(encode_continue(
            served_rev,
            k.strip_prefix(&prefix).unwrap_or(k),
        )),
        _ => None,
    };
    Ok(output::list(ctx, items, served_rev, continue_token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "default/web-1");
        assert_eq!(
            decode_continue(&t).unwrap(),
            (42, "default/web-1".to_string())
        );
        assert!(decode_continue("not-base64!").is_err());
        let evil = base64::engine::general_purpose::URL_SAFE.encode(r#"{"rv":1,"start":"/etc"}"#);
        assert!(decode_continue(&evil).is_err());
    }
}
