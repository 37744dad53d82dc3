//! The kubelet: node registration, node status and the node Lease (upstream's
//! `kubelet_node_status.go` and `nodelease`), and the pods bound to the node (`pods/`) run
//! by the embedded runtime (`runtime/`).
//!
//! Invariant: reaches the cluster only through the Kubernetes API with the node's own
//! credentials. The client is handed over through a `watch` channel so that certificate
//! renewal can swap it without restarting these loops (calls in flight finish on the old one).

pub mod eviction;
pub mod images;
pub mod lease;
pub mod network;
pub mod node;
pub mod pods;
pub mod runtime;
pub mod server;
pub mod stats;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub node_ip: IpAddr,
    pub hostname: String,
    /// Extra labels (e.g. the control-plane role of a server's embedded agent).
    pub extra_labels: Vec<(String, String)>,
    /// Filesystem whose size is the node's ephemeral-storage; also holds the image store
    /// (`content/`), archives to import at start (`images/`) and pod state (`pods/`).
    pub data_dir: PathBuf,
    /// Root of the CRI-format container logs.
    pub pod_log_dir: PathBuf,
    /// cgroup parent of the pods (`kubepods`).
    pub cgroup_root: String,
    /// `--system-reserved` and `--kube-reserved`, subtracted from allocatable.
    pub system_reserved: eviction::Reserved,
    pub kube_reserved: eviction::Reserved,
    /// `--eviction-hard` (upstream's defaults unless set).
    pub eviction_hard: eviction::Thresholds,
    /// `--pod-manifest-path`: static pods.
    pub pod_manifest_path: Option<PathBuf>,
    /// `registries.yaml`, loaded.
    pub registries: std::sync::Arc<images::registries::Registries>,
    pub image_gc: ImageGc,
    /// Port of the kubelet API (`server`); 0 picks a free one. After start-up, the bound port
    /// (what the Node's `daemonEndpoints` reports).
    pub kubelet_port: u16,
    /// `--cluster-cidr` (all pods of the cluster) and `--pod-network-backend`.
    pub cluster_cidr: network::Ipv4Net,
    pub pod_network_backend: network::Backend,
    /// Cluster DNS address, domain and the node's resolv.conf (pods' `/etc/resolv.conf`).
    pub dns: pods::dns::NodeDns,
}

/// Image garbage collection settings (upstream's kubelet flags of the same names).
#[derive(Debug, Clone)]
pub struct ImageGc {
    pub high_percent: u8,
    pub low_percent: u8,
    pub min_age: Duration,
    pub period: Duration,
}

