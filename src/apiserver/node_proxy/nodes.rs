//! `/api/v1/nodes/{name}/proxy/{path}` (upstream's `NodeProxyREST` with the kubelet as
//! backend): the request, with its method, query and body, goes to the node's kubelet API
//! as the apiserver's kubelet client, and the kubelet's answer streams back unchanged. The
//! caller was authorised for `nodes/proxy` with the verb of its method (GET → get, POST →
//! create, ...). Connection upgrades are never proxied here, so `get nodes/proxy` cannot open
//! exec or port-forward sessions through the apiserver's identity (the escalation upstream
//! documents for WebSocket GETs); those go through `pods/exec|attach|portforward`.

use http::Response;
use hyper::body::Incoming;

use crate::apiserver::context::Ctx;
use crate::apiserver::edge::body::Body;
use crate::apiserver::status::{ApiError, ApiResult};

pub(in crate::apiserver) async fn serve(ctx: &Ctx, body: Incoming) -> ApiResult<Response<Body>> {
    if ctx.headers.get(http::header::UPGRADE).is_some() {
        return Err(ApiError::bad_request(
            "connection upgrades are not proxied to nodes: use pods/exec, pods/attach or pods/portforward",
        ));
    }
    let method = match ctx.info.verb.as_str() {
        "get" => http::Method::GET,
        "create" => http::Method::POST,
        "update" => http::Method::PUT,
        "patch" => http::Method::PATCH,
        "delete" => http::Method::DELETE,
        other => {
            return Err(ApiError::method_not_allowed(format!(
                "{other} is not supported on nodes/proxy"
            )))
        }
    };
    // Everything after `/nodes/{name}/proxy`.
    let marker = format!("/nodes/{}/proxy", ctx.info.name);
    let rest = ctx
        .info
        .path
        .split_once(&marker)
        .map(|(_, r)| r)
        .unwrap_or("");
    let mut target = if rest.is_empty() {
        "/".to_string()
    } else {
        rest.to_string()
    };
    if !target.starts_with('/') {
        return Err(ApiError::path_not_found());
    }
    let query = ctx
        .query
        .0
        .iter()
        .fold(
            form_urlencoded::Serializer::new(String::new()),
            |mut s, (k, v)| {
                s.append_pair(k, v);
                s
            },
        )
        .finish();
    if !query.is_empty() {
        target.push('?');
        target.push_str(&query);
    }
    let content_type = ctx.headers.get(http::header::CONTENT_TYPE).cloned();
    let send_body = (method != http::Method::GET).then_some((body, content_type));
    let resp = super::kubelet_request(
        &ctx.state,
        &ctx.info.name,
        method,
        &target,
        send_body,
        &http::HeaderMap::new(),
    )
    .await?;
    let (parts, body) = resp.into_parts();
    let mut out = Response::new(super::stream_body(body));
    *out.status_mut() = parts.status;
    if let Some(ct) = parts.headers.get(http::header::CONTENT_TYPE) {
        out.headers_mut()
            .insert(http::header::CONTENT_TYPE, ct.clone());
    }
    Ok(out)
}
