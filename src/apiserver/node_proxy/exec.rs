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

use crate::apiserver::body::{full, Body};
use crate::apiserver::handlers::Ctx;
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
    let enc = |s: &str| -> String { form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    let path = format!(
        "/exec/{}/{}/{}?{}",
        enc(&ctx.info.namespace),
        enc(&name),
        enc(&container),
        ctx.raw_query
    );
    let mut resp =
        super::kubelet_request(&ctx.state, &node, http::Method::GET, &path, None, &headers).await?;
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
                    tracing::debug!(error = %e, "exec stream ended");
                }
            }
            (c, k) => tracing::debug!(
                client = c.is_ok(),
                kubelet = k.is_ok(),
                "exec upgrade failed"
            ),
        }
    });
    Ok(out)
}
