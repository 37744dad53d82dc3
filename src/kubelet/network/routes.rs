//! Routes to the other nodes' pods (issue 16 item 1), as flannel's host-gw and vxlan
//! backends: a watch on Nodes keeps, for every other node with a `spec.podCIDR` and an
//! InternalIP, one route to its podCIDR — via its InternalIP when that address is on one of
//! this node's own subnets (host-gw), else through `rampart.vxlan` (see `vxlan`). With
//! `--pod-network-backend auto` the choice is made per peer; `host-gw` and `vxlan` force it.
//!
//! Invariants: every route we add carries protocol `RTPROT_RAMPART`, and only such routes
//! are ever deleted; each reconcile computes the whole wanted set from the current Nodes
//! (`plan`, a pure function) and converges the kernel to it, so it is idempotent across
//! agent restarts (existing entries are re-adopted, stale ones removed) and a deleted
//! Node's route and FDB entries go at the next event.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Node;

use super::cidr::Ipv4Net;
use super::rtnl::{self, RTPROT_RAMPART};
use super::{vxlan, Backend};

/// What a Node tells us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub pod_cidr: Option<Ipv4Net>,
    pub ip: Option<Ipv4Addr>,
}

impl Peer {
    pub fn from_node(n: &Node) -> Option<Peer> {
        let name = n.metadata.name.clone()?;
        let pod_cidr = n
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|c| c.parse().ok());
        let ip = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| {
                a.iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .find_map(|a| a.address.parse::<Ipv4Addr>().ok())
            });
        Some(Peer { name, pod_cidr, ip })
    }
}

/// How one remote podCIDR is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    HostGw(Ipv4Addr),
    Vxlan(Ipv4Addr),
}

/// The wanted routes: every other node with a podCIDR (inside the cluster CIDR, and not
/// overlapping ours) and an InternalIP. `local` are this node's own subnets.
pub fn plan(
    me: &str,
    own_cidr: Option<Ipv4Net>,
    cluster: Ipv4Net,
    backend: Backend,
    local: &[Ipv4Net],
    peers: &[Peer],
) -> HashMap<Ipv4Net, Via> {
    let mut out = HashMap::new();
    for p in peers {
        if p.name == me {
            continue;
        }
        let (Some(cidr), Some(ip)) = (p.pod_cidr, p.ip) else {
            continue;
        };
        if !cluster.covers(&cidr) || own_cidr.is_some_and(|o| o.covers(&cidr) || cidr.covers(&o)) {
            continue;
        }
        let direct = local.iter().any(|n| n.contains(ip));
        let via = match backend {
            Backend::HostGw => Via::HostGw(ip),
            Backend::Vxlan => Via::Vxlan(ip),
            Backend::Auto if direct => Via::HostGw(ip),
            Backend::Auto => Via::Vxlan(ip),
        };
        out.insert(cidr, via);
    }
    out
}

/// This node's own IPv4 subnets (for the host-gw reachability test), bridge and VXLAN
/// device excluded.
pub async fn local_subnets(h: &rtnetlink::Handle) -> Result<Vec<Ipv4Net>, rtnl::Error> {
    let skip: Vec<u32> = rtnl::links(h)
        .await?
        .into_iter()
        .filter(|l| l.name == super::bridge::BRIDGE || l.name == vxlan::DEVICE || l.name == "lo")
        .map(|l| l.index)
        .collect();
    Ok(rtnl::addresses(h, None)
        .await?
        .into_iter()
        .filter(|(i, _, p)| !skip.contains(i) && *p < 32)
        .filter_map(|(_, ip, p)| {
            let base = u32::from(ip) & (u32::MAX << (32 - u32::from(p)));
            Ipv4Net::new(Ipv4Addr::from(base), p).ok()
        })
        .collect())
}

/// What the node facts the routes need: our own podCIDR, our address and uplink.
pub struct Local {
    pub own_cidr: Ipv4Net,
    pub node_ip: Ipv4Addr,
    pub uplink: Option<u32>,
    pub vxlan_mtu: u32,
}

