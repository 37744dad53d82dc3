//! The pod network of a node (issue 15 item 5, issue 16 item 1), programmed over netlink
//! only — no `ip`, CNI or other binaries:
//! - `bridge`: the node bridge `rampart0` holding the gateway (first address of the node's
//!   `spec.podCIDR`), IPv4 forwarding on;
//! - `veth`: per pod a veth pair, host end on the bridge (hairpin on), pod end `eth0` in
//!   the shim's network namespace with the pod's address and a default route;
//! - `ipam`: host-local address allocation from the podCIDR, kept under the data dir;
//! - `routes` + `vxlan`: routes to the other nodes' podCIDRs, host-gw on the same L2
//!   segment, VXLAN (flannel's VNI 1 / UDP 8472 / MTU − 50) otherwise;
//! - `cidr`, `rtnl`: IPv4 prefixes and the typed netlink requests.
//!
//! What upstream does with a CNI plugin chain (k3s: flannel + bridge + host-local +
//! portmap), Rampart does here in-process. `hostNetwork: true` pods never come here: they
//! stay in the host namespace and report the node IP. Masquerade of traffic leaving the
//! cluster CIDR is nftables and belongs to the service proxy (`Config::cluster_cidr` is
//! what it needs).
//!
//! Invariants: the agent's own podCIDR comes from its Node (node IPAM), and no pod gets an
//! address before it is known; a pod's address is stable for the life of its sandbox, also
//! across agent restarts, and given back when the sandbox is torn down.

pub mod bridge;
pub mod cidr;
pub mod ipam;
pub mod routes;
pub mod rtnl;
pub mod veth;
pub mod vxlan;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::{watch, Mutex};

pub use cidr::Ipv4Net;

/// `--pod-network-backend`: how other nodes' pods are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Backend {
    /// host-gw for nodes on one of this node's subnets, VXLAN for the others.
    #[default]
    Auto,
    /// Routes via the other nodes' InternalIPs only (all nodes on one L2 segment).
    HostGw,
    /// VXLAN to every other node.
    Vxlan,
}

