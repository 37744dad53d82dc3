//! The Kubernetes API server: HTTPS (HTTP/2 and HTTP/1.1) with client certificates, serving the
//! built-in resources and custom resources from the store with upstream's semantics, so the
//! stock kubectl, kube-rs and the Python client work unmodified.
//!
//! Request path: TLS → authenticate (x509) → classify (`edge/request.rs`) → authorize →
//! resource handlers (decode, validate, default, admit) → store. Every response is JSON; every
//! error is a `metav1.Status` (`status.rs`). Must run on tokio's multi-threaded runtime: large
//! lists are decoded and encoded under `block_in_place`.
//!
//! The map — one room per role; a request walks them top to bottom:
//!
//! | room | what lives there |
//! |------|------------------|
//! | `edge/` | transport: TLS, connection limits, the accept loop and top of the request path (`serve`), classification (`request`), impersonation, bodies in/out, `Warning` headers, the request's audit line |
//! | `endpoints/` | non-resource endpoints and virtual resources: health, `/metrics`, discovery, OpenAPI, access reviews, `/rampart/v1/` operations, join tokens |
//! | `handlers/` | resource requests, one file per verb, and the write pipeline's context |
//! | `strategy/` | per-resource rules on the write path: defaulting, typed decoding, validation, custom resources, Service claims, CSRs, service-account tokens |
//! | `admission/` | the admission chain (Cedar, Pod Security, ServiceAccount, quota, priority) |
//! | `rbac/` | the RBAC follower, default roles, bind/escalate checks |
//! | `followers/` | in-server loops beside the request path: the list-then-watch `follow`, the node graph, the endpoint reconciler |
//! | `aggregator/` | APIService proxying |
//! | `metrics_api/` | `metrics.k8s.io` served in-process: the kubelet scraper (a follower) and `NodeMetrics`/`PodMetrics` |
//! | `node_proxy/` | the kubelet API: `pods/log`, exec and port-forward streams, `nodes/proxy` |
//! | `crd/`, `merge/`, `protobuf/`, `table/` | formats and semantics: CRD schemas, patches and apply, protobuf bodies, Table output |
//! | `storage.rs`, `stored_json.rs` | the one storage-access layer (keys, encode/decode) |
//! | `conversion/` | versions served as views of another stored version (events.k8s.io Events, autoscaling/v1 HPAs) |
//! | `registry.rs`, `status.rs`, `startup.rs` | what is served, the error type, start-up objects |

mod admission;
mod aggregator;
mod context;
mod conversion;
pub mod crd;
mod edge;
pub mod endpoints;
mod followers;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod handlers;
pub mod merge;
mod metrics_api;
mod node_proxy;
pub mod protobuf;
mod rbac;
mod registry;
mod startup;
mod status;
pub mod storage;
mod stored_json;
mod strategy;
mod supervisor;
pub mod table;

pub(crate) use strategy::service_account_tokens;
pub use strategy::service_claims::set_service_cidr;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::store::Backend;

pub use edge::connections::Limits as ConnectionLimits;
pub use handlers::watch::WatchLimits;
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
    /// Server snapshots (`/rampart/v1/snapshots`); `None` answers 404 there.
    pub snapshots: Option<Arc<crate::store::snapshot::Snapshotter>>,
    /// The service-account token issuer (TokenRequest, OIDC discovery); `None` disables both.
    pub service_accounts: Option<Arc<crate::auth::service_account::Issuer>>,
    /// The Cedar authorizer, the Cedar admission policies (Pod Security Standards, files,
    /// `CedarPolicy` objects; the built-in admission plugins run with them) and the audit
    /// log (every request is recorded, and refused with 503 when it cannot be). Only a
    /// `bench-bypass` build can switch them off (see `auth::enforcement`).
    pub enforcement: crate::auth::enforcement::Enforcement,
    /// Handshake, header and idle timeouts and the per-address cap on unauthenticated
    /// connections.
    pub connections: ConnectionLimits,
    /// How many watches one user and the whole server may hold open (429 past either).
    pub watch_limits: WatchLimits,
    /// How often orphaned Service claims are repaired (upstream: 3 minutes); also at start.
    pub service_repair_interval: std::time::Duration,
    /// How long to keep serving after shutdown is requested, with `/readyz` failing.
    pub shutdown_delay: std::time::Duration,
    /// Set when the datastore is shared with other servers (external etcd): serves the
    /// server bootstrap data and keeps `default/kubernetes` listing every live server.
    pub ha: Option<HaConfig>,
}

