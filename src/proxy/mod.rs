//! The service proxy: kube-proxy's nftables mode inside the agent. Services and
//! EndpointSlices come from kube-rs reflectors (one watch each, never a LIST per sync); a
//! change schedules a sync at most once per [`MIN_SYNC_PERIOD`] (upstream's minSyncPeriod);
//! a sync recomputes only the parts of the table whose Service or EndpointSlices changed
//! ([`parts::Memo`], over the pure [`ruleset`]) and applies only the difference in one
//! netlink transaction (the shared [`crate::netfilter::Applier`]): upstream's partial sync.
//! Every [`CHECK_PERIOD`] the table is checked with one cheap get: if someone deleted it, it
//! is rebuilt; every [`FULL_RESYNC_PERIOD`] the table is rebuilt from scratch anyway
//! (upstream's hourly full sync), which repairs changes someone made inside our table.
//!
//! The same table carries hostPort DNAT for this node's pods ([`hostport`], fed by a pod watch
//! limited to `spec.nodeName=<node>`), and LoadBalancer Services with
//! `externalTrafficPolicy: Local` get their health check node port served ([`healthcheck`]).
//!
//! Runs as `system:kube-proxy:<node>` (its own certificate, read-only access to Services,
//! EndpointSlices, Nodes and Pods), so its reads are authorised and audited as upstream's
//! `system:node-proxier`. Its client comes through a channel: when the agent fails over to
//! another API server (or renews the certificate) the watches start again on the new client
//! ([`crate::client::reflect`]) and syncs wait for their first lists; the rules stay as they
//! are meanwhile.

pub mod healthcheck;
pub mod hostport;
pub mod parts;
pub mod ruleset;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::sync::{watch, Notify};

use crate::client::reflect::{next_client, Reflectors};

pub use crate::netfilter::SyncStats;
pub use ruleset::{Cidr4, NodeFacts};

/// Upstream's minSyncPeriod: changes arriving within it are applied together.
pub const MIN_SYNC_PERIOD: Duration = Duration::from_secs(1);
/// How often the table is checked (one get) even without changes.
pub const CHECK_PERIOD: Duration = Duration::from_secs(10);
/// How often the whole table is rebuilt even if it looks intact (upstream: one hour).
pub const FULL_RESYNC_PERIOD: Duration = Duration::from_secs(3600);

/// The shared applier, for this table.
pub fn applier() -> Result<crate::netfilter::Applier, crate::netfilter::Error> {
    crate::netfilter::Applier::new(ruleset::TABLE, &[])
}

#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub node_ips: Vec<Ipv4Addr>,
    /// `--cluster-cidr` (k3s default 10.42.0.0/16): pod traffic leaving it is masqueraded.
    pub cluster_cidr: Cidr4,
    /// `--service-cidr` (k3s default 10.43.0.0/16).
    pub service_cidr: Cidr4,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Netfilter(#[from] crate::netfilter::Error),
    #[error("service proxy worker failed: {0}")]
    Worker(String),
}

/// The proxy's caches, fed by one client's watches.
struct Stores {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    pods: Store<Pod>,
}

/// Start the watches over `client`: Services, EndpointSlices, and this node's pods (for
/// hostPort DNAT; the kubelet's own field selector).
fn watch_all(client: kube::Client, node: &str, notify: &Arc<Notify>) -> (Reflectors, Stores) {
    let mut r = Reflectors::new("service proxy", notify.clone());
    let stores = Stores {
        services: r.watch(Api::all(client.clone()), watcher::Config::default()),
        slices: r.watch(Api::all(client.clone()), watcher::Config::default()),
        pods: r.watch(
            Api::all(client),
            watcher::Config::default().fields(&format!("spec.nodeName={node}")),
        ),
    };
    (r, stores)
}

type Applier = crate::netfilter::Applier;

/// Compute and apply the table for the current stores. The applier and the memo come back
/// with the result; `Err` only if they were lost (the blocking task panicked) and the
/// applier cannot be replaced.
async fn sync(
    a: Applier,
    memo: parts::Memo,
    stores: &Stores,
    facts: &NodeFacts,
) -> Result<(Applier, parts::Memo, Result<SyncStats, Error>), Error> {
    let svcs = stores.services.state();
    let eps = stores.slices.state();
    let pods = stores.pods.state();
    let joined = tokio::task::spawn_blocking(move || {
        let mut memo = memo;
        let desired = memo.parts(&svcs, &eps, &pods);
        let mut a = a;
        let r = a.sync_parts(&desired).map_err(Error::from);
        (a, memo, r)
    })
    .await;
    match joined {
        Ok(x) => Ok(x),
        // A fresh applier starts cold at the next sync.
        Err(e) => Ok((
            applier()?,
            parts::Memo::new(facts.clone()),
            Err(Error::Worker(e.to_string())),
        )),
    }
}