impl ImageGc {
    /// Checks upstream's rule that the low threshold is not above the high one.
    pub fn new(
        high_percent: u8,
        low_percent: u8,
        min_age: Duration,
        period: Duration,
    ) -> Result<ImageGc, Error> {
        if low_percent > high_percent {
            return Err(Error::Config(format!(
                "--image-gc-low-threshold ({low_percent}) must not be above --image-gc-high-threshold ({high_percent})"
            )));
        }
        Ok(ImageGc {
            high_percent,
            low_percent,
            min_age,
            period,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node {node}: {detail}")]
    Api { node: String, detail: String },
    #[error("{0}")]
    Config(String),
}

/// Upstream's lease renew interval (and the lease duration, 40 s, is four of them).
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// Upstream's `nodeStatusReportFrequency`: status is written at least this often.
pub const STATUS_REPORT: Duration = Duration::from_secs(60);

/// Register the node, then keep its Lease and status fresh until `shutdown` resolves.
pub async fn run(
    mut cfg: Config,
    clients: watch::Receiver<kube::Client>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    tokio::pin!(shutdown);
    let api_server = start_api_server(&mut cfg, clients.clone()).await;
    let mut backoff = Duration::from_secs(1);
    let uid = loop {
        let client = clients.borrow().clone();
        match node::register(&client, &cfg).await {
            Ok(uid) => break uid,
            Err(e) => {
                log_api_error(&cfg.node_name, "cannot register the node", &e);
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    tracing::info!(node = %cfg.node_name, "node registered");
    let started = start_pods(&cfg, clients.clone()).await;
    let store = started.as_ref().map(|(_, _, s)| s.clone());
    let pods = started.map(|(task, shared, _)| (task, shared));
    let static_pods = cfg.pod_manifest_path.clone().map(|dir| {
        tokio::spawn(pods::static_pods::run(
            clients.clone(),
            dir,
            cfg.node_name.clone(),
            uid.clone(),
        ))
    });
    let mut tick = tokio::time::interval(LEASE_RENEW);
    let mut last_status = tokio::time::Instant::now();
    let mut last_reported: Option<serde_json::Value> = None;
    let mut failures: u32 = 0;
    loop {
        // Back off (up to a minute) while the server keeps refusing us, e.g. a revoked cert.
        let pause = if failures == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(2u64.saturating_pow(failures.min(6))).min(Duration::from_secs(60))
        };
        tokio::select! {
            _ = &mut shutdown => {
                // The pods keep running in their shims; a restarted agent re-adopts them.
                if let Some((p, _)) = &pods { p.abort(); }
                if let Some(s) = &static_pods { s.abort(); }
                if let Some(s) = &api_server { s.abort(); }
                return Ok(());
            }
            _ = async { tick.tick().await; tokio::time::sleep(pause).await } => {}
        }
        let client = clients.borrow().clone();
        if let Err(e) = lease::renew(&client, &cfg.node_name, &uid).await {
            log_api_error(&cfg.node_name, "cannot renew the node lease", &e);
            failures = failures.saturating_add(1);
            continue;
        }
        failures = 0;
        let signals = eviction::Signals::read(&cfg.data_dir);
        let crossed = signals.crossed(&cfg.eviction_hard);
        if let (Some(sig), Some((_, shared))) = (crossed.first(), &pods) {
            evict(&cfg, shared, &signals, *sig).await;
        }
        let mut status = node::status(&cfg, &signals, &crossed);
        if let Some(store) = &store {
            status["images"] = images::gc::node_images(store);
        }
        let changed = last_reported.as_ref() != Some(&node::comparable(&status));
        if changed || last_status.elapsed() >= STATUS_REPORT {
            match node::update_status(&client, &cfg, status.clone()).await {
                Ok(()) => {
                    last_status = tokio::time::Instant::now();
                    last_reported = Some(node::comparable(&status));
                }
                Err(e) => log_api_error(&cfg.node_name, "cannot update the node status", &e),
            }
        }
    }
}

/// Open the image store, import `DATA_DIR/images/`, and start the pod workers. A store that
/// cannot be opened leaves the node without pods (logged), not without its Node and Lease.
async fn start_pods(
    cfg: &Config,
    clients: watch::Receiver<kube::Client>,
) -> Option<(
    tokio::task::JoinHandle<()>,
    std::sync::Arc<pods::Shared>,
    runtime::image::Store,
)> {
    let data_dir = cfg.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || {
        let store = runtime::image::Store::open(&data_dir.join("content"))?;
        pods::auto_import(&store, &data_dir.join("images"));
        Ok::<_, runtime::image::Error>(store)
    })
    .await;
    let store = match store {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot open the image store; no pods will run");
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, "image store task failed; no pods will run");
            return None;
        }
    };
    tokio::spawn(images::gc::run(
        images::gc::Config {
            node_name: cfg.node_name.clone(),
            high_percent: cfg.image_gc.high_percent,
            low_percent: cfg.image_gc.low_percent,
            min_age: cfg.image_gc.min_age,
            interval: cfg.image_gc.period,
        },
        store.clone(),
        clients.clone(),
    ));
    let puller = std::sync::Arc::new(images::Puller::new(store.clone(), cfg.registries.clone()));
    let network = match network::Network::new(network::Config {
        node_name: cfg.node_name.clone(),
        node_ip: cfg.node_ip,
        cluster_cidr: cfg.cluster_cidr,
        backend: cfg.pod_network_backend,
        state_dir: cfg.data_dir.join("network"),
    })
    .await
    {
        Ok(n) => {
            let n = std::sync::Arc::new(n);
            tokio::spawn(network::run(
                n.clone(),
                clients.clone(),
                std::future::pending::<()>(),
            ));
            Some(n)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot open the pod network; pods get loopback only");
            None
        }
    };
    let shared = std::sync::Arc::new(pods::Shared {
        network,
        node_name: cfg.node_name.clone(),
        node_ip: cfg.node_ip.to_string(),
        clients,
        puller,
        store: store.clone(),
        pods_dir: cfg.data_dir.join("pods"),
        log_dir: cfg.pod_log_dir.clone(),
        cgroup_root: cfg.cgroup_root.clone(),
        evictions: Default::default(),
        dns: cfg.dns.clone(),
    });
    let s = shared.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = pods::run(s, std::future::pending::<()>()).await {
            tracing::error!(error = %e, "the pod workers stopped");
        }
    });
    Some((task, shared, store))
}

