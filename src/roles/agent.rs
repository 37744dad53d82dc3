//! `rampart agent`: join a cluster and run the node. Order: node identity (reuse a valid
//! client certificate from DATA_DIR/pki, else join with the token: pin `/cacerts`, CSR,
//! wait for the signer), then the kubelet (Node registration, status, Lease) with a client
//! authenticated by the node certificate, then the kubelet-serving certificate and the node's
//! service-proxy identity (`CN=system:kube-proxy:<node>`, signer `kube-apiserver-client`).
//!
//! Upkeep every 10 s: `/cacerts` over the verified connection (a changed bundle — CA rotation —
//! is saved and every certificate is renewed at once), client certificate renewed at 2/3 of
//! its life with a new key, authenticated by the current certificate (never the token again);
//! the kube client is rebuilt and handed to the kubelet through a `watch` channel. The same
//! channel carries failover: the upkeep learns every server from `default/kubernetes` and,
//! when the one in use stops answering, moves to the next that does (see `server_list`).
//!
//! Files (DATA_DIR/pki, 0700): `ca.crt`, `kubelet-client.{crt,key}`,
//! `kubelet-serving.{crt,key}`, `kube-proxy.{crt,key}`; keys 0600. A renewal writes `<name>.key.next` and
//! `<name>.crt.next`, then renames the key and the certificate; a crash in between is finished
//! at the next start, so the pair on disk always matches.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use rcgen::PublicKeyData;
use tokio::sync::watch;

use super::join::{self, Kind};
use super::server_list;
use super::supervisor::Shutdown;
use crate::auth::bootstrap::JoinToken;
use crate::cli::AgentArgs;
use crate::client::Credentials;

#[derive(Debug, Clone)]
pub struct Config {
    pub server: String,
    /// The printed join token; needed only while there is no valid node certificate.
    pub token: Option<String>,
    pub data_dir: PathBuf,
    pub node_name: String,
    pub node_ip: IpAddr,
    pub hostname: String,
    pub extra_labels: Vec<(String, String)>,
    pub kubelet: crate::cli::KubeletArgs,
    pub network: crate::cli::NetworkArgs,
}

const UPKEEP: Duration = Duration::from_secs(10);
/// How long a join waits for approval (a human may have to approve).
const JOIN_WAIT: Duration = Duration::from_secs(3600);
const RENEW_WAIT: Duration = Duration::from_secs(300);

/// This host's name, lowercased (the default node name).
pub fn default_node_name() -> String {
    crate::pki::hostname()
        .unwrap_or_else(|| "localhost".into())
        .to_ascii_lowercase()
}

/// The host's own IPv4 address (see `pki::host_ipv4`), else loopback.
pub fn default_node_ip() -> IpAddr {
    crate::pki::host_ipv4()
}

pub async fn run_cli(args: AgentArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::from_signals().context("cannot install signal handlers")?;
    let node_name = args.node_name.clone().unwrap_or_else(default_node_name);
    let cfg = Config {
        server: args.server.trim_end_matches('/').to_string(),
        token: args.token.clone(),
        data_dir: args.data_dir.clone(),
        hostname: node_name.clone(),
        node_name,
        node_ip: args.network.node_ip.unwrap_or_else(default_node_ip),
        extra_labels: Vec::new(),
        kubelet: args.kubelet.clone(),
        network: args.network.clone(),
    };
    run(cfg, shutdown.wait()).await
}

/// Whether `data_dir` holds a usable node identity (so no join token is needed).
pub fn has_identity(data_dir: &Path) -> bool {
    let pki = data_dir.join("pki");
    finish_swap(&pki, "kubelet-client");
    std::fs::read_to_string(pki.join("ca.crt")).is_ok()
        && load_pair(&pki, "kubelet-client").is_some()
}

