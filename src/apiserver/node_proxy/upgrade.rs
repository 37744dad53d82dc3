//! The upgrade half of the node proxy (upstream's `UpgradeAwareHandler` for the streaming
//! subresources): the client's WebSocket handshake headers are forwarded to the node's
//! kubelet over mTLS, and once the kubelet answers 101 Switching Protocols the two upgraded
//! connections are spliced byte for byte until either side ends. Any other answer from the
//! kubelet is handed back as its Status. Used by `pods/exec` and `pods/portforward`; the
//! audit line records the request (the 101), never the stream.

use http::Response;

use crate::apiserver::context::Ctx;
use crate::apiserver::edge::body::{full, Body};
use crate::apiserver::status::{ApiError, ApiResult};

/// Headers of the WebSocket handshake passed through, both ways.
const HANDSHAKE: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-accept",
];

/// Forwards the upgrade of `ctx` to `path` on `node`'s kubelet and splices the streams.
pub(super) async fn splice(ctx: &mut Ctx, node: &str, path: &str) -> ApiResult<Response<Body>> {
    let Some(client_upgrade) = ctx.upgrade.take() else {
        return Err(ApiError::bad_request("Upgrade request required"));
    };
    let mut headers = http::HeaderMap::new();
    for h in HANDSHAKE {
        if let Some(v) = ctx.headers.get(*h) {
            if let Ok(name) = http::HeaderName::from_bytes(h.as_bytes()) {
                headers.insert(name, v.clone());
            }
        }
    }
    let mut resp =
        super::kubelet_request(&ctx.state, node, http::Method::GET, path, None, &headers).await?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(super::kubelet_error(resp).await);
    }
    let kubelet_upgrade = hyper::upgrade::on(&mut resp);
    let mut out = Response::new(full(bytes::Bytes::new()));
    *out.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    for h in HANDSHAKE {
        if let Some(v) = resp.headers().get(*h) {
            if let Ok(name) = http::HeaderName::from_bytes(h.as_bytes()) {
                out.headers_mut().insert(name, v.clone());
            }
        }
    }
    tokio::spawn(async move {
        let (c, k) = tokio::join!(client_upgrade, kubelet_upgrade);
        match (c, k) {
            (Ok(c), Ok(k)) => {
                let mut c = hyper_util::rt::TokioIo::new(c);
                let mut k = hyper_util::rt::TokioIo::new(k);
                if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut k).await {
                    tracing::debug!(error = %e, "upgraded stream ended");
                }
            }
            (c, k) => tracing::debug!(client = c.is_ok(), kubelet = k.is_ok(), "upgrade failed"),
        }
    });
    Ok(out)
}