/// The network facts an agent runs with (also what the service proxy and DNS need).
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub node_ip: IpAddr,
    /// `--cluster-cidr`: all pods of the cluster (k3s: 10.42.0.0/16).
    pub cluster_cidr: Ipv4Net,
    pub backend: Backend,
    /// Where the IPAM state lives (`<agent data dir>/network`).
    pub state_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the node has no spec.podCIDR yet (node IPAM assigns it)")]
    NoPodCidr,
    #[error(transparent)]
    Netlink(#[from] rtnl::Error),
    #[error(transparent)]
    Ipam(#[from] ipam::Error),
}

/// The node's pod network, shared by the pod workers and the route loop.
pub struct Network {
    cfg: Config,
    handle: rtnetlink::Handle,
    pod_cidr: watch::Sender<Option<Ipv4Net>>,
    /// Serialises attach/detach (bridge creation, IPAM) on this node.
    lock: Mutex<()>,
    uplink: Option<u32>,
    uplink_mtu: u32,
}

impl Network {
    /// Open a netlink socket in the agent's namespace and find the uplink (the link that
    /// holds the node IP) for MTUs and the VXLAN device.
    pub async fn new(cfg: Config) -> Result<Network, Error> {
        let handle = rtnl::connect()?;
        let mut uplink = None;
        let mut uplink_mtu = 1500;
        if let Some(ip) = routes::v4(cfg.node_ip) {
            let addrs = rtnl::addresses(&handle, None).await?;
            if let Some((idx, _, _)) = addrs.iter().find(|(_, a, _)| *a == ip) {
                uplink = Some(*idx);
                if let Some(l) = rtnl::links(&handle)
                    .await?
                    .into_iter()
                    .find(|l| l.index == *idx)
                {
                    if l.mtu >= 1280 {
                        uplink_mtu = l.mtu;
                    }
                }
            }
        }
        Ok(Network {
            cfg,
            handle,
            pod_cidr: watch::channel(None).0,
            lock: Mutex::new(()),
            uplink,
            uplink_mtu,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The MTU of pod interfaces: the uplink's, less the VXLAN overhead unless host-gw is
    /// forced (flannel's rule).
    pub fn pod_mtu(&self) -> u32 {
        match self.cfg.backend {
            Backend::HostGw => self.uplink_mtu,
            _ => self.uplink_mtu - vxlan::OVERHEAD,
        }
    }

    /// This node's podCIDR, once known.
    pub fn pod_cidr(&self) -> Option<Ipv4Net> {
        *self.pod_cidr.borrow()
    }

    fn ipam(&self, range: Ipv4Net) -> Result<ipam::Ipam, Error> {
        Ok(ipam::Ipam::open(&self.cfg.state_dir.join("ipam"), range)?)
    }

    /// Give the pod (sandbox held by shim `shim_pid`) its `eth0` and address; idempotent:
    /// a pod already attached (e.g. re-adopted after an agent restart) keeps its address.
    pub async fn attach(&self, uid: &str, shim_pid: i32) -> Result<Ipv4Addr, Error> {
        let range = self.pod_cidr().ok_or(Error::NoPodCidr)?;
        let gateway = range.gateway().ok_or(Error::NoPodCidr)?;
        let _g = self.lock.lock().await;
        let ipam = self.ipam(range)?;
        if ipam.lookup(uid).is_some_and(|ip| !range.contains(ip)) {
            // From a former podCIDR of this node name: that sandbox's address is void.
            ipam.release(uid);
        }
        let fresh = ipam.lookup(uid).is_none();
        let ip = ipam.allocate(uid)?;
        let r = async {
            let br = bridge::ensure(&self.handle, range, self.pod_mtu()).await?;
            veth::attach(
                &self.handle,
                br,
                uid,
                shim_pid,
                veth::PodAddr {
                    ip,
                    prefix: range.prefix(),
                    gateway,
                    mtu: self.pod_mtu(),
                },
            )
            .await
        }
        .await;
        match r {
            Ok(()) => Ok(ip),
            Err(e) => {
                if fresh {
                    ipam.release(uid);
                }
                Err(e.into())
            }
        }
    }

    /// Remove the pod's veth pair and give its address back (nothing attached is fine).
    pub async fn detach(&self, uid: &str) -> Result<(), Error> {
        let _g = self.lock.lock().await;
        veth::detach(&self.handle, uid).await?;
        // The range is only needed to allocate; releasing works on whatever is recorded.
        let any: Ipv4Net = Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).map_err(|_| Error::NoPodCidr)?;
        let released = self.ipam(self.pod_cidr().unwrap_or(any))?.release(uid);
        if !released.is_empty() {
            tracing::debug!(uid, ips = ?released, "pod addresses released");
        }
        Ok(())
    }

    /// Release addresses whose pod is not in `live` (sandboxes torn down while the agent
    /// was away).
    pub async fn release_unless(&self, live: &[String]) {
        let any = match Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0) {
            Ok(a) => a,
            Err(_) => return,
        };
        let Ok(ipam) = self.ipam(self.pod_cidr().unwrap_or(any)) else {
            return;
        };
        for (ip, owner) in ipam.allocations() {
            if !live.contains(&owner) {
                tracing::info!(%ip, uid = %owner, "releasing the address of a pod that is gone");
                let _ = self.detach(&owner).await;
            }
        }
    }
}

const RESYNC: Duration = Duration::from_secs(30);

/// Watch the Nodes: learn this node's podCIDR (and create the bridge), and keep the routes
/// to every other node's pods, until `shutdown`.
pub async fn run(
    net: std::sync::Arc<Network>,
    clients: watch::Receiver<kube::Client>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut clients = clients;
    let mut nodes: HashMap<String, routes::Peer> = HashMap::new();
    let mut synced = false;
    loop {
        let client = clients.borrow_and_update().clone();
        let api: Api<Node> = Api::all(client);
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut init: HashMap<String, routes::Peer> = HashMap::new();
        let mut tick = tokio::time::interval(RESYNC);
        loop {
            let mut changed = false;
            tokio::select! {
                _ = &mut shutdown => return,
                r = clients.changed() => {
                    if r.is_err() { return }
                    break;
                }
                _ = tick.tick() => changed = synced,
                ev = stream.next() => {
                    let Some(ev) = ev else { break };
                    match ev {
                        Ok(Event::Init) => init.clear(),
                        Ok(Event::InitApply(n)) => {
                            if let Some(p) = routes::Peer::from_node(&n) { init.insert(p.name.clone(), p); }
                        }
                        Ok(Event::InitDone) => {
                            nodes = std::mem::take(&mut init);
                            synced = true;
                            changed = true;
                        }
                        Ok(Event::Apply(n)) => {
                            if let Some(p) = routes::Peer::from_node(&n) {
                                changed = nodes.get(&p.name) != Some(&p);
                                nodes.insert(p.name.clone(), p);
                            }
                        }
                        Ok(Event::Delete(n)) => {
                            if let Some(name) = n.metadata.name.as_deref() {
                                changed = nodes.remove(name).is_some();
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "node watch failed; retrying"),
                    }
                }
            }
            if changed {
                if let Err(e) = net.reconcile(&nodes).await {
                    tracing::warn!(error = %e, "cannot program the pod network; retrying");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Network {
    async fn reconcile(&self, nodes: &HashMap<String, routes::Peer>) -> Result<(), Error> {
        let me = nodes.get(&self.cfg.node_name);
        let own = me.and_then(|p| p.pod_cidr);
        if let Some(own) = own {
            if !self.cfg.cluster_cidr.covers(&own) {
                tracing::warn!(pod_cidr = %own, cluster_cidr = %self.cfg.cluster_cidr, "this node's podCIDR is outside --cluster-cidr");
            }
            if self.pod_cidr() != Some(own) {
                let _g = self.lock.lock().await;
                bridge::ensure(&self.handle, own, self.pod_mtu()).await?;
                self.pod_cidr.send_replace(Some(own));
                tracing::info!(pod_cidr = %own, "pod network ready");
            }
        }
        let Some(own) = own else {
            return Ok(());
        };
        let Some(node_ip) = routes::v4(self.cfg.node_ip) else {
            return Ok(());
        };
        let peers: Vec<routes::Peer> = nodes.values().cloned().collect();
        let local = routes::local_subnets(&self.handle).await?;
        let wanted = routes::plan(
            &self.cfg.node_name,
            Some(own),
            self.cfg.cluster_cidr,
            self.cfg.backend,
            &local,
            &peers,
        );
        let need_vxlan = wanted.values().any(|v| matches!(v, routes::Via::Vxlan(_)));
        routes::apply(
            &self.handle,
            &routes::Local {
                own_cidr: own,
                node_ip,
                uplink: self.uplink,
                vxlan_mtu: self.uplink_mtu - vxlan::OVERHEAD,
            },
            &wanted,
            need_vxlan,
        )
        .await?;
        Ok(())
    }
}
