//! The apiserver's side of the kubelet API (upstream's `pkg/registry/core/pod/rest/log.go`,
//! `subresources.go` and the kubelet client): `pods/log` (`log`), `nodes/{name}/proxy/...`
//! (`nodes`), and the upgraded streams of `pods/exec` (`exec`), `pods/attach` (`attach`) and
//! `pods/portforward` (`portforward`) spliced by `upgrade`, proxied to the node's kubelet
//! on its `daemonEndpoints.kubeletEndpoint.Port` at its InternalIP (k3s's preferred address
//! type; else the Hostname address).
//!
//! The connection is mTLS: the apiserver presents its kubelet-client identity (the
//! `apiserver-kubelet-client` leaf, `CN=system:kube-apiserver`, which the kubelet authorises
//! through a SubjectAccessReview like any caller) and trusts only the kubelet-serving CA for
//! the kubelet's certificate — a certificate from the server or client CA, even for the
//! node's address, is refused. Responses stream through (nothing is buffered but an error
//! body, capped); the audit line records the request, not the stream.

pub mod attach;
pub mod exec;
pub mod log;
pub mod nodes;
pub mod portforward;
mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;

use super::status::{ApiError, ApiResult};
use super::{storage, State};
use crate::apiserver::edge::body::Body;
use crate::tls::client::{client_config, ClientIdentity, Trust};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a kubelet's error answer is read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Where a node's kubelet listens: (address, port).
async fn kubelet_endpoint(state: &State, node: &str) -> ApiResult<(String, u16)> {
    let ri = state
        .registry
        .lookup("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not served"))?;
    let kv = state
        .store
        .get(&storage::key(&ri, "", node), None)
        .await
        .map_err(|e| ApiError::from_store(e, &ri, node))?
        .ok_or_else(|| ApiError::not_found(&ri, node))?;
    let obj = storage::decode(&kv, &ri)?;
    let addresses = obj["status"]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let pick = |kind: &str| {
        addresses
            .iter()
            .find(|a| a["type"] == kind)
            .and_then(|a| a["address"].as_str())
            .map(str::to_string)
    };
    let address = pick("InternalIP")
        .or_else(|| pick("Hostname"))
        .ok_or_else(|| {
            ApiError::unavailable(format!(
                "node \"{node}\" reports no address for its kubelet"
            ))
        })?;
    let port = obj["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| ApiError::unavailable(format!("node \"{node}\" reports no kubelet port")))?;
    Ok((address, port))
}

fn tls_config(state: &State) -> ApiResult<Arc<rustls::ClientConfig>> {
    let m = state.tls.authority().current();
    let bad = |what: &str| ApiError::internal(format!("kubelet client TLS: {what}"));
    let anchor = m
        .authority_cert_pem("kubelet-serving-ca")
        .ok_or_else(|| bad("no kubelet-serving CA"))?;
    let ident = m
        .identity("apiserver-kubelet-client")
        .ok_or_else(|| bad("no apiserver-kubelet-client certificate"))?;
    client_config(
        Trust::Pem(anchor.as_bytes()),
        Some(ClientIdentity {
            cert_pem: ident.cert_pem.as_bytes(),
            key_pem: ident.key_pem.as_bytes(),
        }),
        &[b"http/1.1"],
    )
    .map_err(|e| bad(&e.to_string()))
}

/// Send `GET path_and_query` to the kubelet of `node`; the response as the kubelet gave it.
pub(super) async fn kubelet_get(
    state: &State,
    node: &str,
    path_and_query: &str,
) -> ApiResult<http::Response<hyper::body::Incoming>> {
    kubelet_request(
        state,
        node,
        http::Method::GET,
        path_and_query,
        None,
        &http::HeaderMap::new(),
    )
    .await
}

/// Send a request to the kubelet of `node` (a body is streamed through).
pub(super) async fn kubelet_request(
    state: &State,
    node: &str,
    method: http::Method,
    path_and_query: &str,
    body: Option<(hyper::body::Incoming, Option<http::HeaderValue>)>,
    extra_headers: &http::HeaderMap,
) -> ApiResult<http::Response<hyper::body::Incoming>> {
    let (address, port) = kubelet_endpoint(state, node).await?;
    let unreachable = |e: String| {
        ApiError::unavailable(format!(
            "cannot reach the kubelet of node \"{node}\" at {address}:{port}: {e}"
        ))
    };
    let server_name =
        ServerName::try_from(address.clone()).map_err(|e| unreachable(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(tls_config(state)?);
    let host = if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    };
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(&host)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| e.to_string())
    };
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(unreachable)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "kubelet connection ended");
        }
    });
    let mut req = http::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(http::header::HOST, host.as_str());
    for (k, v) in extra_headers {
        req = req.header(k, v);
    }
    let body: Body = match body {
        Some((b, content_type)) => {
            if let Some(ct) = content_type {
                req = req.header(http::header::CONTENT_TYPE, ct);
            }
            b.map_err(std::io::Error::other).boxed()
        }
        None => crate::apiserver::edge::body::full(Bytes::new()),
    };
    let req = req
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .map_err(|_| unreachable("no answer".into()))?
        .map_err(|e| unreachable(e.to_string()))
}

/// A kubelet's error answer as our error: its `metav1.Status` when it sent one.
pub(super) async fn kubelet_error(resp: http::Response<hyper::body::Incoming>) -> ApiError {
    let code = resp.status().as_u16();
    let limited = http_body_util::Limited::new(resp.into_body(), MAX_ERROR_BODY);
    let bytes = match tokio::time::timeout(Duration::from_secs(10), limited.collect()).await {
        Ok(Ok(c)) => c.to_bytes(),
        _ => Bytes::new(),
    };
    let status: Option<Value> = serde_json::from_slice(&bytes).ok();
    let message = status
        .as_ref()
        .and_then(|s| s["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
    match code {
        400 => ApiError::bad_request(message),
        401 | 403 => ApiError::new(
            code,
            if code == 401 {
                "Unauthorized"
            } else {
                "Forbidden"
            },
            format!("the kubelet refused the API server: {message}"),
        ),
        404 => ApiError::new(404, "NotFound", message),
        _ => ApiError::new(
            if code >= 500 { code } else { 500 },
            "InternalError",
            message,
        ),
    }
}

/// Stream a kubelet's body out as ours.
pub(super) fn stream_body(body: hyper::body::Incoming) -> Body {
    body.map_err(std::io::Error::other).boxed()
}