/// Converge the kernel to `wanted`.
pub async fn apply(
    h: &rtnetlink::Handle,
    local: &Local,
    wanted: &HashMap<Ipv4Net, Via>,
    need_vxlan: bool,
) -> Result<(), rtnl::Error> {
    let vx = if need_vxlan {
        Some(
            vxlan::ensure(
                h,
                local.own_cidr,
                local.node_ip,
                local.uplink,
                local.vxlan_mtu,
            )
            .await?,
        )
    } else {
        rtnl::link(h, vxlan::DEVICE).await?.map(|l| l.index)
    };
    let mut first_err = None;
    let mut vx_peers = Vec::new();
    for (cidr, via) in wanted {
        let r = match via {
            Via::HostGw(gw) => {
                rtnl::replace_route(h, *cidr, Some(*gw), None, false, RTPROT_RAMPART).await
            }
            Via::Vxlan(ip) => match vx {
                Some(dev) => {
                    vx_peers.push((*cidr, *ip));
                    match vxlan::add_peer(h, dev, *cidr, *ip).await {
                        Ok(()) => {
                            rtnl::replace_route(
                                h,
                                *cidr,
                                Some(vxlan::vtep_ip(*cidr)),
                                Some(dev),
                                true,
                                RTPROT_RAMPART,
                            )
                            .await
                        }
                        Err(e) => Err(e),
                    }
                }
                None => Ok(()),
            },
        };
        if let Err(e) = r {
            tracing::warn!(cidr = %cidr, error = %e, "cannot program the route to a node's pods");
            first_err.get_or_insert(e);
        }
    }
    for r in rtnl::routes(h).await? {
        if r.protocol == RTPROT_RAMPART && !wanted.contains_key(&r.dst) {
            tracing::info!(cidr = %r.dst, "removing the route to a node that is gone");
            if let Err(e) = rtnl::del_route(h, r.dst, RTPROT_RAMPART).await {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(dev) = vx {
        vxlan::prune(h, dev, &vx_peers).await?;
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The node's address as IPv4 (the pod network is IPv4 only).
pub fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v) => Some(v),
        IpAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, cidr: &str, ip: &str) -> Peer {
        Peer {
            name: name.into(),
            pod_cidr: cidr.parse().ok(),
            ip: ip.parse().ok(),
        }
    }

    #[test]
    fn plan_picks_host_gw_on_link_and_vxlan_elsewhere() {
        let cluster: Ipv4Net = "10.42.0.0/16".parse().unwrap();
        let local: Vec<Ipv4Net> = vec!["192.168.1.0/24".parse().unwrap()];
        let peers = vec![
            peer("me", "10.42.0.0/24", "192.168.1.10"),
            peer("near", "10.42.1.0/24", "192.168.1.11"),
            peer("far", "10.42.2.0/24", "172.16.0.5"),
            peer("nocidr", "", "192.168.1.12"),
            peer("noip", "10.42.4.0/24", ""),
            peer("outside", "10.99.0.0/24", "192.168.1.13"),
            peer("clash", "10.42.0.0/24", "192.168.1.14"),
        ];
        let own = Some("10.42.0.0/24".parse().unwrap());
        let p = plan("me", own, cluster, Backend::Auto, &local, &peers);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(
            p[&"10.42.1.0/24".parse().unwrap()],
            Via::HostGw("192.168.1.11".parse().unwrap())
        );
        assert_eq!(
            p[&"10.42.2.0/24".parse().unwrap()],
            Via::Vxlan("172.16.0.5".parse().unwrap())
        );
        let forced = plan("me", own, cluster, Backend::Vxlan, &local, &peers);
        assert!(forced.values().all(|v| matches!(v, Via::Vxlan(_))));
        let gw = plan("me", own, cluster, Backend::HostGw, &local, &peers);
        assert!(gw.values().all(|v| matches!(v, Via::HostGw(_))));
    }
}
