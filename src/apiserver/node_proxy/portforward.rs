//! `pods/portforward` (upstream's `PortForwardREST`): authorised as `create` (also for
//! kubectl's WebSocket GET, see `request.rs`); the pod must have a host (`pod X does not
//! have a host assigned`, 400) and not be completed (upstream's kubelet refuses those), then
//! the WebSocket upgrade — kubectl ≥ 1.31 tunnels SPDY/3.1 in it, subprotocol
//! `SPDY/3.1+portforward.k8s.io` — is spliced through to the kubelet's
//! `/portforward/{ns}/{pod}`, which serves the tunnel itself (`kubelet/server/portforward.rs`).
//! A plain SPDY upgrade (kubectl's fallback) is refused with 400.

use http::Response;

use crate::apiserver::context::Ctx;
use crate::apiserver::edge::body::Body;
use crate::apiserver::status::{ApiError, ApiResult};

pub(in crate::apiserver) async fn serve(ctx: &mut Ctx) -> ApiResult<Response<Body>> {
    let name = ctx.info.name.clone();
    let (pod, _) = ctx.load(&name).await?;
    let node = pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        return Err(ApiError::bad_request(format!(
            "cannot port-forward to a container in a completed pod; current phase is {phase}"
        )));
    }
    let websocket = ctx
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    if !websocket {
        return Err(ApiError::bad_request(
            "Upgrade request required: port-forward is served over WebSocket (SPDY/3.1+portforward.k8s.io) only",
        ));
    }
    let enc = |s: &str| -> String { form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    let path = format!(
        "/portforward/{}/{}?{}",
        enc(&ctx.info.namespace),
        enc(&name),
        ctx.raw_query
    );
    super::upgrade::splice(ctx, &node, &path).await
}