/// Run the proxy until `shutdown`, following the cluster through `clients` (the agent sends
/// a new client when it fails over to another API server or renews the proxy's
/// certificate). The table stays when it stops (conntrack entries and traffic keep flowing
/// while the agent restarts); `cleanup` removes it.
pub async fn run(
    cfg: Config,
    mut clients: watch::Receiver<kube::Client>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let notify = Arc::new(Notify::new());
    let facts = NodeFacts {
        node_name: cfg.node_name.clone(),
        node_ips: cfg.node_ips.clone(),
        cluster_cidr: cfg.cluster_cidr,
        service_cidr: cfg.service_cidr,
    };
    let mut applier = Some(applier()?);
    let mut memo = Some(parts::Memo::new(facts.clone()));
    let mut last_full = std::time::Instant::now();
    // Upstream binds health check node ports on every address (its default
    // `healthzBindAddress` family-wide).
    let mut health = healthcheck::HealthServers::new(Ipv4Addr::UNSPECIFIED);
    tokio::pin!(shutdown);
    let first = clients.borrow_and_update().clone();
    let (mut watches, mut stores) = watch_all(first, &cfg.node_name, &notify);
    'follow: loop {
        // Every store must hold its first list before a sync, or it would delete every
        // Service's rules for a moment (also after a failover's re-list).
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            ok = watches.ready() => if !ok {
                return Err(Error::Worker("reflector stopped before its first list".into()));
            },
            c = next_client(&mut clients) => {
                (watches, stores) = watch_all(c, &cfg.node_name, &notify);
                continue 'follow;
            }
        }
        loop {
            let (Some(mut a), Some(m)) = (applier.take(), memo.take()) else {
                return Ok(());
            };
            if last_full.elapsed() >= FULL_RESYNC_PERIOD {
                a.force_full_resync();
                last_full = std::time::Instant::now();
            }
            let started = std::time::Instant::now();
            let (a, m, r) = sync(a, m, &stores, &facts).await?;
            applier = Some(a);
            memo = Some(m);
            let last_ok = match r {
                Ok(st) => {
                    if st.messages > 0 {
                        tracing::info!(
                            cold = st.cold,
                            messages = st.messages,
                            transactions = st.transactions,
                            parts_changed = st.parts_changed,
                            chains_added = st.chains_added,
                            chains_rewritten = st.chains_rewritten,
                            chains_deleted = st.chains_deleted,
                            elements_added = st.elements_added,
                            elements_deleted = st.elements_deleted,
                            ms = started.elapsed().as_millis() as u64,
                            "service proxy synced"
                        );
                    }
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "service proxy sync failed; retrying from a cold start");
                    false
                }
            };
            let checks = {
                let svcs = stores.services.state();
                let eps = stores.slices.state();
                let s: Vec<&Service> = svcs.iter().map(|a| a.as_ref()).collect();
                let e: Vec<&EndpointSlice> = eps.iter().map(|a| a.as_ref()).collect();
                healthcheck::plan(&s, &e, &cfg.node_name)
            };
            health.sync(checks, last_ok).await;
            // Debounce: at most one sync per MIN_SYNC_PERIOD; a failure retries after it.
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(MIN_SYNC_PERIOD) => {}
            }
            if last_ok {
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = notify.notified() => {}
                    _ = tokio::time::sleep(CHECK_PERIOD) => {}
                    // Failover to another API server, or a renewed certificate: watch
                    // again through the new client; the rules stay as they are meanwhile.
                    c = next_client(&mut clients) => {
                        tracing::info!("service proxy: new API client (failover or renewal); re-listing");
                        (watches, stores) = watch_all(c, &cfg.node_name, &notify);
                        continue 'follow;
                    }
                }
            }
        }
    }
}

/// Delete the proxy's table (what `rampart-killall.sh`/uninstall run, through
/// `rampart agent --cleanup`).
pub fn cleanup() -> Result<(), Error> {
    applier()?.cleanup()?;
    Ok(())
}
