//! `pods/attach` (upstream's `AttachREST` + the upgrade-aware proxy): authorised as `create`
//! (also for kubectl's WebSocket GET, see `request.rs`), the container chosen and the pod
//! checked as for `exec` (`container X is not valid for pod Y`, `pod X does not have a host
//! assigned`, a completed pod: all 400), then the WebSocket upgrade (`v5.channel.k8s.io`) is
//! forwarded to the kubelet's `/attach/{ns}/{pod}/{container}` and spliced (`upgrade.rs`).

use http::Response;

use crate::apiserver::context::Ctx;
use crate::apiserver::edge::body::Body;
use crate::apiserver::status::{ApiError, ApiResult};

pub(in crate::apiserver) async fn serve(ctx: &mut Ctx) -> ApiResult<Response<Body>> {
    let name = ctx.info.name.clone();
    let (pod, _) = ctx.load(&name).await?;
    let container = super::log::choose_container(&pod, ctx.query.get("container"))?;
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        return Err(ApiError::bad_request(format!(
            "cannot attach to a container in a completed pod; current phase is {phase}"
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
            "Upgrade request required: attach is served over WebSocket (v5.channel.k8s.io) only",
        ));
    }
    let enc = |s: &str| -> String { form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    let path = format!(
        "/attach/{}/{}/{}?{}",
        enc(&ctx.info.namespace),
        enc(&name),
        enc(&container),
        ctx.raw_query
    );
    super::upgrade::splice(ctx, &node, &path).await
}
