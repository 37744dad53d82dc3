//! NetworkPolicy (`networking.k8s.io/v1`) enforcement on the node, on nftables programmed
//! over netlink (table `ip rampart-netpol`; no `nft`/`iptables` binary). NetworkPolicies,
//! Pods and Namespaces come from kube-rs reflectors (one watch each); a change schedules a
//! sync at most once per [`MIN_SYNC_PERIOD`], which computes the desired table (the pure
//! [`ruleset::ruleset`], through [`parts::Memo`]: only the policies a change can touch are
//! recomputed) and applies only the difference in one transaction (the shared
//! [`crate::netfilter::Applier`], the service proxy's, with interval sets). Every
//! [`CHECK_PERIOD`] one get of the table checks it still exists; if someone deleted it, it
//! is rebuilt.
//!
//! Where it filters, and why: one base chain on the **forward** hook at priority filter (0).
//! Pod traffic between two pods of this node is bridged on `rampart0`; with `br_netfilter`
//! (`net.bridge.bridge-nf-call-iptables=1`, which this module switches on, as kubeadm and
//! k3s require) bridged IPv4 passes the inet forward hook, and traffic from or to other
//! nodes is routed through it anyway. Forward at priority 0 runs after the service proxy's
//! DNAT (prerouting, −100), so a packet sent to a Service's cluster IP is checked against
//! the backend pod it was translated to — what upstream's implementations (Calico,
//! kube-router, Cilium) do: policies speak of pods, never of Service IPs. Traffic the node
//! itself sends to its pods leaves through the output hook and is never filtered, which is
//! upstream's rule that a node may always reach its own pods; a pod's traffic to its own
//! node (the node-local cluster DNS among it) is input traffic and also unfiltered.
//!
//! Invariants: established and related traffic is accepted before any policy lookup, so a
//! policy update never cuts an allowed, established connection and return traffic always
//! flows; a pod isolated by no policy is never filtered; the first sync waits for all three
//! stores' first lists (an empty store would isolate nothing, or everything, for a moment).
//!
//! Runs as `system:kube-proxy:<node>` (the node's network identity, group
//! `system:node-proxier`), which may read NetworkPolicies, Pods and Namespaces. Its client
//! comes through a channel, as the service proxy's: on failover to another API server (or
//! renewal) the watches start again on the new client and syncs wait for their first lists.

pub mod parts;
pub mod ruleset;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::sync::{watch, Notify};

use crate::client::reflect::{next_client, Reflectors};

pub use ruleset::NodeFacts;

/// Changes arriving within this period are applied together (well inside the one second
/// a policy change may take to hold).
pub const MIN_SYNC_PERIOD: Duration = Duration::from_millis(200);
/// How often the table is checked (one get) even without changes.
pub const CHECK_PERIOD: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Netfilter(#[from] crate::netfilter::Error),
    #[error("network policy worker failed: {0}")]
    Worker(String),
}

struct Stores {
    policies: Store<NetworkPolicy>,
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
}

/// Start the watches (NetworkPolicies, Pods, Namespaces) over `client`.
fn watch_all(client: kube::Client, notify: &Arc<Notify>) -> (Reflectors, Stores) {
    let mut r = Reflectors::new("network policy", notify.clone());
    let wc = watcher::Config::default;
    let stores = Stores {
        policies: r.watch(Api::all(client.clone()), wc()),
        pods: r.watch(Api::all(client.clone()), wc()),
        namespaces: r.watch(Api::all(client), wc()),
    };
    (r, stores)
}

type Applier = crate::netfilter::Applier;

/// The shared applier, for this table and its interval sets.
pub fn applier() -> Result<Applier, crate::netfilter::Error> {
    crate::netfilter::Applier::new(ruleset::TABLE, &ruleset::ALLOW_FIELDS)
}

/// The applier and the remembered per-policy shares, moved into the blocking worker and
/// back for each sync.
struct Engine {
    applier: Applier,
    memo: parts::Memo,
}

impl Engine {
    fn new(facts: NodeFacts) -> Result<Engine, Error> {
        Ok(Engine {
            applier: applier()?,
            memo: parts::Memo::new(facts),
        })
    }
}

async fn sync(
    e: Engine,
    stores: &Stores,
    facts: NodeFacts,
) -> Result<(Engine, Result<crate::netfilter::SyncStats, Error>), Error> {
    let pols = stores.policies.state();
    let pods = stores.pods.state();
    let nss = stores.namespaces.state();
    let joined = tokio::task::spawn_blocking(move || {
        let mut e = e;
        let desired = e.memo.ruleset(&pols, &pods, &nss);
        let r = e.applier.sync(&desired).map_err(Error::from);
        (e, r)
    })
    .await;
    match joined {
        Ok(x) => Ok(x),
        Err(err) => Ok((Engine::new(facts)?, Err(Error::Worker(err.to_string())))),
    }
}

/// Bridged IPv4 must pass the IP hooks, or pods of one node would bypass every policy.
fn bridge_call_iptables() {
    let path = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == "1" => {}
        Ok(_) => {
            if let Err(e) = std::fs::write(path, "1") {
                tracing::warn!(error = %e, "cannot enable bridge-nf-call-iptables: policies between pods of this node are not enforced");
            }
        }
        Err(_) => tracing::warn!(
            "br_netfilter is not loaded (no {path}): policies between pods of this node are not enforced"
        ),
    }
}

/// Run the policy engine until `shutdown`, following the cluster through `clients`. The
/// table stays when it stops (policies keep holding while the agent restarts); `cleanup`
/// removes it.
pub async fn run(
    cfg: Config,
    mut clients: watch::Receiver<kube::Client>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    bridge_call_iptables();
    let notify = Arc::new(Notify::new());
    let facts = NodeFacts {
        node_name: cfg.node_name.clone(),
    };
    let mut engine = Some(Engine::new(facts.clone())?);
    tokio::pin!(shutdown);
    let first = clients.borrow_and_update().clone();
    let (mut watches, mut stores) = watch_all(first, &notify);
    'follow: loop {
        // A sync from half-listed stores would drop rules that still hold.
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            ok = watches.ready() => if !ok {
                return Err(Error::Worker("reflector stopped before its first list".into()));
            },
            c = next_client(&mut clients) => {
                (watches, stores) = watch_all(c, &notify);
                continue 'follow;
            }
        }
        loop {
            let Some(e) = engine.take() else {
                return Ok(());
            };
            let started = std::time::Instant::now();
            let (e, r) = sync(e, &stores, facts.clone()).await?;
            engine = Some(e);
            let last_ok = match r {
                Ok(st) => {
                    if st.messages > 0 {
                        tracing::info!(
                            cold = st.cold,
                            messages = st.messages,
                            elements_added = st.elements_added,
                            elements_deleted = st.elements_deleted,
                            ms = started.elapsed().as_millis() as u64,
                            "network policy synced"
                        );
                    }
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "network policy sync failed; retrying from a cold start");
                    false
                }
            };
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(MIN_SYNC_PERIOD) => {}
            }
            if last_ok {
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = notify.notified() => {}
                    _ = tokio::time::sleep(CHECK_PERIOD) => {}
                    // Failover or renewal: watch again through the new client.
                    c = next_client(&mut clients) => {
                        tracing::info!("network policy: new API client (failover or renewal); re-listing");
                        (watches, stores) = watch_all(c, &notify);
                        continue 'follow;
                    }
                }
            }
        }
    }
}

/// Delete the policy table (uninstall, through `internal-cleanup-network`).
pub fn cleanup() -> Result<(), Error> {
    applier()?.cleanup()?;
    Ok(())
}
