//! The Kubernetes API server: HTTPS (HTTP/2 and HTTP/1.1) with client certificates, serving the
//! built-in resources and custom resources from the store with upstream's semantics, so the
//! stock kubectl, kube-rs and the Python client work unmodified.
//!
//! Request path: TLS → authenticate (x509) → classify (`request.rs`) → authorize → resource
//! handlers (decode, validate, default, admit) → store. Every response is JSON; every error is
//! a `metav1.Status` (`status.rs`). Must run on tokio's multi-threaded runtime: large lists are
//! decoded and encoded under `block_in_place`.

pub(crate) mod access_review;
mod admission;
mod audit;
mod body;
mod bootstrap;
pub mod crd;
mod crd_lifecycle;
mod csr;
mod custom;
mod defaults;
mod discovery;
mod follow;
mod handlers;
mod health;
mod hooks;
mod impersonation;
pub mod join_tokens;
pub mod merge;
mod metrics;
mod node_graph;
pub mod openapi;
mod pki_ops;
pub mod protobuf;
mod rampart_api;
mod rbac;
mod registry;
mod request;
pub mod sa_tokens;
mod serve;
mod services;
mod status;
mod storage;
pub mod table;
mod tls;
mod typed;
mod validate;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::store::Backend;

pub use status::ApiError;

#[derive(Clone)]
pub struct Config {
    pub bind_address: IpAddr,
    pub port: u16,
    /// The address clients are told to use (discovery's serverAddressByClientCIDRs).
    pub advertise_address: IpAddr,
    pub pki: Arc<crate::pki::Authority>,
    /// Bearer-token authenticators and per-request certificate checks.
    pub authn: crate::auth::authn::Authenticator,
    /// The revocation list; the caller also puts it in `authn.cert_checks`.
    pub revocations: Arc<crate::auth::revocation::Revocations>,
    /// The secrets encryption key rotation controller (`/rampart/v1/secrets-encrypt/...`).
    pub encryption: Option<Arc<crate::store::encrypted::Rotation>>,
    /// The service-account token issuer (TokenRequest, OIDC discovery); `None` disables both.
    pub service_accounts: Option<Arc<crate::auth::serviceaccount::Issuer>>,
    /// The audit log; every request is recorded (and refused with 503 when it cannot be).
    pub audit: Option<Arc<crate::auth::audit::Sink>>,
    /// The Cedar authorizer. `None` bypasses authorization and admission entirely: only the
    /// overhead benchmark does that, through the library; no CLI flag reaches it.
    pub authorizer: Option<Arc<crate::auth::cedar::Authorizer>>,
    /// The Cedar admission policies (Pod Security Standards, files, `CedarPolicy` objects);
    /// the built-in admission plugins run whenever `authorizer` is set.
    pub admission: Option<Arc<crate::auth::admission::Admission>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::Error),
    #[error("cannot prepare the store: {0}")]
    Bootstrap(String),
    #[error("{0}")]
    Ready(String),
}

/// Now, as Kubernetes writes timestamps (RFC 3339, second precision, UTC).
pub(crate) fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// Everything a request handler can reach.
pub(crate) struct State {
    pub store: Arc<dyn Backend>,
    pub registry: registry::Registry,
    pub metrics: metrics::Metrics,
    pub tls: Arc<tls::Tls>,
    pub revocations: Arc<crate::auth::revocation::Revocations>,
    pub node_issuers: pki_ops::NodeIssuers,
    pub authn: crate::auth::authn::Authenticator,
    pub service_accounts: Option<Arc<crate::auth::serviceaccount::Issuer>>,
    pub advertise: SocketAddr,
    pub ready: AtomicBool,
    /// Upstream's max-in-flight filter: non-watch requests beyond this get 429.
    pub inflight: tokio::sync::Semaphore,
    pub encryption: Option<Arc<crate::store::encrypted::Rotation>>,
    pub audit: Option<Arc<crate::auth::audit::Sink>>,
    pub authorizer: Option<Arc<crate::auth::cedar::Authorizer>>,
    /// The live RBAC state (compiled into the authorizer's `rbac` source); `None` when
    /// authorization is bypassed.
    pub rbac: Option<Arc<crate::auth::rbac::Rbac>>,
    pub admission: Option<Arc<crate::auth::admission::Admission>>,
    /// ResourceQuotas and LimitRanges as admission reads them (followed when admission is on).
    pub admission_caches: admission::Caches,
}

/// Upstream's default `--max-requests-inflight` plus `--max-mutating-requests-inflight`.
pub const MAX_INFLIGHT: usize = 600;

/// Serve until `shutdown` resolves. `on_ready` is called once the listener is bound and the
/// store is prepared, with the bound address.
pub async fn run(
    cfg: Config,
    store: Arc<dyn Backend>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(SocketAddr) -> Result<(), String> + Send,
) -> Result<(), Error> {
    let tls = Arc::new(tls::Tls::build(cfg.pki.clone())?);
    let state = Arc::new(State {
        store,
        registry: registry::Registry::new(),
        metrics: metrics::Metrics::default(),
        tls: tls.clone(),
        revocations: cfg.revocations.clone(),
        node_issuers: pki_ops::NodeIssuers::default(),
        authn: cfg.authn.clone(),
        service_accounts: cfg.service_accounts.clone(),
        advertise: SocketAddr::new(cfg.advertise_address, cfg.port),
        ready: AtomicBool::new(false),
        inflight: tokio::sync::Semaphore::new(MAX_INFLIGHT),
        encryption: cfg.encryption.clone(),
        audit: cfg.audit.clone(),
        authorizer: cfg.authorizer.clone(),
        rbac: cfg.authorizer.clone().map(crate::auth::rbac::Rbac::new),
        admission: cfg.admission.clone(),
        admission_caches: admission::Caches::default(),
    });
    if state.authorizer.is_some() {
        state.admission_caches.follow(&state.store);
    }
    if let Some(adm) = &state.admission {
        tokio::spawn(admission::follow_cedar_policies(
            adm.clone(),
            state.store.clone(),
        ));
    }
    if let Some(authz) = &state.authorizer {
        tokio::spawn(node_graph::run(
            authz.node_graph().clone(),
            state.store.clone(),
        ));
    }
    bootstrap::run(&state)
        .await
        .map_err(|e| Error::Bootstrap(e.to_string()))?;
    rbac::bootstrap::run(&state)
        .await
        .map_err(|e| Error::Bootstrap(e.to_string()))?;
    if let Some(r) = &state.rbac {
        tokio::spawn(rbac::run(r.clone(), state.store.clone()));
    }
    pki_ops::load_revocations(&state)
        .await
        .map_err(Error::Bootstrap)?;
    let addr = SocketAddr::new(cfg.bind_address, cfg.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    state.ready.store(true, std::sync::atomic::Ordering::SeqCst);
    on_ready(bound).map_err(Error::Ready)?;
    serve::accept_loop(listener, tls.config.clone(), state, shutdown).await;
    Ok(())
}
