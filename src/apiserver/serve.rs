//! Connections and the top of the request path: TLS accept, per-connection identity, HTTP/1.1
//! or HTTP/2 (ALPN), then authenticate → classify → authorize → dispatch, with metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use tokio_rustls::TlsAcceptor;

use super::body::{error_response, text_response, Body};
use super::request::{classify, Query};
use super::status::ApiError;
use super::{audit, discovery, handlers, health, impersonation, rampart_api, State};
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
            let chain: Option<Vec<CertificateDer<'static>>> = {
                let (_, conn) = tls.get_ref();
                conn.peer_certificates()
                    .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
            };
            let identity = Connection::new(chain, &state);
            let had_certificate = identity.chain.is_some();
            let mut revocations = state.revocations.subscribe();
            let mut pki_changes = state.tls.authority().subscribe();
            let service_state = state.clone();
            let service_identity = identity.clone();
            let service = hyper::service::service_fn(move |req| {
                let state = service_state.clone();
                let identity = service_identity.clone();
                async move { Ok::<_, Infallible>(handle(state, peer, identity, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            tokio::pin!(conn);
            // A certificate revoked or no longer trusted (CA retired) ends the connections
            // made with it — open watches included — instead of waiting for a reconnect.
            loop {
                tokio::select! {
                    done = &mut conn => {
                        if let Err(e) = done {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        return;
                    }
                    r = revocations.changed() => { if r.is_err() { return; } }
                    r = pki_changes.changed() => { if r.is_err() { return; } }
                }
                if had_certificate && !identity.still_valid(&state) {
                    tracing::info!(%peer, "closing a connection whose client certificate is no longer valid");
                    return;
                }
            }
        });
    }
}

/// A connection's client certificate and what it proved, re-verified whenever the PKI
/// changes (renewal, CA rotation), so a certificate the cluster stopped trusting stops working
/// on connections that were already open.
struct Connection {
    chain: Option<Vec<CertificateDer<'static>>>,
    /// Chains are verified as of the handshake: expiry afterwards is checked per request
    /// (`auth::authn`), so a watch opened before its certificate expired runs to its end,
    /// while trust changes (a retired CA) still apply at once.
    established: rustls::pki_types::UnixTime,
    verified: std::sync::RwLock<(u64, auth::authn::ConnIdentity)>,
}

impl Connection {
    fn new(chain: Option<Vec<CertificateDer<'static>>>, state: &State) -> Arc<Connection> {
        let trust = state.tls.client_trust();
        let established = rustls::pki_types::UnixTime::now();
        let id = Self::verify(chain.as_deref(), &trust, established);
        Arc::new(Connection {
            chain,
            established,
            verified: std::sync::RwLock::new((trust.generation, id)),
        })
    }

    fn verify(
        chain: Option<&[CertificateDer<'static>]>,
        trust: &super::tls::ClientTrust,
        at: rustls::pki_types::UnixTime,
    ) -> auth::authn::ConnIdentity {
        match chain {
            Some(chain) => {
                auth::x509::authenticate(&trust.verifier, chain, &trust.intermediates, at)
                    .map_err(|e| e.to_string())
            }
            None => Err(auth::x509::Error::NoCertificate.to_string()),
        }
    }

    /// Whether the certificate this connection authenticated with is still trusted and not
    /// revoked (expiry alone does not end a connection; see `established`).
    fn still_valid(&self, state: &State) -> bool {
        match self.identity(state) {
            Ok(id) => state.authn.cert_checks.iter().all(|c| c.check(&id).is_ok()),
            Err(_) => false,
        }
    }

    fn identity(&self, state: &State) -> auth::authn::ConnIdentity {
        let trust = state.tls.client_trust();
        if let Ok(v) = self.verified.read() {
            if v.0 == trust.generation {
                return v.1.clone();
            }
        }
        let id = Self::verify(self.chain.as_deref(), &trust, self.established);
        if let Ok(mut v) = self.verified.write() {
            *v = (trust.generation, id.clone());
        }
        id
    }
}

/// Audits the request around serving it: refused with 503 up front when the audit log cannot
/// be written, and its line written before the response is returned (see `audit`).
async fn handle(
    state: Arc<State>,
    peer: SocketAddr,
    identity: Arc<Connection>,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some(sink) = state.audit.clone() else {
        return serve_request(state, peer, identity, req, &mut audit::Outcome::default()).await;
    };
    if !sink.writable() {
        return audit::unavailable();
    }
    let start = audit::Start::new(&req, peer);
    let mut outcome = audit::Outcome::default();
    let response = serve_request(state, peer, identity, req, &mut outcome).await;
    audit::finish(&sink, start, outcome, response).await
}

async fn serve_request(
    state: Arc<State>,
    peer: SocketAddr,
    identity: Arc<Connection>,
    req: Request<Incoming>,
    outcome: &mut audit::Outcome,
) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let info = classify(&method, &path, &query);
    // A path that serves nothing at its scope (a cluster-scoped resource under
    // /namespaces/{ns}/) is refused before authorization, below; its audit line, whatever the
    // outcome, names no object in a scope the request never reached.
    let scope = match state
        .registry
        .lookup(&info.group, &info.version, &info.resource)
    {
        Some(ri) if info.resource_request => super::request::check_scope(&info, &ri),
        _ => Ok(()),
    };
    outcome.info = Some(match scope {
        Ok(()) => info.clone(),
        Err(_) => info.unrouted(&method),
    });

    let response = if path == "/cacerts" && method == "GET" {
        // The one unauthenticated endpoint: the CA bundle, needed to pin it before joining.
        text_response(200, state.tls.bundle_pem())
    } else {
        let conn_identity = identity.identity(&state);
        if let Ok(id) = &conn_identity {
            state.node_issuers.observe(id);
        }
        match state
            .authn
            .authenticate(&conn_identity, req.headers())
            .await
        {
            Err(auth::authn::Refusal {
                message,
                retry_after: Some(wait),
            }) => throttled(&message, wait),
            Err(why) => error_response(&ApiError::unauthorized(format!("Unauthorized: {why}"))),
            Ok(user) => {
                outcome.user = Some(user.clone());
                // `kubectl --as`: from here on the request acts as the impersonated user.
                let user = match impersonation::resolve(&state, user, req.headers()) {
                    Ok(u) => u,
                    Err(e) => return error_response(&e),
                };
                if outcome.user.as_ref() != Some(&user) {
                    outcome.impersonated = Some(user.clone());
                }
                let user = &user;
                // The scope is settled before authorization, so no decision is ever made
                // about a scope the handler would not act in.
                if let Err(e) = scope {
                    return error_response(&handlers::scope_error(e));
                }
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
                let decision = match &state.authorizer {
                    Some(authz) => authz.authorize(&attrs),
                    None => auth::Decision::allow(Vec::new()),
                };
                outcome.decision = Some(decision.clone());
                match decision {
                    d if !d.allowed => error_response(&forbidden(&attrs, &d.reason)),
                    _ if info.resource_request => {
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
                    _ if path.starts_with("/rampart/v1/") => {
                        rampart_api::serve(&state, user, &path, req).await
                    }
                    _ => non_resource(&state, &path, &query, req).await,
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

/// 429 for a credential that must back off (upstream's `NewTooManyRequests`: Retry-After
/// header and `details.retryAfterSeconds`).
fn throttled(message: &str, wait: Duration) -> Response<Body> {
    let secs = wait.as_secs().max(1);
    let mut resp = error_response(
        &ApiError::new(429, "TooManyRequests", message)
            .with_details(serde_json::json!({ "retryAfterSeconds": secs })),
    );
    if let Ok(v) = http::HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
    resp
}

/// Upstream's forbidden message (`pods "web" is forbidden: User "bob" cannot get resource
/// "pods" in API group "" in the namespace "default"`), followed by the authorizer's reason,
/// which names the deciding policies. It names only the caller's own request.
pub(super) fn forbidden(attrs: &auth::Attributes<'_>, reason: &str) -> ApiError {
    let user = &attrs.user.name;
    let mut msg = if attrs.resource_request {
        let gr = if attrs.api_group.is_empty() {
            attrs.resource.to_string()
        } else {
            format!("{}.{}", attrs.resource, attrs.api_group)
        };
        let what = if attrs.name.is_empty() {
            format!("{gr} is forbidden")
        } else {
            format!("{gr} \"{}\" is forbidden", attrs.name)
        };
        let resource = if attrs.subresource.is_empty() {
            attrs.resource.to_string()
        } else {
            format!("{}/{}", attrs.resource, attrs.subresource)
        };
        let scope = if attrs.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{}\"", attrs.namespace)
        };
        format!(
            "{what}: User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
            attrs.verb, attrs.api_group
        )
    } else {
        format!(
            "forbidden: User \"{user}\" cannot {} path \"{}\"",
            attrs.verb, attrs.path
        )
    };
    if !reason.is_empty() {
        msg.push_str(": ");
        msg.push_str(reason);
    }
    let mut err = ApiError::forbidden(msg);
    if attrs.resource_request {
        let mut details = serde_json::json!({"group": attrs.api_group, "kind": attrs.resource});
        if !attrs.name.is_empty() {
            details["name"] = serde_json::json!(attrs.name);
        }
        err = err.with_details(details);
    }
    err
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
        "/.well-known/openid-configuration" | "/openid/v1/jwks" => {
            super::sa_tokens::discovery(state.service_accounts.as_deref(), path)
                .unwrap_or_else(|| error_response(&ApiError::path_not_found()))
        }
        "/metrics" => state.metrics.render(state),
        p if p == "/openapi/v2" || p.starts_with("/openapi/v3") => {
            discovery::openapi(state, p, &accept)
        }
        p => discovery::serve(state, p, &accept),
    }
}