/// A server's part in a multi-server cluster (see `server_bootstrap`, `endpoint_reconciler`).
#[derive(Clone, Debug)]
pub struct HaConfig {
    /// This server's identity: its `kube-system/apiserver-<id>` Lease.
    pub identity: String,
    /// `DATA_DIR`, where the keys handed to joining servers live.
    pub data_dir: std::path::PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] edge::tls::Error),
    #[error("cannot prepare the store: {0}")]
    Bootstrap(String),
    #[error("{0}")]
    Ready(String),
    #[error("{0} background tasks did not stop on shutdown")]
    TasksLeft(usize),
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
    pub metrics: endpoints::metrics::Metrics,
    pub tls: Arc<edge::tls::Tls>,
    pub revocations: Arc<crate::auth::revocation::Revocations>,
    pub node_issuers: endpoints::pki_ops::NodeIssuers,
    pub authn: crate::auth::authn::Authenticator,
    pub service_accounts: Option<Arc<crate::auth::service_account::Issuer>>,
    pub advertise: SocketAddr,
    pub ready: AtomicBool,
    /// Upstream's max-in-flight filter: non-watch requests beyond this get 429.
    pub inflight: tokio::sync::Semaphore,
    pub encryption: Option<Arc<crate::store::encrypted::Rotation>>,
    pub snapshots: Option<Arc<crate::store::snapshot::Snapshotter>>,
    /// Authorization, RBAC, admission and audit (see `auth::enforcement`).
    pub enforcement: crate::auth::enforcement::Enforcement,
    /// ResourceQuotas and LimitRanges as admission reads them (followed when admission is on).
    pub admission_caches: admission::Caches,
    /// The connection layer's timeouts and caps, and the per-address counts they apply to.
    pub limits: ConnectionLimits,
    pub peers: Arc<edge::connections::PeerCounts>,
    /// Open watches by user, against `Config::watch_limits`.
    pub watches: handlers::watch::Watches,
    /// Service claims whose write is in flight (`services`, read by the repair loop).
    pub claims_in_flight: strategy::service_claims::InFlight,
    /// The in-server followers `/readyz` waits for (RBAC is `rbac.ready()`).
    pub feeds: endpoints::health::Feeds,
    /// Set once shutdown was requested (`/readyz` fails its `shutdown` check).
    pub draining: AtomicBool,
    pub ha: Option<HaConfig>,
    /// Remote APIServices and their availability (the aggregation layer).
    pub aggregator: Arc<aggregator::Aggregator>,
    /// Every task the server starts beside the request path (stopped on shutdown).
    pub tasks: supervisor::Supervisor,
    /// The last kubelet scrape behind `metrics.k8s.io` (`metrics_api`).
    pub resource_metrics: metrics_api::Cache,
}

/// How long start-up waits for the in-server followers' first lists before announcing
/// readiness anyway (`/readyz` keeps saying which are missing).
const FEEDS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

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
    let tls = Arc::new(edge::tls::Tls::build(cfg.pki.clone())?);
    // Bound before anything is written: with `port: 0` the kernel picks the port, and the
    // advertised address (the `default/kubernetes` Endpoints, EndpointSlice and Service
    // targetPort written at start) must carry the real one, or in-cluster clients reach
    // port 0. Connections wait in the backlog until serving starts.
    let addr = SocketAddr::new(cfg.bind_address, cfg.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let state = Arc::new(State {
        store,
        registry: registry::Registry::new(),
        metrics: endpoints::metrics::Metrics::default(),
        tls: tls.clone(),
        revocations: cfg.revocations.clone(),
        node_issuers: endpoints::pki_ops::NodeIssuers::default(),
        authn: cfg.authn.clone(),
        service_accounts: cfg.service_accounts.clone(),
        advertise: SocketAddr::new(cfg.advertise_address, bound.port()),
        ready: AtomicBool::new(false),
        inflight: tokio::sync::Semaphore::new(MAX_INFLIGHT),
        encryption: cfg.encryption.clone(),
        snapshots: cfg.snapshots.clone(),
        enforcement: cfg.enforcement.clone(),
        admission_caches: admission::Caches::default(),
        peers: edge::connections::PeerCounts::new(cfg.connections.max_unauthenticated_per_ip),
        limits: cfg.connections.clone(),
        watches: handlers::watch::Watches::new(cfg.watch_limits),
        claims_in_flight: strategy::service_claims::InFlight::default(),
        feeds: endpoints::health::Feeds::default(),
        draining: AtomicBool::new(false),
        ha: cfg.ha.clone(),
        aggregator: Arc::default(),
        tasks: supervisor::Supervisor::default(),
        resource_metrics: Default::default(),
    });
    let served = serve(&state, cfg, tls, (listener, bound), shutdown, on_ready).await;
    // Whatever ended serving (shutdown or a start-up error), nothing the server started
    // outlives it.
    let left = state.tasks.shutdown(TASKS_STOP_BOUND).await;
    served?;
    if left > 0 {
        return Err(Error::TasksLeft(left));
    }
    Ok(())
}