/// Join if needed, then run the kubelet and the certificate upkeep until `shutdown`.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if let Err(e) = crate::api::validation::dns1123_subdomain(&cfg.node_name) {
        bail!("invalid node name {:?}: {e}", cfg.node_name);
    }
    // Before anything else, so a bad file is one line at start and a non-zero exit.
    let registries =
        crate::kubelet::images::registries::Registries::load(&cfg.kubelet.registry_config)?;
    let image_gc = crate::kubelet::ImageGc::new(
        cfg.kubelet.image_gc_high_threshold,
        cfg.kubelet.image_gc_low_threshold,
        cfg.kubelet.image_minimum_gc_age,
        cfg.kubelet.image_gc_period,
    )?;
    cfg.network.validate().map_err(|e| anyhow!("{e}"))?;
    let cluster_cidr: crate::kubelet::network::Ipv4Net = cfg
        .network
        .cluster_cidr
        .parse()
        .map_err(|e| anyhow!("--cluster-cidr: {e}"))?;
    let pki = cfg.data_dir.join("pki");
    crate::pki::ensure_private_dir(&pki)?;
    finish_swap(&pki, "kubelet-client");
    finish_swap(&pki, "kubelet-serving");
    finish_swap(&pki, "kube-proxy");
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let existing = std::fs::read_to_string(pki.join("ca.crt"))
        .ok()
        .zip(load_pair(&pki, "kubelet-client"));
    let (mut ca_pem, mut ident) = match existing {
        Some((ca, pair)) => {
            tracing::info!(node = %cfg.node_name, "using the node certificate in {}; no join token needed", pki.display());
            (ca, pair)
        }
        None => tokio::select! {
            r = join_cluster(&cfg, &pki) => r?,
            _ = stopped(stop_rx.clone()) => return Ok(()),
        },
    };
    let client = node_client(&cfg.server, &ca_pem, &ident).await?;
    let (tx, rx) = watch::channel(client);
    let kcfg = crate::kubelet::Config {
        registries: std::sync::Arc::new(registries),
        image_gc,
        node_name: cfg.node_name.clone(),
        node_ip: cfg.node_ip,
        hostname: cfg.hostname.clone(),
        extra_labels: cfg.extra_labels.clone(),
        data_dir: cfg.data_dir.clone(),
        pod_log_dir: cfg.kubelet.pod_log_dir.clone(),
        cgroup_root: cfg.kubelet.kubelet_cgroup_root.clone(),
        system_reserved: crate::kubelet::eviction::Reserved::parse(
            "--system-reserved",
            &cfg.kubelet.system_reserved,
        )?,
        kube_reserved: crate::kubelet::eviction::Reserved::parse(
            "--kube-reserved",
            &cfg.kubelet.kube_reserved,
        )?,
        eviction_hard: crate::kubelet::eviction::Thresholds::parse(&cfg.kubelet.eviction_hard)?,
        pod_manifest_path: cfg.kubelet.pod_manifest_path.clone(),
        kubelet_port: cfg.kubelet.kubelet_port,
        cluster_cidr,
        pod_network_backend: cfg.network.pod_network_backend,
        dns: crate::kubelet::pods::dns::NodeDns {
            cluster_dns: vec![cfg.network.cluster_dns],
            cluster_domain: cfg.network.cluster_domain.clone(),
            resolv_conf: cfg.kubelet.dns.resolv_conf.clone(),
        },
    };
    let kubelet = tokio::spawn(crate::kubelet::run(kcfg, rx, stopped(stop_rx.clone())));

    let mut dns_clients: Option<watch::Sender<kube::Client>> = None;
    let mut servers = server_list::ServerList::new(&cfg.server);
    let mut tick = tokio::time::interval(UPKEEP);
    let mut serving_retry_at = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut proxy_retry_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stopped(stop_rx.clone()) => break,
            _ = tick.tick() => {}
        }
        let mut client = tx.borrow().clone();
        let mut renew_all = false;
        let mut fetched = fetch_ca(&client).await;
        if let Err(e) = &fetched {
            tracing::warn!(server = %servers.current(), error = %format!("{e:#}"), "cannot reach the API server");
            // k3s's agent load balancer: move to the next server that answers; the kubelet
            // (and the DNS) pick the new client up from their channels and re-list.
            if let Some((server, c, bundle)) = failover(&servers, &ca_pem, &ident).await {
                tracing::info!(from = %servers.current(), to = %server, "failed over to another API server");
                servers.switch_to(&server);
                let _ = tx.send(c.clone());
                if let Some(dns) = &dns_clients {
                    if let Some(d) = proxy_client(servers.current(), &ca_pem, &pki).await {
                        let _ = dns.send(d);
                    }
                }
                client = c;
                fetched = Ok(bundle);
            }
        }
        if fetched.is_ok() {
            if let Ok(Ok(ep)) =
                tokio::time::timeout(server_list::PROBE_TIMEOUT, server_list::fetch(&client)).await
            {
                let before = servers.all().to_vec();
                servers.learn(&ep);
                if servers.all() != before.as_slice() {
                    tracing::info!(servers = ?servers.all(), "API servers learnt from default/kubernetes");
                }
            }
        }
        match fetched {
            Ok(bundle) if bundle != ca_pem => {
                tracing::info!("the cluster CA bundle changed (CA rotation): saving it and renewing the node certificates");
                crate::pki::write_atomic(&pki.join("ca.crt"), bundle.as_bytes(), 0o644)?;
                ca_pem = bundle;
                renew_all = true;
                let c = node_client(servers.current(), &ca_pem, &ident).await?;
                let _ = tx.send(c);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot fetch /cacerts from the server"),
        }
        if renew_all || due(&ident.1) {
            let client = tx.borrow().clone();
            match join::request(&client, &cfg.node_name, Kind::Client, RENEW_WAIT).await {
                Ok(issued) => {
                    save_pair(&pki, "kubelet-client", &issued)?;
                    ident = (issued.key_pem, issued.cert_pem);
                    let c = node_client(servers.current(), &ca_pem, &ident).await?;
                    // Calls in flight finish on the old connection; new ones use the new cert.
                    let _ = tx.send(c);
                    tracing::info!(node = %cfg.node_name, "node client certificate renewed");
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot renew the node client certificate; will retry")
                }
            }
        }
        let proxy_due = load_pair(&pki, "kube-proxy").is_none_or(|p| due(&p.1)) || renew_all;
        if proxy_due && tokio::time::Instant::now() >= proxy_retry_at {
            let client = tx.borrow().clone();
            match join::request(
                &client,
                &cfg.node_name,
                Kind::Proxy,
                Duration::from_secs(60),
            )
            .await
            {
                Ok(issued) => {
                    save_pair(&pki, "kube-proxy", &issued)?;
                    tracing::info!(node = %cfg.node_name, "service proxy certificate issued");
                    if let Some(tx) = &dns_clients {
                        if let Some(c) = proxy_client(servers.current(), &ca_pem, &pki).await {
                            let _ = tx.send(c);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot get the service proxy certificate; will retry");
                    proxy_retry_at = tokio::time::Instant::now() + Duration::from_secs(30);
                }
            }
        }
        // DNS, service proxy and NetworkPolicy share the node's network identity and
        // follow failovers and renewals through `dns_clients`.
        if dns_clients.is_none() {
            dns_clients = start_network(&cfg, servers.current(), &ca_pem, &pki, &stop_rx).await;
        }
        let serving = load_pair(&pki, "kubelet-serving");
        let serving_due = serving.as_ref().is_none_or(|p| due(&p.1)) || renew_all;
        if serving_due && tokio::time::Instant::now() >= serving_retry_at {
            let client = tx.borrow().clone();
            let dns = vec![cfg.node_name.clone(), cfg.hostname.clone()];
            let mut dns_unique = dns.clone();
            dns_unique.dedup();
            let ips = [cfg.node_ip];
            match join::request(
                &client,
                &cfg.node_name,
                Kind::Serving {
                    dns: &dns_unique,
                    ips: &ips,
                },
                Duration::from_secs(60),
            )
            .await
            {
                Ok(issued) => {
                    save_pair(&pki, "kubelet-serving", &issued)?;
                    tracing::info!(node = %cfg.node_name, "kubelet serving certificate issued");
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot get a kubelet serving certificate; will retry");
                    serving_retry_at = tokio::time::Instant::now() + Duration::from_secs(30);
                }
            }
        }
    }
    match kubelet.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow!(e)),
        Err(e) => Err(anyhow!("kubelet task failed: {e}")),
    }
}

