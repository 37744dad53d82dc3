//! GET of one object (and `as=Table`).

use http::Response;

use super::{output, Ctx};
use crate::apiserver::edge::body::Body;
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::storage;

pub async fn get(ctx: &Ctx) -> ApiResult<Response<Body>> {
    let name = &ctx.info.name;
    // resourceVersion on a GET: "" and "0" mean latest; a specific one reads that snapshot.
    let revision = match ctx.query.get("resourceVersion") {
        None | Some("0") => None,
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("invalid resourceVersion {rv:?}: not a number"))
        })?),
    };
    let kv = ctx
        .state
        .store
        .get(&ctx.key(name), revision)
        .await
        .map_err(|e| ApiError::from_store(e, &ctx.ri, name))?
        .ok_or_else(|| ApiError::not_found(&ctx.ri, name))?;
    let obj = storage::decode(&kv, &ctx.ri)?;
    Ok(output::object(ctx, obj))
}