/// How long stopped tasks get to finish once aborted (an abort takes effect at their next
/// await; only a task stuck in blocking code would hit this).
const TASKS_STOP_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

async fn serve(
    state: &Arc<State>,
    cfg: Config,
    tls: Arc<edge::tls::Tls>,
    (listener, bound): (tokio::net::TcpListener, SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(SocketAddr) -> Result<(), String> + Send,
) -> Result<(), Error> {
    let state = state.clone();
    if state.enforcement.admits() {
        state.admission_caches.follow(&state.tasks, &state.store);
    }
    match state.enforcement.admission() {
        Some(adm) => {
            state.tasks.spawn(
                "CedarPolicy follower",
                admission::follow_cedar_policies(
                    adm.clone(),
                    state.store.clone(),
                    state.feeds.cedar_policies.clone(),
                ),
            );
        }
        None => state.feeds.cedar_policies.store(true, Ordering::Release),
    }
    match state.enforcement.authorizer() {
        Some(authz) => {
            state.tasks.spawn(
                "node graph follower",
                followers::node_graph::run(
                    authz.node_graph().clone(),
                    state.store.clone(),
                    state.feeds.node_graph.clone(),
                ),
            );
        }
        None => state.feeds.node_graph.store(true, Ordering::Release),
    }
    startup::run(&state)
        .await
        .map_err(|e| Error::Bootstrap(e.to_string()))?;
    rbac::bootstrap::run(&state)
        .await
        .map_err(|e| Error::Bootstrap(e.to_string()))?;
    // Claims orphaned by a crash or by deletes outside the handlers are repaired before
    // serving, then periodically.
    if let Err(e) = strategy::repair::repair_once(&state).await {
        tracing::warn!(error = %e, "service claim repair failed at start");
    }
    state.tasks.spawn(
        "service claim repair",
        strategy::repair::run(state.clone(), cfg.service_repair_interval),
    );
    if state.ha.is_some() {
        state.tasks.spawn(
            "endpoint reconciler",
            followers::endpoint_reconciler::run(state.clone()),
        );
    }
    // Written before serving, so it never moves the store revision under a client.
    if let Err(e) = aggregator::availability::publish_authentication(&state).await {
        tracing::warn!(error = %e.message, "cannot publish extension-apiserver-authentication");
    }
    state.tasks.spawn(
        "APIService follower",
        aggregator::follow_api_services(state.aggregator.clone(), state.store.clone()),
    );
    state.tasks.spawn(
        "APIService availability",
        aggregator::availability::run(state.clone()),
    );
    state.tasks.spawn(
        "metrics.k8s.io scraper",
        metrics_api::scraper::run(state.clone()),
    );
    if let Some(r) = state.enforcement.rbac() {
        state.tasks.spawn("RBAC compiler", r.clone().run());
        state
            .tasks
            .spawn("RBAC follower", rbac::run(r.clone(), state.store.clone()));
    }
    endpoints::pki_ops::load_revocations(&state)
        .await
        .map_err(Error::Bootstrap)?;
    match edge::connections::raise_fd_limit() {
        Ok(n) => tracing::debug!(limit = n, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
    state.ready.store(true, std::sync::atomic::Ordering::SeqCst);
    endpoints::health::wait_for_feeds(&state, FEEDS_WAIT).await;
    on_ready(bound).map_err(Error::Ready)?;
    // Shutdown: first `/readyz` fails (draining), then after the delay the listener closes.
    let drain_state = state.clone();
    let delay = cfg.shutdown_delay;
    let shutdown = async move {
        shutdown.await;
        drain_state.draining.store(true, Ordering::Release);
        if !delay.is_zero() {
            tracing::info!(
                ?delay,
                "draining: /readyz fails until the shutdown delay has passed"
            );
            tokio::time::sleep(delay).await;
        }
    };
    edge::serve::accept_loop(listener, tls.config.clone(), state, shutdown).await;
    Ok(())
}
