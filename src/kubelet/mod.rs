//! The kubelet: node registration, node status and the node Lease (upstream's
//! `kubelet_node_status.go` and `nodelease`), and the pods bound to the node (`pods/`) run
//! by the embedded runtime (`runtime/`).
//!
//! Invariant: reaches the cluster only through the Kubernetes API with the node's own
//! credentials. The client is handed over through a `watch` channel so that certificate
//! renewal can swap it without restarting these loops (calls in flight finish on the old one).

pub mod lease;
pub mod node;
pub mod pods;
pub mod runtime;

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
    /// Cluster DNS address, domain and the node's resolv.conf (pods' `/etc/resolv.conf`).
    pub dns: pods::dns::NodeDns,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node {node}: {detail}")]
    Api { node: String, detail: String },
}

/// Upstream's lease renew interval (and the lease duration, 40 s, is four of them).
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// Upstream's `nodeStatusReportFrequency`: status is written at least this often.
pub const STATUS_REPORT: Duration = Duration::from_secs(60);

/// Register the node, then keep its Lease and status fresh until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    clients: watch::Receiver<kube::Client>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    tokio::pin!(shutdown);
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
    let pods = start_pods(&cfg, clients.clone()).await;
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
                if let Some(p) = &pods { p.abort(); }
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
        let status = node::status(&cfg);
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
) -> Option<tokio::task::JoinHandle<()>> {
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
    let shared = std::sync::Arc::new(pods::Shared {
        node_name: cfg.node_name.clone(),
        node_ip: cfg.node_ip.to_string(),
        clients,
        store,
        pods_dir: cfg.data_dir.join("pods"),
        log_dir: cfg.pod_log_dir.clone(),
        cgroup_root: cfg.cgroup_root.clone(),
        dns: cfg.dns.clone(),
    });
    Some(tokio::spawn(async move {
        if let Err(e) = pods::run(shared, std::future::pending::<()>()).await {
            tracing::error!(error = %e, "the pod workers stopped");
        }
    }))
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
