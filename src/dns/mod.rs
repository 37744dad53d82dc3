//! Cluster DNS, embedded in every agent (the role CoreDNS plays in k3s, served node-local the
//! way NodeLocal DNSCache is): the cluster DNS address (`--cluster-dns`, 10.43.0.10) is put on
//! a dummy interface `rampart-dns` on each node and served there on UDP and TCP port 53, so a
//! pod's query goes through its default route to its own node and never crosses the network.
//! The server creates Service `kube-system/kube-dns` with that ClusterIP only to reserve the
//! address (annotation `rampart.io/node-local: "true"` tells the service proxy to leave it).
//!
//! Data: watches on Services, EndpointSlices and Namespaces with the node's service-proxy
//! identity (`system:kube-proxy:<node>`), turned into an immutable [`zone::Index`] after each
//! change; queries read the current index and never call the API. Names outside the cluster
//! zone go to the node's resolvers ([`forward`]) with a cache.
//!
//! Files: `wire.rs` (codec), `zone.rs` (records and lookup), `forward.rs` (upstream and
//! cache), `server.rs` (UDP/TCP), `vip.rs` (the dummy interface over netlink).

pub mod forward;
pub mod server;
pub mod vip;
pub mod wire;
pub mod zone;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::watch;

pub use server::Resolver;

#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster zone (`--cluster-domain`, `cluster.local`).
    pub cluster_domain: String,
    /// The cluster DNS address (`--cluster-dns`, 10.43.0.10).
    pub cluster_dns: IpAddr,
    /// Where to serve (UDP and TCP each). Empty: port 53 of `cluster_dns`, put on the
    /// `rampart-dns` dummy interface first (needs CAP_NET_ADMIN).
    pub listen: Vec<SocketAddr>,
    /// The node's resolv.conf, whose nameservers get the names outside the cluster.
    pub resolv_conf: PathBuf,
    /// UDP receiving tasks per address (one per core is plenty).
    pub udp_workers: usize,
}