/// The service proxy, following the cluster through `clients`. The CIDRs are k3s's
/// defaults unless the networking flags say otherwise.
async fn run_proxy(
    cfg: Config,
    clients: watch::Receiver<kube::Client>,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    let node_ips = match cfg.node_ip {
        IpAddr::V4(ip) if !ip.is_loopback() => vec![ip],
        _ => Vec::new(),
    };
    // `--cluster-cidr`/`--service-cidr` were validated at start; k3s's defaults otherwise.
    let cidr = |flag: &str, default: [u8; 4]| {
        flag.parse::<crate::kubelet::network::Ipv4Net>()
            .map(|n| crate::proxy::Cidr4 {
                addr: n.addr(),
                len: n.prefix(),
            })
            .unwrap_or(crate::proxy::Cidr4 {
                addr: default.into(),
                len: 16,
            })
    };
    let pcfg = crate::proxy::Config {
        node_name: cfg.node_name.clone(),
        node_ips,
        cluster_cidr: cidr(&cfg.network.cluster_cidr, [10, 42, 0, 0]),
        service_cidr: cidr(&cfg.network.service_cidr, [10, 43, 0, 0]),
    };
    tracing::info!(node = %cfg.node_name, "service proxy starting (nftables table ip rampart-proxy)");
    if let Err(e) = crate::proxy::run(pcfg, clients, stop).await {
        tracing::error!(error = %e, "the service proxy stopped");
    }
}