/// Hard eviction: one pod per round while a threshold is crossed (upstream's manager runs
/// every 10 s, as this loop does).
async fn evict(
    cfg: &Config,
    shared: &pods::Shared,
    signals: &eviction::Signals,
    sig: eviction::Signal,
) {
    let (available, capacity) = signals.measure(sig);
    let threshold = cfg
        .eviction_hard
        .get(sig)
        .map(|a| a.of(capacity))
        .unwrap_or(0);
    let ki = |b: u64| format!("{}Ki", b / 1024);
    let (t, a) = match sig {
        eviction::Signal::NodefsInodesFree | eviction::Signal::PidAvailable => {
            (threshold.to_string(), available.to_string())
        }
        _ => (ki(threshold), ki(available)),
    };
    if let Some(pod) = pods::evict::evict_one(shared, sig, &t, &a).await {
        tracing::warn!(node = %cfg.node_name, %pod, signal = ?sig, "evicting a pod: the node is low on {}", sig.resource());
    }
}

fn log_api_error(node: &str, what: &str, e: &kube::Error) {
    match e {
        kube::Error::Api(s) if s.code == 401 => tracing::error!(
            node,
            "{what}: the API server refuses this node's certificate (revoked or from another cluster?); retrying"
        ),
        e => tracing::warn!(node, error = %e, "{what}; retrying"),
    }
}

/// Bind and start the kubelet API (`server`). A port that cannot be bound leaves the node
/// without `logs`/`exec` (logged), not without its pods.
async fn start_api_server(
    cfg: &mut Config,
    clients: watch::Receiver<kube::Client>,
) -> Option<tokio::task::JoinHandle<()>> {
    let scfg = server::Config {
        node_name: cfg.node_name.clone(),
        bind_address: IpAddr::from([0, 0, 0, 0]),
        port: cfg.kubelet_port,
        pki_dir: cfg.data_dir.join("pki"),
        log_dir: cfg.pod_log_dir.clone(),
        pods_dir: cfg.data_dir.join("pods"),
        cgroup_root: cfg.cgroup_root.clone(),
    };
    let listener = match server::listen(&scfg).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "the kubelet API is not served");
            return None;
        }
    };
    if let Ok(a) = listener.local_addr() {
        cfg.kubelet_port = a.port();
        tracing::info!(port = a.port(), "kubelet API listening");
    }
    Some(tokio::spawn(async move {
        if let Err(e) = server::run(scfg, listener, clients, std::future::pending::<()>()).await {
            tracing::error!(error = %e, "the kubelet API stopped");
        }
    }))
}
