//! Connections and the top of the request path: TLS accept, per-connection identity, HTTP/1.1
//! or HTTP/2 (ALPN), then authenticate → classify → authorize → dispatch, with metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_rustls::TlsAcceptor;

use super::body::{error_response, text_response, Body};
use super::request::{classify, Query};
use super::status::ApiError;
use super::{discovery, handlers, health, rampart_api, State};
use crate::auth;

pub(super) async fn accept_loop(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    state: Arc<State>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(config);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let identity: auth::authn::ConnIdentity = {
                let (_, conn) = tls.get_ref();
                match conn.peer_certificates() {
                    Some(chain) => {
                        let chain: Vec<_> = chain.iter().map(|c| c.clone().into_owned()).collect();
                        auth::x509::authenticate(&state.client_verifier, &chain)
                            .map_err(|e| e.to_string())
                    }
                    None => Err(auth::x509::Error::NoCertificate.to_string()),
                }
            };
            let identity = Arc::new(identity);
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                let identity = identity.clone();
                async move { Ok::<_, Infallible>(handle(state, peer, identity, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

async fn handle(
    state: Arc<State>,
    peer: SocketAddr,
    identity: Arc<auth::authn::ConnIdentity>,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let info = classify(&method, &path, &query);

    let response = if path == "/cacerts" && method == "GET" {
        // The one unauthenticated endpoint: the CA bundle, needed to pin it before joining.
        text_response(200, state.ca_pem.clone())
    } else {
        let authn = state.authn.authenticate(&identity, req.headers());
        // The client address scopes the join-token failure limit (auth::bootstrap).
        match auth::bootstrap::PEER_IP.scope(peer.ip(), authn).await {
            Err(why) => error_response(&ApiError::unauthorized(format!("Unauthorized: {why}"))),
            Ok(user) => {
                let user = &user;
                let attrs = auth::Attributes {
                    user,
                    verb: &info.verb,
                    resource_request: info.resource_request,
                    api_group: &info.group,
                    resource: &info.resource,
                    subresource: &info.subresource,
                    namespace: &info.namespace,
                    name: &info.name,
                    path: &path,
                };
                match auth::authorize(&attrs) {
                    auth::Decision::Deny(why) => error_response(&ApiError::forbidden(why)),
                    auth::Decision::Allow if info.resource_request => {
                        // Long-running watches do not count against the in-flight limit.
                        let permit = if info.verb == "watch" {
                            None
                        } else {
                            match state.inflight.try_acquire() {
                                Ok(p) => Some(p),
                                Err(_) => {
                                    let mut resp = error_response(&ApiError::new(
                                        429,
                                        "TooManyRequests",
                                        "Too many requests, please try again later.",
                                    ));
                                    resp.headers_mut().insert(
                                        http::header::RETRY_AFTER,
                                        http::HeaderValue::from_static("1"),
                                    );
                                    return resp;
                                }
                            }
                        };
                        let resp =
                            handlers::dispatch(&state, user.clone(), info.clone(), query, req)
                                .await;
                        drop(permit);
                        resp
                    }
                    auth::Decision::Allow if path.starts_with("/rampart/v1/") => {
                        rampart_api::serve(&state, user, &path, req).await
                    }
                    auth::Decision::Allow => non_resource(&state, &path, &query, req).await,
                }
            }
        }
    };
    let code = response.status().as_u16();
    state.metrics.observe(
        &info.verb,
        &info.group,
        &info.resource,
        &info.subresource,
        code,
        started.elapsed(),
    );
    tracing::debug!(%peer, %method, %path, code, "request");
    response
}

async fn non_resource(
    state: &Arc<State>,
    path: &str,
    query: &Query,
    req: Request<Incoming>,
) -> Response<Body> {
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return error_response(&ApiError::method_not_allowed(format!(
            "{} is not supported on {path}",
            req.method()
        )));
    }
    let accept = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    match path {
        "/healthz" | "/livez" | "/readyz" => health::check(state, path, query, None).await,
        p if p.starts_with("/healthz/")
            || p.starts_with("/livez/")
            || p.starts_with("/readyz/") =>
        {
            let (base, check) = p[1..].split_once('/').unwrap_or((p, ""));
            health::check(state, &format!("/{base}"), query, Some(check)).await
        }
        "/version" => health::version(),
        "/metrics" => state.metrics.render(state),
        p if p == "/openapi/v2" || p.starts_with("/openapi/v3") => {
            discovery::openapi(state, p, &accept)
        }
        p => discovery::serve(state, p, &accept),
    }
}
