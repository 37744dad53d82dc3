//! What `rampart server` runs beside the API server once it listens, each as a client of the
//! API over loopback HTTPS: the controller manager, the CSR signer, the scheduler and, unless
//! `--disable-agent`, the embedded agent — joined through the same path as any other node
//! (a join token the server creates for itself when the agent has no certificate yet).
//!
//! The controller manager (with the CSR signer, as upstream hosts it) and the scheduler each
//! run under Lease-based leader election (`kube-system/kube-controller-manager`,
//! `kube-system/kube-scheduler`) unless `--leader-elect=false`, with a candidate identity
//! kept in `DATA_DIR/leader-identity` so a restarted server resumes its own lease at once.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use super::supervisor::Shutdown;
use crate::client::Credentials;
use crate::pki;

pub struct Config {
    pub authority: Arc<pki::Authority>,
    pub data_dir: PathBuf,
    /// `None` with `--disable-agent`.
    pub agent: Option<EmbeddedAgent>,
    pub leader_elect: bool,
    pub node_monitor_grace_period: std::time::Duration,
    pub terminated_pod_gc_threshold: usize,
    pub hpa_sync_period: std::time::Duration,
    pub local_storage_path: PathBuf,
    pub cluster_cidr: crate::controllers::node_ipam::Cidr,
}

pub struct EmbeddedAgent {
    pub node_name: String,
    pub node_ip: IpAddr,
    pub kubelet: crate::cli::KubeletArgs,
    pub network: crate::cli::NetworkArgs,
}

/// Wait for the API server's URL, then run everything until shutdown.
pub async fn run(
    cfg: Config,
    ready: tokio::sync::oneshot::Receiver<String>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let Ok(server) = ready.await else {
        return Ok(());
    };
    let election = match cfg.leader_elect {
        true => Some(leader_identity(&cfg.data_dir)?),
        false => None,
    };
    let manager = tokio::spawn(controller_manager(
        cfg.authority.clone(),
        server.clone(),
        Settings {
            election: election.clone(),
            node_monitor_grace_period: cfg.node_monitor_grace_period,
            terminated_pod_gc_threshold: cfg.terminated_pod_gc_threshold,
            hpa_sync_period: cfg.hpa_sync_period,
            local_storage_path: cfg.local_storage_path.clone(),
            cluster_cidr: cfg.cluster_cidr,
        },
        shutdown.clone(),
    ));
    let scheduler = tokio::spawn(scheduler(
        cfg.authority.clone(),
        server.clone(),
        election,
        shutdown.clone(),
    ));
    let m = cfg.authority.current();
    let client = manager_client(&cfg.authority, &server).await?;
    if let Some(a) = cfg.agent {
        let data_dir = cfg.data_dir.join("agent");
        let token = if super::agent::has_identity(&data_dir) {
            None
        } else {
            match super::token::create(
                &client,
                Some(3600),
                "the server's embedded agent",
                &m.bundle_pem,
                crate::cli::TokenRole::Agent,
            )
            .await
            {
                Ok(t) => Some(t.render()),
                Err(e) => {
                    // The agent then reports the missing token; the control plane carries on.
                    tracing::error!(error = %format!("{e:#}"), "cannot create the embedded agent's join token");
                    None
                }
            }
        };
        let agent_cfg = super::agent::Config {
            server: server.clone(),
            token,
            data_dir,
            hostname: a.node_name.clone(),
            node_name: a.node_name,
            node_ip: a.node_ip,
            extra_labels: vec![(
                "node-role.kubernetes.io/control-plane".into(),
                "true".into(),
            )],
            kubelet: a.kubelet,
            network: a.network,
        };
        if let Err(e) = super::agent::run(agent_cfg, shutdown.clone().wait()).await {
            tracing::error!(error = %format!("{e:#}"), "the embedded agent stopped");
        }
    }
    let _ = manager.await;
    let _ = scheduler.await;
    Ok(())
}

