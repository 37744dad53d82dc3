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
//! `system:node-proxier`.

pub mod healthcheck;
pub mod hostport;
pub mod parts;
pub mod ruleset;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::Notify;

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

fn watch_into<K>(api: Api<K>, notify: Arc<Notify>) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watch_into_with(api, watcher::Config::default(), notify)
}

fn watch_into_with<K>(
    api: Api<K>,
    config: watcher::Config,
    notify: Arc<Notify>,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let task = tokio::spawn(async move {
        let stream = reflector::reflector(writer, watcher(api, config))
            .default_backoff()
            .touched_objects();
        futures::pin_mut!(stream);
        // Deletions also pass through the reflector (as events, not touched objects), so
        // every event of the underlying watch wakes the sync, whatever it carried.
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                tracing::debug!(error = %e, "service proxy watch error; re-listing with back-off");
            }
            notify.notify_one();
        }
    });
    (store, task)
}

type Applier = crate::netfilter::Applier;

/// Compute and apply the table for the current stores. The applier and the memo come back
/// with the result; `Err` only if they were lost (the blocking task panicked) and the
/// applier cannot be replaced.
async fn sync(
    a: Applier,
    memo: parts::Memo,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    pods: &Store<Pod>,
    facts: &NodeFacts,
) -> Result<(Applier, parts::Memo, Result<SyncStats, Error>), Error> {
    let svcs = services.state();
    let eps = slices.state();
    let pods = pods.state();
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

/// Run the proxy until `shutdown`. The table stays when it stops (conntrack entries and
/// traffic keep flowing while the agent restarts); `cleanup` removes it.
pub async fn run(
    cfg: Config,
    client: kube::Client,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let notify = Arc::new(Notify::new());
    let (services, t1) = watch_into(Api::<Service>::all(client.clone()), notify.clone());
    let (slices, t2) = watch_into(Api::<EndpointSlice>::all(client.clone()), notify.clone());
    // Only this node's pods, for hostPort DNAT (the kubelet's own field selector).
    let (pods, t3) = watch_into_with(
        Api::<Pod>::all(client),
        watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node_name)),
        notify.clone(),
    );
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
    // Both stores must hold their first list before the first sync, or it would delete
    // every Service's rules for a moment.
    tokio::select! {
        _ = &mut shutdown => { t1.abort(); t2.abort(); t3.abort(); return Ok(()); }
        r = async { tokio::join!(services.wait_until_ready(), slices.wait_until_ready(), pods.wait_until_ready()) } => {
            if r.0.is_err() || r.1.is_err() || r.2.is_err() {
                return Err(Error::Worker("reflector stopped before its first list".into()));
            }
        }
    }
    loop {
        let (Some(mut a), Some(m)) = (applier.take(), memo.take()) else {
            break;
        };
        if last_full.elapsed() >= FULL_RESYNC_PERIOD {
            a.force_full_resync();
            last_full = std::time::Instant::now();
        }
        let started = std::time::Instant::now();
        let (a, m, r) = sync(a, m, &services, &slices, &pods, &facts).await?;
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
            let svcs = services.state();
            let eps = slices.state();
            let s: Vec<&Service> = svcs.iter().map(|a| a.as_ref()).collect();
            let e: Vec<&EndpointSlice> = eps.iter().map(|a| a.as_ref()).collect();
            healthcheck::plan(&s, &e, &cfg.node_name)
        };
        health.sync(checks, last_ok).await;
        // Debounce: at most one sync per MIN_SYNC_PERIOD; a failure retries after it.
        let wait_min = tokio::time::sleep(MIN_SYNC_PERIOD);
        tokio::select! {
            _ = &mut shutdown => break,
            _ = wait_min => {}
        }
        if last_ok {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = notify.notified() => {}
                _ = tokio::time::sleep(CHECK_PERIOD) => {}
            }
        }
    }
    t1.abort();
    t2.abort();
    t3.abort();
    Ok(())
}

/// Delete the proxy's table (what `rampart-killall.sh`/uninstall run, through
/// `rampart agent --cleanup`).
pub fn cleanup() -> Result<(), Error> {
    applier()?.cleanup()?;
    Ok(())
}