/// NetworkPolicy enforcement (`src/netpol/`), following the cluster through `clients`.
async fn run_network_policy(
    cfg: Config,
    clients: watch::Receiver<kube::Client>,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    let ncfg = crate::netpol::Config {
        node_name: cfg.node_name.clone(),
    };
    tracing::info!(node = %cfg.node_name, "network policy starting (nftables table ip rampart-netpol)");
    if let Err(e) = crate::netpol::run(ncfg, clients, stop).await {
        tracing::error!(error = %e, "network policy enforcement stopped");
    }
}

/// A client with the node's service-proxy identity, if it has one yet.
async fn proxy_client(server: &str, ca_pem: &str, pki: &Path) -> Option<kube::Client> {
    let pair = load_pair(pki, "kube-proxy")?;
    node_client(server, ca_pem, &pair).await.ok()
}

/// Start the node's network components that are enabled — cluster DNS, service proxy,
/// NetworkPolicy — once the service-proxy identity exists, on `server`; the sender hands
/// them the client of another server after a failover, and renewed clients.
async fn start_network(
    cfg: &Config,
    server: &str,
    ca_pem: &str,
    pki: &Path,
    stop_rx: &watch::Receiver<bool>,
) -> Option<watch::Sender<kube::Client>> {
    let client = proxy_client(server, ca_pem, pki).await?;
    let (tx, rx) = watch::channel(client);
    if !cfg.kubelet.dns.disable_cluster_dns {
        let mut dcfg = crate::dns::Config::new(cfg.network.cluster_dns);
        dcfg.cluster_domain = cfg.network.cluster_domain.clone();
        dcfg.listen = cfg.kubelet.dns.listen.clone();
        dcfg.resolv_conf = cfg.kubelet.dns.resolv_conf.clone();
        let (rx, stop) = (rx.clone(), stopped(stop_rx.clone()));
        tokio::spawn(async move {
            if let Err(e) = crate::dns::run(dcfg, rx, stop).await {
                tracing::error!(error = %e, "the cluster DNS stopped");
            }
        });
    }
    if !cfg.kubelet.disable_kube_proxy {
        tokio::spawn(run_proxy(cfg.clone(), rx.clone(), stopped(stop_rx.clone())));
    }
    if !cfg.kubelet.disable_network_policy {
        tokio::spawn(run_network_policy(
            cfg.clone(),
            rx,
            stopped(stop_rx.clone()),
        ));
    }
    Some(tx)
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// First join: pin the CA with the token, then a client CSR authenticated by the token.
async fn join_cluster(cfg: &Config, pki: &Path) -> anyhow::Result<(String, (String, String))> {
    let raw = cfg.token.as_deref().filter(|t| !t.trim().is_empty()).ok_or_else(|| {
        anyhow!(
            "no valid node certificate in {} and no --token given: create one with `rampart token create` on the server",
            pki.display()
        )
    })?;
    let token = JoinToken::parse(raw).map_err(|e| anyhow!(e))?;
    let ca_pem = join::pinned_ca(&cfg.server, &token).await?;
    crate::pki::write_atomic(&pki.join("ca.crt"), ca_pem.as_bytes(), 0o644)?;
    let client = crate::client::build(
        &cfg.server,
        &ca_pem,
        &Credentials::Bearer(token.bearer.as_bearer()),
    )
    .await
    .context("cannot build a client for the join")?;
    tracing::info!(node = %cfg.node_name, server = %cfg.server, "CA bundle pinned; requesting a node certificate");
    let issued = join::request(&client, &cfg.node_name, Kind::Client, JOIN_WAIT).await?;
    save_pair(pki, "kubelet-client", &issued)?;
    tracing::info!(node = %cfg.node_name, "joined: node certificate issued");
    Ok((ca_pem, (issued.key_pem, issued.cert_pem)))
}

async fn node_client(
    server: &str,
    ca_pem: &str,
    ident: &(String, String),
) -> anyhow::Result<kube::Client> {
    crate::client::build(
        server,
        ca_pem,
        &Credentials::Certificate {
            cert_pem: ident.1.clone(),
            key_pem: ident.0.clone(),
        },
    )
    .await
    .context("cannot build the node's API client")
}

async fn fetch_ca(client: &kube::Client) -> anyhow::Result<String> {
    let req = http::Request::get("/cacerts").body(Vec::new())?;
    tokio::time::timeout(server_list::PROBE_TIMEOUT, client.request_text(req))
        .await
        .map_err(|_| anyhow!("no answer within {:?}", server_list::PROBE_TIMEOUT))?
        .map_err(|e| anyhow!(e))
}

/// The first other server that answers `/cacerts` over mTLS with the node's identity: its
/// URL, a client for it and its CA bundle.
async fn failover(
    servers: &server_list::ServerList,
    ca_pem: &str,
    ident: &(String, String),
) -> Option<(String, kube::Client, String)> {
    for server in servers.others() {
        let Ok(c) = node_client(&server, ca_pem, ident).await else {
            continue;
        };
        match fetch_ca(&c).await {
            Ok(bundle) => return Some((server, c, bundle)),
            Err(e) => {
                tracing::debug!(server = %server, error = %format!("{e:#}"), "server not answering")
            }
        }
    }
    None
}

/// Validity (not_before, not_after) of a PEM certificate.
fn validity(cert_pem: &str) -> Option<(i64, i64)> {
    let der = crate::pki::pem::first_certificate(cert_pem.as_bytes())?;
    let (_, c) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some((
        c.validity().not_before.timestamp(),
        c.validity().not_after.timestamp(),
    ))
}

/// At 2/3 of the certificate's life (or if it cannot be read), renew.
fn due(cert_pem: &str) -> bool {
    let Some((nb, na)) = validity(cert_pem) else {
        return true;
    };
    jiff::Timestamp::now().as_second() >= nb + (na - nb) * 2 / 3
}

/// `(key_pem, cert_pem)` if both exist, match, and the certificate is still valid.
fn load_pair(pki: &Path, name: &str) -> Option<(String, String)> {
    let key = std::fs::read_to_string(pki.join(format!("{name}.key"))).ok()?;
    let cert = std::fs::read_to_string(pki.join(format!("{name}.crt"))).ok()?;
    let (_, na) = validity(&cert)?;
    if jiff::Timestamp::now().as_second() >= na {
        return None;
    }
    let kp = rcgen::KeyPair::from_pem(&key).ok()?;
    let der = crate::pki::pem::first_certificate(cert.as_bytes())?;
    let (_, c) = x509_parser::parse_x509_certificate(&der).ok()?;
    (c.public_key().raw == kp.subject_public_key_info().as_slice()).then_some((key, cert))
}

fn save_pair(pki: &Path, name: &str, issued: &join::Issued) -> anyhow::Result<()> {
    let key_next = pki.join(format!("{name}.key.next"));
    let crt_next = pki.join(format!("{name}.crt.next"));
    crate::pki::write_atomic(&key_next, issued.key_pem.as_bytes(), 0o600)?;
    crate::pki::write_atomic(&crt_next, issued.cert_pem.as_bytes(), 0o644)?;
    finish_swap(pki, name);
    Ok(())
}

/// Complete a renewal swap: key first, then certificate (see the module docs).
fn finish_swap(pki: &Path, name: &str) {
    let key_next = pki.join(format!("{name}.key.next"));
    let crt_next = pki.join(format!("{name}.crt.next"));
    if !crt_next.exists() {
        let _ = std::fs::remove_file(&key_next);
        return;
    }
    if key_next.exists() {
        let _ = std::fs::rename(&key_next, pki.join(format!("{name}.key")));
    }
    let _ = std::fs::rename(&crt_next, pki.join(format!("{name}.crt")));
}