/// This server's candidate identity for leader election (`<hostname>_<uuid>`, as client-go),
/// created once and kept, 0600.
fn leader_identity(data_dir: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("leader-identity");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() && id.len() <= 253 {
            return Ok(id.to_string());
        }
    }
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "rampart".into());
    let id = format!("{}_{}", host.to_lowercase(), uuid::Uuid::new_v4());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(id.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// Run `work` under the lease `name` when electing, else directly, until shutdown.
async fn led<F, Fut>(
    election: Option<String>,
    name: &str,
    client: kube::Client,
    mut work: F,
    shutdown: Shutdown,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    match election {
        Some(id) => {
            crate::client::leader::run(
                crate::client::leader::Config::new("kube-system", name, &id),
                client,
                work,
                shutdown.wait(),
            )
            .await
        }
        None => {
            let task = tokio::spawn(work());
            shutdown.wait().await;
            task.abort();
            let _ = task.await;
        }
    }
}

/// A client with the current certificate of `identity` (a leaf of `pki/profiles.yaml`).
async fn identity_client(
    authority: &pki::Authority,
    server: &str,
    identity: &str,
) -> anyhow::Result<kube::Client> {
    let m = authority.current();
    let id = m
        .identity(identity)
        .with_context(|| format!("the PKI has no {identity} identity"))?;
    let creds = Credentials::Certificate {
        cert_pem: id.cert_pem,
        key_pem: id.key_pem,
    };
    crate::client::build(server, &m.bundle_pem, &creds)
        .await
        .context("cannot build the in-process API client")
}

/// The scheduler as `system:kube-scheduler`, restarted on a new certificate or trust bundle.
async fn scheduler(
    authority: Arc<pki::Authority>,
    server: String,
    election: Option<String>,
    shutdown: Shutdown,
) {
    let mut changes = authority.subscribe();
    loop {
        let fingerprint = |m: &pki::Material| {
            (
                m.leaf("scheduler").map(|l| l.info.serial.clone()),
                m.bundle_pem.clone(),
            )
        };
        let running = fingerprint(&authority.current());
        let client = match identity_client(&authority, &server, "scheduler").await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot start the scheduler; retrying");
                tokio::select! {
                    _ = shutdown.clone().wait() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => continue,
                }
            }
        };
        let work_client = client.clone();
        let task = tokio::spawn(led(
            election.clone(),
            "kube-scheduler",
            client,
            move || {
                let c = work_client.clone();
                async move {
                    if let Err(e) = crate::scheduler::run(
                        crate::scheduler::Config::default(),
                        c,
                        std::future::pending(),
                    )
                    .await
                    {
                        tracing::error!(error = %e, "the scheduler stopped");
                    }
                }
            },
            shutdown.clone(),
        ));
        let stop = loop {
            tokio::select! {
                _ = shutdown.clone().wait() => break true,
                r = changes.changed() => {
                    if r.is_err() {
                        break true;
                    }
                    if fingerprint(&authority.current()) != running {
                        tracing::info!("scheduler identity or trust bundle changed; restarting the scheduler");
                        break false;
                    }
                }
            }
        };
        if stop {
            // Let the election release its lease.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
            return;
        }
        task.abort();
        let _ = task.await;
    }
}

/// A client with the controller manager's current certificate
/// (CN=system:kube-controller-manager).
async fn manager_client(authority: &pki::Authority, server: &str) -> anyhow::Result<kube::Client> {
    identity_client(authority, server, "controller-manager").await
}

/// What the controller manager is started with.
#[derive(Clone)]
struct Settings {
    election: Option<String>,
    node_monitor_grace_period: std::time::Duration,
    terminated_pod_gc_threshold: usize,
    hpa_sync_period: std::time::Duration,
    local_storage_path: PathBuf,
    cluster_cidr: crate::controllers::node_ipam::Cidr,
}

/// The controllers and the CSR signer (as upstream's kube-controller-manager hosts both),
/// restarted with a fresh client whenever the controller manager's certificate or the trust
/// bundle changes — renewal every few days, CA rotation — so they never run on an expired
/// identity or publish a stale `kube-root-ca.crt`.
async fn controller_manager(
    authority: Arc<pki::Authority>,
    server: String,
    settings: Settings,
    shutdown: Shutdown,
) {
    let mut changes = authority.subscribe();
    loop {
        let m = authority.current();
        let fingerprint = |m: &pki::Material| {
            (
                m.leaf("controller-manager").map(|l| l.info.serial.clone()),
                m.bundle_pem.clone(),
            )
        };
        let running = fingerprint(&m);
        let client = match manager_client(&authority, &server).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot start the controller manager; retrying");
                tokio::select! {
                    _ = shutdown.clone().wait() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => continue,
                }
            }
        };
        let cfg = crate::controllers::Config {
            root_ca_pem: m.bundle_pem.clone(),
            node_monitor_grace_period: settings.node_monitor_grace_period,
            terminated_pod_gc_threshold: settings.terminated_pod_gc_threshold,
            hpa_sync_period: settings.hpa_sync_period,
            local_storage_path: settings.local_storage_path.clone(),
            cluster_cidr: settings.cluster_cidr,
        };
        let (work_client, work_authority) = (client.clone(), authority.clone());
        let task = tokio::spawn(led(
            settings.election.clone(),
            "kube-controller-manager",
            client,
            move || {
                let (c, cfg, authority) =
                    (work_client.clone(), cfg.clone(), work_authority.clone());
                async move {
                    let controllers =
                        crate::controllers::run(cfg, c.clone(), std::future::pending());
                    let signer = super::csr_signer::run(
                        super::csr_signer::Config { authority },
                        c,
                        std::future::pending(),
                    );
                    let _ = tokio::join!(controllers, signer);
                }
            },
            shutdown.clone(),
        ));
        let stop = loop {
            tokio::select! {
                _ = shutdown.clone().wait() => break true,
                r = changes.changed() => {
                    if r.is_err() {
                        break true;
                    }
                    if fingerprint(&authority.current()) != running {
                        tracing::info!("controller-manager identity or trust bundle changed; restarting the controllers");
                        break false;
                    }
                }
            }
        };
        if stop {
            // Let the election release its lease.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
            return;
        }
        task.abort();
        let _ = task.await;
    }
}
