//! Connections and the top of the request path: TLS accept, per-connection identity, HTTP/1.1
//! or HTTP/2 (ALPN), then authenticate → classify → authorize → dispatch, with metrics.
//!
//! The connection layer's limits (`connections`): handshake, header and idle deadlines, the
//! per-address cap on connections nobody has authenticated on, and back-off on accept
//! errors. HEAD responses go out without a body (no HTTP/2 DATA frame), as Go's server does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use tokio_rustls::TlsAcceptor;

use super::body::{error_response, text_response, Body};
use super::connections::{self, Activity, Backoff, Phase, RateLimitedLog};
use super::request::{classify, Query};
use crate::apiserver::status::{self, ApiError};
use crate::apiserver::{
    edge::audit, edge::impersonation, endpoints::discovery, endpoints::health,
    endpoints::rampart_api, handlers, State,
};
use crate::auth;

pub(in crate::apiserver) async fn accept_loop(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    state: Arc<State>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(config);
    let accept_log = RateLimitedLog::default();
    let mut backoff = Backoff::default();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(x) => {
                    backoff.success();
                    x
                }
                Err(e) => {
                    // Out of descriptors (or memory) clears only as connections close: wait
                    // instead of spinning, and say so once in a while, not per attempt.
                    let delay = backoff.failure();
                    if let Some(suppressed) = accept_log.allow() {
                        tracing::warn!(error = %e, suppressed, retry_in = ?delay, "accept failed");
                    }
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            },
        };
        // Connections still in their handshake are capped per address: they have proved
        // nothing yet.
        let Some(handshaking) = state.peers.admit(peer.ip(), Phase::Handshake) else {
            refused(&state, peer, "TLS handshakes in progress");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let conn_state = state.clone();
        state.tasks.spawn("connection", async move {
            let state = conn_state;
            let tls = match tokio::time::timeout(
                state.limits.tls_handshake_timeout,
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
            drop(handshaking);
            serve_connection(state, peer, tls).await;
        });
    }
}

fn refused(state: &State, peer: SocketAddr, what: &str) {
    if let Some(suppressed) = state.peers.refused_log.allow() {
        tracing::warn!(
            %peer,
            suppressed,
            limit = state.limits.max_unauthenticated_per_ip,
            "refusing a connection: too many {what} from this address"
        );
    }
}

/// One TLS connection: HTTP/1.1 or HTTP/2, closed when it stays quiet too long (see
/// `connections`), when its certificate stops being trusted, or when the peer leaves.
async fn serve_connection(
    state: Arc<State>,
    peer: SocketAddr,
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
) {
    let chain: Option<Vec<CertificateDer<'static>>> = {
        let (_, conn) = tls.get_ref();
        conn.peer_certificates()
            .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
    };
    let identity = Connection::new(chain, &state);
    let had_certificate = identity.chain.is_some();
    // Without a trusted certificate the connection counts against its address until a
    // request on it authenticates (a bearer token).
    if !(had_certificate && identity.still_valid(&state)) {
        match state.peers.admit(peer.ip(), Phase::Unauthenticated) {
            Some(slot) => identity.hold(slot),
            None => {
                refused(&state, peer, "unauthenticated connections");
                return;
            }
        }
    }
    let mut revocations = state.revocations.subscribe();
    let mut pki_changes = state.tls.authority().subscribe();
    let activity = Activity::new();
    let service_state = state.clone();
    let service_identity = identity.clone();
    let service_activity = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = service_state.clone();
        let identity = service_identity.clone();
        let busy = service_activity.begin();
        async move {
            let head = req.method() == http::Method::HEAD;
            let response = handle(state, peer, identity, req).await;
            let response = if head {
                without_body(response)
            } else {
                response
            };
            Ok::<_, Infallible>(response.map(|body| connections::track(body, busy)))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.limits.header_read_timeout);
    // Pings find peers that vanished under a long watch; the idle deadline below closes
    // connections that never send a request.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(state.limits.idle_timeout / 2)
        .keep_alive_timeout(Duration::from_secs(20));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(conn);
    loop {
        let deadline = activity.deadline(&state.limits);
        let quiet = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = &mut conn => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            // A certificate revoked or no longer trusted (CA retired) ends the connections
            // made with it — open watches included — instead of waiting for a reconnect.
            r = revocations.changed() => {
                if r.is_err() { return; }
                if had_certificate && !identity.still_valid(&state) {
                    tracing::info!(%peer, "closing a connection whose client certificate is no longer valid");
                    return;
                }
            }
            r = pki_changes.changed() => {
                if r.is_err() { return; }
                if had_certificate && !identity.still_valid(&state) {
                    tracing::info!(%peer, "closing a connection whose client certificate is no longer valid");
                    return;
                }
            }
            () = activity.changed() => {}
            () = quiet => {
                if activity.deadline(&state.limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(%peer, "closing a quiet connection");
                    // HTTP/2 peers get a GOAWAY; whatever does not finish promptly is dropped.
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), &mut conn).await;
                    return;
                }
            }
        }
    }
}

