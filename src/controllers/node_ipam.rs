//! Node IPAM, as upstream's `nodeipam` controller with the range allocator: every Node gets
//! `spec.podCIDR` / `spec.podCIDRs` — one `/--node-cidr-mask-size` slice (default /24) of
//! `--cluster-cidr` (default 10.42.0.0/16, k3s's defaults).
//!
//! Invariants: no two nodes get the same slice, across restarts too — the allocation map is
//! rebuilt from the CIDRs already on the Nodes (the first complete list) before anything is
//! handed out; a Node's CIDR, once set, is never changed (upstream validation forbids it); a
//! deleted Node's slice is free again. IPv4 only; a full range leaves new nodes without a CIDR
//! and logs it (upstream raises a `CIDRNotAvailable` event).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

use super::Error;

const NAME: &str = "node-ipam";

/// An IPv4 range split into equal per-node slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    prefix: u8,
    node_prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("--cluster-cidr {0:?} is not an IPv4 CIDR like 10.42.0.0/16")]
    Malformed(String),
    #[error("--node-cidr-mask-size {node} must be between the cluster prefix {cluster} and 30, with at most 65536 node slices")]
    MaskSize { cluster: u8, node: u8 },
}

impl Cidr {
    pub fn parse(cluster: &str, node_prefix: u8) -> Result<Cidr, CidrError> {
        let bad = || CidrError::Malformed(cluster.to_string());
        let (ip, len) = cluster.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        if prefix > 30 {
            return Err(bad());
        }
        if node_prefix < prefix || node_prefix > 30 || node_prefix - prefix > 16 {
            return Err(CidrError::MaskSize {
                cluster: prefix,
                node: node_prefix,
            });
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(Cidr {
            base: u32::from(ip) & mask,
            prefix,
            node_prefix,
        })
    }

    pub fn slices(&self) -> u32 {
        1u32 << (self.node_prefix - self.prefix)
    }

    pub fn slice(&self, i: u32) -> String {
        let ip = Ipv4Addr::from(self.base + (i << (32 - self.node_prefix)));
        format!("{ip}/{}", self.node_prefix)
    }

    /// The index of `cidr` if it is exactly one of our slices.
    pub fn index_of(&self, cidr: &str) -> Option<u32> {
        let (ip, len) = cidr.split_once('/')?;
        if len.parse::<u8>().ok()? != self.node_prefix {
            return None;
        }
        let ip = u32::from(ip.parse::<Ipv4Addr>().ok()?);
        let offset = ip.checked_sub(self.base)?;
        let i = offset >> (32 - self.node_prefix);
        (i < self.slices() && offset & ((1u32 << (32 - self.node_prefix)) - 1) == 0).then_some(i)
    }
}

/// The allocation map: which slices are taken, by which node.
#[derive(Debug)]
struct Allocator {
    cidr: Cidr,
    used: HashSet<u32>,
    by_node: HashMap<String, u32>,
    next: u32,
}

impl Allocator {
    fn new(cidr: Cidr) -> Self {
        Allocator {
            cidr,
            used: HashSet::new(),
            by_node: HashMap::new(),
            next: 0,
        }
    }

    /// Record a CIDR already on a node.
    fn occupy(&mut self, node: &str, cidr: &str) {
        if let Some(i) = self.cidr.index_of(cidr) {
            self.used.insert(i);
            self.by_node.insert(node.to_string(), i);
        }
    }

    fn allocate(&mut self, node: &str) -> Option<String> {
        let n = self.cidr.slices();
        for k in 0..n {
            let i = (self.next + k) % n;
            if self.used.insert(i) {
                self.next = (i + 1) % n;
                self.by_node.insert(node.to_string(), i);
                return Some(self.cidr.slice(i));
            }
        }
        None
    }

    fn release(&mut self, node: &str) {
        if let Some(i) = self.by_node.remove(node) {
            if !self.by_node.values().any(|j| *j == i) {
                self.used.remove(&i);
            }
        }
    }
}

fn pod_cidr(node: &Node) -> Option<String> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidr
        .clone()
        .or_else(|| spec.pod_cidrs.as_ref().and_then(|c| c.first().cloned()))
        .filter(|c| !c.is_empty())
}

