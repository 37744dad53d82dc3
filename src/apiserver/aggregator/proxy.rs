//! Forwarding one request to an extension API server (upstream's `proxyHandler` in
//! `kube-aggregator/pkg/apiserver/handler_proxy.go`).
//!
//! The caller was authenticated and authorized by this server before anything here runs.
//! What the extension server learns of the caller is only what the front-proxy headers say:
//! its `Authorization`, `Impersonate-*` and any `X-Remote-*` headers are removed, and
//! `X-Remote-User`, one `X-Remote-Group` per group and `X-Remote-Extra-<key>` (the key
//! percent-encoded, as upstream) are set from the identity this server established. The
//! connection presents the front-proxy client certificate, which is how the extension
//! server knows the headers come from us. Responses (watches included) stream through.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;

use super::Target;
use crate::apiserver::edge::body::{self, error_response, Body};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::storage::{self, Builtin};
use crate::apiserver::State;
use crate::auth::UserInfo;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the extension server may take to start its answer (its body may stream longer).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// The leaf the API server presents to extension servers (see `pki/profiles.yaml`).
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";
/// The authority that signs it, which extension servers trust for the `X-Remote-*` headers.
pub const FRONT_PROXY_CA: &str = "front-proxy-ca";

/// Headers never forwarded: hop-by-hop ones, the caller's credentials, and anything that
/// could pass for the identity headers we set.
fn dropped(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "authorization"
            | "proxy-authorization"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    ) || n.starts_with("impersonate-")
        || n.starts_with("x-remote-")
}

/// The front-proxy identity headers for `user` (upstream's `requestheader` names).
pub fn identity_headers(user: &UserInfo) -> HeaderMap {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    // Upstream's `headerKeyEscape`: an HTTP token character stays (but `%`), anything
    // else is percent-encoded.
    const KEY: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'!')
        .remove(b'#')
        .remove(b'$')
        .remove(b'&')
        .remove(b'\'')
        .remove(b'*')
        .remove(b'+')
        .remove(b'-')
        .remove(b'.')
        .remove(b'^')
        .remove(b'_')
        .remove(b'`')
        .remove(b'|')
        .remove(b'~');
    let mut h = HeaderMap::new();
    let value = |s: &str| HeaderValue::from_str(s).ok();
    if let Some(v) = value(&user.name) {
        h.insert("x-remote-user", v);
    }
    for g in &user.groups {
        if let Some(v) = value(g) {
            h.append("x-remote-group", v);
        }
    }
    for (k, vs) in &user.extra {
        let key = utf8_percent_encode(k, KEY).to_string().to_ascii_lowercase();
        let Ok(name) = HeaderName::from_bytes(format!("x-remote-extra-{key}").as_bytes()) else {
            continue;
        };
        for v in vs.iter().filter_map(|v| value(v)) {
            h.append(name.clone(), v);
        }
    }
    h
}

/// Proxy `req` (already authorized for `user`) to `target`; errors become Status responses.
pub async fn proxy(
    state: &Arc<State>,
    target: &Target,
    user: &UserInfo,
    req: Request<Incoming>,
) -> Response<Body> {
    match forward(state, target, user, req).await {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    }
}