/// A HEAD response: the GET's headers (with its length) and no body at all, so HTTP/2 sends
/// no DATA frame (RFC 9110 §9.3.2).
fn without_body(response: Response<Body>) -> Response<Body> {
    use hyper::body::Body as _;
    let (mut parts, body) = response.into_parts();
    if let Some(n) = body.size_hint().exact() {
        parts
            .headers
            .entry(http::header::CONTENT_LENGTH)
            .or_insert_with(|| http::HeaderValue::from(n));
    }
    Response::from_parts(parts, super::body::full(bytes::Bytes::new()))
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
    /// The connection's place in its address's unauthenticated count, until a request on
    /// it authenticates.
    unauthenticated: std::sync::Mutex<Option<connections::Slot>>,
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
            unauthenticated: std::sync::Mutex::new(None),
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
            }
            None => Err(auth::x509::Error::NoCertificate),
        }
    }

    fn hold(&self, slot: connections::Slot) {
        if let Ok(mut s) = self.unauthenticated.lock() {
            *s = Some(slot);
        }
    }

    /// A request on this connection authenticated: it no longer counts as anonymous.
    fn authenticated(&self) {
        if let Ok(s) = self.unauthenticated.lock() {
            if let Some(slot) = s.as_ref() {
                slot.release();
            }
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
    let Some(sink) = state.enforcement.audit().cloned() else {
        return serve_request(state, peer, identity, req, &mut audit::Outcome::default()).await;
    };
    // With the audit budget used up, mutations are refused before anything changes; reads
    // go on a little longer (see `auth::audit::writer`).
    let mutating = !matches!(
        *req.method(),
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    if !sink.admits(mutating) {
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
            Err(why) => match why.retry_after() {
                Some(wait) => throttled(&why.to_string(), wait),
                None => error_response(&ApiError::unauthorized(format!("Unauthorized: {why}"))),
            },
            Ok(user) => {
                identity.authenticated();
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
                let decision = state.enforcement.authorize(&attrs);
                let aggregated = state
                    .aggregator
                    .route(&path, |g, v| state.registry.serves(g, Some(v)));
                outcome.decision = Some(decision.clone());
                match decision {
                    // Authorized by its own rule (server tokens only), like /cacerts.
                    _ if path == crate::apiserver::endpoints::server_bootstrap::PATH
                        && method == "GET" =>
                    {
                        crate::apiserver::endpoints::server_bootstrap::serve(
                            &state,
                            user,
                            outcome.impersonated.is_some(),
                        )
                    }
                    d if !d.is_allowed() => error_response(&status::forbidden(&attrs, d.reason())),
                    // An aggregated group/version: proxied, after authorization, as upstream.
                    _ if aggregated.is_some() => match &aggregated {
                        Some(target) => {
                            crate::apiserver::aggregator::proxy(&state, target, user, req).await
                        }
                        None => error_response(&ApiError::path_not_found()),
                    },
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
    // Unauthenticated requests are counted without their path (see `metrics`).
    let labels =
        crate::apiserver::endpoints::metrics::Labels::of(&state, &info, outcome.user.is_some());
    state.metrics.observe(labels, code, started.elapsed());
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
            crate::apiserver::strategy::service_account_tokens::discovery(
                state.service_accounts.as_deref(),
                path,
            )
            .unwrap_or_else(|| error_response(&ApiError::path_not_found()))
        }
        "/metrics" => state.metrics.render(state),
        p if p == "/openapi/v2" || p.starts_with("/openapi/v3") => {
            discovery::openapi(state, p, &accept)
        }
        p => discovery::serve(state, p, &accept),
    }
}