impl Config {
    pub fn new(cluster_dns: IpAddr) -> Config {
        Config {
            cluster_domain: "cluster.local".into(),
            cluster_dns,
            listen: Vec::new(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            udp_workers: std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot serve DNS on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot put the cluster DNS address on the {iface} interface: {detail}")]
    Vip { iface: String, detail: String },
}

/// Serve until `shutdown`, following the cluster through `clients` (swapped on renewal).
pub async fn run(
    cfg: Config,
    clients: watch::Receiver<kube::Client>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let listen = if cfg.listen.is_empty() {
        vip::ensure(vip::IFACE, cfg.cluster_dns)
            .await
            .map_err(|detail| Error::Vip {
                iface: vip::IFACE.into(),
                detail,
            })?;
        vec![SocketAddr::new(cfg.cluster_dns, 53)]
    } else {
        cfg.listen.clone()
    };
    let upstreams = forward::read_nameservers(&cfg.resolv_conf, &listen);
    let resolver = Arc::new(Resolver::new(
        zone::Index::empty(&cfg.cluster_domain),
        upstreams.clone(),
    ));
    let mut tasks = Vec::new();
    for addr in &listen {
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|source| Error::Bind {
                addr: *addr,
                source,
            })?;
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind {
                addr: *addr,
                source,
            })?;
        let udp = Arc::new(udp);
        for _ in 0..cfg.udp_workers.max(1) {
            tasks.push(tokio::spawn(server::serve_udp(
                resolver.clone(),
                udp.clone(),
            )));
        }
        tasks.push(tokio::spawn(server::serve_tcp(resolver.clone(), tcp)));
    }
    tracing::info!(listen = ?listen, upstreams = ?upstreams, domain = %cfg.cluster_domain, "cluster DNS serving");
    tokio::select! {
        _ = shutdown => {}
        _ = follow(&cfg, resolver.clone(), clients) => {}
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}

enum Change {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
    Namespace(Box<watcher::Event<Namespace>>),
    Failed(String),
}

/// Objects of one kind by namespace/name, rebuilt atomically on each re-list.
struct Kind<K> {
    objects: HashMap<String, K>,
    pending: Option<HashMap<String, K>>,
    listed: bool,
}

impl<K: kube::Resource> Kind<K> {
    fn new() -> Self {
        Kind {
            objects: HashMap::new(),
            pending: None,
            listed: false,
        }
    }

    fn key(o: &K) -> String {
        let m = o.meta();
        format!(
            "{}/{}",
            m.namespace.as_deref().unwrap_or(""),
            m.name.as_deref().unwrap_or("")
        )
    }

    /// Apply one event; true if the visible set changed.
    fn apply(&mut self, e: watcher::Event<K>) -> bool {
        match e {
            watcher::Event::Apply(o) => {
                self.objects.insert(Self::key(&o), o);
                true
            }
            watcher::Event::Delete(o) => {
                self.objects.remove(&Self::key(&o));
                true
            }
            watcher::Event::Init => {
                self.pending = Some(HashMap::new());
                false
            }
            watcher::Event::InitApply(o) => {
                if let Some(p) = &mut self.pending {
                    p.insert(Self::key(&o), o);
                }
                false
            }
            watcher::Event::InitDone => {
                if let Some(p) = self.pending.take() {
                    self.objects = p;
                }
                self.listed = true;
                true
            }
        }
    }
}

/// Keep the resolver's index in step with the cluster, restarting the watches whenever the
/// client is replaced (certificate renewal).
async fn follow(cfg: &Config, resolver: Arc<Resolver>, mut clients: watch::Receiver<kube::Client>) {
    let mut services = Kind::<Service>::new();
    let mut slices = Kind::<EndpointSlice>::new();
    let mut namespaces = Kind::<Namespace>::new();
    loop {
        let client = clients.borrow_and_update().clone();
        let wc = watcher::Config::default();
        let streams = futures::stream::select_all([
            watcher(Api::<Service>::all(client.clone()), wc.clone())
                .default_backoff()
                .map(|r| {
                    r.map_or_else(
                        |e| Change::Failed(e.to_string()),
                        |e| Change::Service(Box::new(e)),
                    )
                })
                .boxed(),
            watcher(Api::<EndpointSlice>::all(client.clone()), wc.clone())
                .default_backoff()
                .map(|r| {
                    r.map_or_else(
                        |e| Change::Failed(e.to_string()),
                        |e| Change::Slice(Box::new(e)),
                    )
                })
                .boxed(),
            watcher(Api::<Namespace>::all(client), wc)
                .default_backoff()
                .map(|r| {
                    r.map_or_else(
                        |e| Change::Failed(e.to_string()),
                        |e| Change::Namespace(Box::new(e)),
                    )
                })
                .boxed(),
        ]);
        tokio::pin!(streams);
        loop {
            let first = tokio::select! {
                c = streams.next() => c,
                r = clients.changed() => {
                    if r.is_err() {
                        // The agent is gone; keep the last index and stop following.
                        std::future::pending::<()>().await;
                    }
                    break;
                }
            };
            let Some(first) = first else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                break;
            };
            // Take every change already waiting, then rebuild once.
            let mut changed = false;
            let mut next = Some(first);
            while let Some(c) = next {
                changed |= match c {
                    Change::Service(e) => services.apply(*e),
                    Change::Slice(e) => slices.apply(*e),
                    Change::Namespace(e) => namespaces.apply(*e),
                    Change::Failed(e) => {
                        tracing::warn!(error = %e, "cluster DNS watch failed; retrying");
                        false
                    }
                };
                next = streams.next().now_or_never().flatten();
            }
            if !changed {
                continue;
            }
            let synced = services.listed && slices.listed && namespaces.listed;
            let serial = jiff::Timestamp::now().as_second() as u32;
            let index = zone::Index::build(
                &cfg.cluster_domain,
                Some(cfg.cluster_dns),
                services.objects.values(),
                slices.objects.values(),
                namespaces.objects.values(),
                serial,
            );
            resolver.publish(index, synced);
        }
    }
}