async fn forward(
    state: &Arc<State>,
    target: &Target,
    user: &UserInfo,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let (parts, body_in) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut headers: HeaderMap = parts
        .headers
        .iter()
        .filter(|(k, _)| !dropped(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    headers.extend(identity_headers(user));
    let body: Body = body_in.map_err(std::io::Error::other).boxed();
    let resp = send(state, target, parts.method, &path_and_query, headers, body).await?;
    let (mut parts, body) = resp.into_parts();
    for name in [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "trailer",
        "upgrade",
    ] {
        parts.headers.remove(name);
    }
    Ok(Response::from_parts(
        parts,
        body.map_err(std::io::Error::other).boxed(),
    ))
}

/// Send one request to an endpoint of `target`'s Service.
pub(super) async fn send(
    state: &State,
    target: &Target,
    method: http::Method,
    path_and_query: &str,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response<Incoming>> {
    let addr = endpoint(state, target).await?;
    let unavailable = |e: String| {
        ApiError::unavailable(format!(
            "error trying to reach service: {e} (service {}/{}, endpoint {addr})",
            target.namespace, target.service
        ))
    };
    let server_name = ServerName::try_from(target.server_name())
        .map_err(|e| ApiError::internal(format!("service name: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(tls_config(state, target)?);
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(&addr)
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
        .map_err(|_| unavailable("connection timed out".into()))?
        .map_err(unavailable)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "extension API server connection ended");
        }
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(http::header::HOST, target.server_name());
    if let Some(h) = req.headers_mut() {
        h.extend(headers);
    }
    let req = req
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| unavailable("no answer".into()))?
        .map_err(|e| unavailable(e.to_string()))
}

/// An address of the Service's endpoint for the APIService's port (upstream's
/// `ResolveEndpoint`): the Service port numbered `target.port` names the Endpoints port.
pub(super) async fn endpoint(state: &State, target: &Target) -> ApiResult<String> {
    let (ns, name) = (&target.namespace, &target.service);
    let read = |b: Builtin| {
        let key = b.key(ns, name);
        async move {
            match state.store.get(&key, None).await {
                Ok(Some(kv)) => storage::decode_object(&kv).ok(),
                _ => None,
            }
        }
    };
    let svc = read(Builtin::Services)
        .await
        .ok_or_else(|| ApiError::unavailable(format!("service \"{name}\" not found")))?;
    let port_name = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"].as_i64() == Some(target.port))
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .ok_or_else(|| {
            ApiError::unavailable(format!(
                "no service port {} found for service \"{name}\"",
                target.port
            ))
        })?;
    let eps = read(Builtin::Endpoints).await.unwrap_or(Value::Null);
    for subset in eps["subsets"].as_array().into_iter().flatten() {
        let port = subset["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str().unwrap_or_default() == port_name)
            .and_then(|p| p["port"].as_i64());
        let ip = subset["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|a| a["ip"].as_str());
        if let (Some(ip), Some(port)) = (ip, port) {
            return Ok(if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            });
        }
    }
    Err(ApiError::unavailable(format!(
        "no endpoints available for service \"{name}\""
    )))
}

fn tls_config(state: &State, target: &Target) -> ApiResult<Arc<rustls::ClientConfig>> {
    use crate::tls::client::{client_config, ClientIdentity, Error, Trust};
    let m = state.tls.authority().current();
    let ident = m.identity(FRONT_PROXY_CLIENT).ok_or_else(|| {
        ApiError::internal("extension API server TLS: no front-proxy client certificate")
    })?;
    let trust = if target.insecure_skip_tls_verify {
        Trust::AnyServer
    } else {
        Trust::Pem(&target.ca_bundle)
    };
    let identity = ClientIdentity {
        cert_pem: ident.cert_pem.as_bytes(),
        key_pem: ident.key_pem.as_bytes(),
    };
    client_config(trust, Some(identity), &[b"http/1.1"]).map_err(|e| match e {
        // The APIService's own caBundle is the object's fault, not the server's.
        Error::AnchorPem(_) | Error::Anchor(_) | Error::NoAnchor => {
            ApiError::unavailable(format!("the APIService's caBundle: {e}"))
        }
        other => ApiError::internal(format!("extension API server TLS: {other}")),
    })
}

/// `GET path` with an empty body (the availability check).
pub(super) async fn get(
    state: &State,
    target: &Target,
    path: &str,
    headers: HeaderMap,
) -> ApiResult<Response<Incoming>> {
    send(
        state,
        target,
        http::Method::GET,
        path,
        headers,
        body::full(Bytes::new()),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_carry_the_established_user_only() {
        let user = UserInfo {
            name: "alice".into(),
            uid: String::new(),
            groups: vec!["dev".into(), "system:authenticated".into()],
            extra: [("scopes.example.com/a b".to_string(), vec!["x".to_string()])]
                .into_iter()
                .collect(),
        };
        let h = identity_headers(&user);
        assert_eq!(h["x-remote-user"], "alice");
        let groups: Vec<_> = h.get_all("x-remote-group").iter().collect();
        assert_eq!(groups, ["dev", "system:authenticated"]);
        assert_eq!(h["x-remote-extra-scopes.example.com%2fa%20b"], "x");
        for n in [
            "authorization",
            "x-remote-user",
            "impersonate-user",
            "connection",
        ] {
            assert!(dropped(&HeaderName::from_static(n)), "{n}");
        }
        assert!(!dropped(&HeaderName::from_static("accept")));
    }
}
