//! `pods/exec` (upstream's `ExecREST` + the upgrade-aware proxy): authorised as `create`
//! (also for kubectl's WebSocket GET, see `request.rs`), the pod and container checked as
//! upstream does (`you must specify at least 1 command`, `container X is not valid for pod
//! Y`, `cannot exec into a container in a completed pod; current phase is P`, `pod X does
//! not have a host assigned`: all 400), then the WebSocket upgrade is forwarded to the
//! node's kubelet (`/exec/{ns}/{pod}/{container}` with the same query and WebSocket headers)
//! over mTLS, and once the kubelet switches protocols the two connections are spliced byte
//! for byte. SPDY is not served: kubectl ≥ 1.30 speaks WebSocket `v5.channel.k8s.io` first.
//! The audit line records the request (the 101), never the stream.

use http::Response;

use crate::apiserver::context::Ctx;
use crate::apiserver::edge::body::Body;
use crate::apiserver::status::{ApiError, ApiResult};

pub(in crate::apiserver) async fn serve(ctx: &mut Ctx) -> ApiResult<Response<Body>> {
    let name = ctx.info.name.clone();
    let (pod, _) = ctx.load(&name).await?;
    let commands = form_urlencoded::parse(ctx.raw_query.as_bytes())
        .filter(|(k, _)| k == "command")
        .count();
    if commands == 0 {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    let container = super::log::choose_container(&pod, ctx.query.get("container"))?;
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        return Err(ApiError::bad_request(format!(
            "cannot exec into a container in a completed pod; current phase is {phase}"
        )));
    }
    let node = pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let websocket = ctx
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    if !websocket {
        return Err(ApiError::bad_request(
            "Upgrade request required: exec is served over WebSocket (v5.channel.k8s.io) only",
        ));
    }
    let enc = |s: &str| -> String { form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    let path = format!(
        "/exec/{}/{}/{}?{}",
        enc(&ctx.info.namespace),
        enc(&name),
        enc(&container),
        ctx.raw_query
    );
    super::upgrade::splice(ctx, &node, &path).await
}