/// Run until the process stops (the caller aborts the task).
pub async fn run(client: kube::Client, cidr: Cidr) -> Result<(), Error> {
    let api: Api<Node> = Api::all(client);
    let mut alloc = Allocator::new(cidr);
    let mut listing: Vec<Node> = Vec::new();
    let mut synced = false;
    let mut waiting: Vec<String> = Vec::new();
    let mut events =
        std::pin::pin!(watcher(api.clone(), watcher::Config::default()).default_backoff());
    while let Some(ev) = events.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(controller = NAME, error = %e, "watch error");
                continue;
            }
        };
        match ev {
            watcher::Event::Init => listing.clear(),
            watcher::Event::InitApply(n) => listing.push(n),
            watcher::Event::InitDone => {
                // Every CIDR already handed out is taken before anything new is allocated.
                for n in &listing {
                    if let (Some(name), Some(c)) = (n.metadata.name.as_deref(), pod_cidr(n)) {
                        alloc.occupy(name, &c);
                    }
                }
                synced = true;
                waiting = listing
                    .drain(..)
                    .filter(|n| pod_cidr(n).is_none() && n.metadata.deletion_timestamp.is_none())
                    .filter_map(|n| n.metadata.name)
                    .collect();
            }
            watcher::Event::Apply(n) => {
                let Some(name) = n.metadata.name.clone() else {
                    continue;
                };
                match pod_cidr(&n) {
                    Some(c) => alloc.occupy(&name, &c),
                    None if synced && n.metadata.deletion_timestamp.is_none() => waiting.push(name),
                    None => {}
                }
            }
            watcher::Event::Delete(n) => {
                if let Some(name) = n.metadata.name.as_deref() {
                    alloc.release(name);
                }
            }
        }
        for name in std::mem::take(&mut waiting) {
            if alloc.by_node.contains_key(&name) {
                continue;
            }
            let Some(c) = alloc.allocate(&name) else {
                tracing::warn!(controller = NAME, node = %name, "no pod CIDR left in the cluster CIDR");
                continue;
            };
            let patch = json!({"spec": {"podCIDR": c, "podCIDRs": [c]}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(controller = NAME, node = %name, cidr = %c, "allocated pod CIDR")
                }
                Err(e) => {
                    // Gone or refused: free the slice; the next event of the node retries.
                    tracing::warn!(controller = NAME, node = %name, error = %e, "cannot set the pod CIDR");
                    alloc.release(&name);
                }
            }
        }
    }
    Err(Error::Controller {
        name: NAME,
        detail: "the node watch ended".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_and_allocation() {
        let c = Cidr::parse("10.42.0.0/16", 24).unwrap();
        assert_eq!(c.slices(), 256);
        assert_eq!(c.slice(0), "10.42.0.0/24");
        assert_eq!(c.slice(255), "10.42.255.0/24");
        assert_eq!(c.index_of("10.42.7.0/24"), Some(7));
        assert_eq!(c.index_of("10.42.7.1/24"), None);
        assert_eq!(c.index_of("10.43.0.0/24"), None);
        assert_eq!(c.index_of("10.42.0.0/25"), None);
        let mut a = Allocator::new(c);
        a.occupy("old", "10.42.0.0/24");
        assert_eq!(a.allocate("n1").as_deref(), Some("10.42.1.0/24"));
        a.release("old");
        let mut seen = HashSet::new();
        for i in 0..255 {
            assert!(seen.insert(a.allocate(&format!("x{i}")).unwrap()));
        }
        assert_eq!(a.allocate("full"), None);
        assert!(Cidr::parse("10.42.0.0", 24).is_err());
        assert!(Cidr::parse("10.42.0.0/16", 8).is_err());
        assert!(Cidr::parse("nope/16", 24).is_err());
    }
}
