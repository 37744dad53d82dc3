//! The VXLAN overlay for peers that are not on this node's L2 segment, as flannel's vxlan
//! backend: one device `rampart.vxlan` (VNI 1, UDP 8472, no learning, MTU = uplink − 50)
//! whose address is the node's own VTEP address (the network address of its podCIDR, /32);
//! per remote node a route `podCIDR via <its VTEP address> dev rampart.vxlan onlink`, a
//! permanent neighbour entry VTEP address → VTEP MAC and an FDB entry VTEP MAC → the
//! node's InternalIP.
//!
//! Where flannel publishes each VTEP MAC in a Node annotation, ours is derived from the
//! VTEP address (`0a:58:` + its four bytes, the convention Kubernetes' own bridge plugins
//! use), so a peer's entries follow from its podCIDR and InternalIP alone.
//!
//! Invariant: everything on `rampart.vxlan` is ours; entries for nodes that are gone are
//! deleted by `prune`.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan};

use super::cidr::Ipv4Net;
use super::rtnl::{self, Error};

pub const DEVICE: &str = "rampart.vxlan";
pub const VNI: u32 = 1;
pub const PORT: u16 = 8472;
/// VXLAN's own headers (outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const OVERHEAD: u32 = 50;

/// The VTEP address of a node: the network address of its podCIDR.
pub fn vtep_ip(pod_cidr: Ipv4Net) -> Ipv4Addr {
    pod_cidr.addr()
}

/// The VTEP MAC of a node, derived from its VTEP address.
pub fn vtep_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

/// Create or re-adopt the device for our `pod_cidr`; returns its index.
pub async fn ensure(
    h: &Handle,
    pod_cidr: Ipv4Net,
    local: Ipv4Addr,
    uplink: Option<u32>,
    mtu: u32,
) -> Result<u32, Error> {
    let vtep = vtep_ip(pod_cidr);
    let index = match rtnl::link(h, DEVICE).await? {
        Some(l) => l.index,
        None => {
            let mut b = LinkVxlan::new(DEVICE, VNI)
                .port(PORT)
                .local(local)
                .learning(false)
                .mtu(mtu)
                .address(vtep_mac(vtep).to_vec());
            if let Some(u) = uplink {
                b = b.dev(u);
            }
            match rtnl::add_link(h, DEVICE, b.build()).await {
                Err(e) if e.exists() => {}
                r => r?,
            }
            rtnl::link(h, DEVICE)
                .await?
                .ok_or_else(|| Error::Request {
                    what: format!("create {DEVICE}"),
                    detail: "created but not found".into(),
                    errno: libc::ENODEV,
                })?
                .index
        }
    };
    rtnl::set_link(h, DEVICE, LinkUnspec::new_with_index(index).up().build()).await?;
    rtnl::add_address(h, index, vtep, 32).await?;
    Ok(index)
}

/// The neighbour and FDB entries for a peer (replaced if they exist).
pub async fn add_peer(
    h: &Handle,
    dev: u32,
    peer_cidr: Ipv4Net,
    peer_ip: Ipv4Addr,
) -> Result<(), Error> {
    let vtep = vtep_ip(peer_cidr);
    let mac = vtep_mac(vtep);
    h.neighbours()
        .add(dev, IpAddr::V4(vtep))
        .link_layer_address(&mac)
        .replace()
        .execute()
        .await
        .map_err(|e| Error::Request {
            what: format!("neighbour {vtep} on {DEVICE}"),
            detail: e.to_string(),
            errno: 0,
        })?;
    h.neighbours()
        .add_bridge(dev, &mac)
        .destination(IpAddr::V4(peer_ip))
        .flags(NeighbourFlags::Own)
        .replace()
        .execute()
        .await
        .map_err(|e| Error::Request {
            what: format!("FDB entry for {peer_ip} on {DEVICE}"),
            detail: e.to_string(),
            errno: 0,
        })
}

/// Neighbour (ARP) entries on the device: (VTEP address, MAC).
pub async fn neighbours(h: &Handle, dev: u32) -> Result<Vec<(Ipv4Addr, Vec<u8>)>, Error> {
    let all = dump(h, AddressFamily::Inet).await?;
    Ok(all
        .iter()
        .filter(|m| m.header.ifindex == dev)
        .filter_map(|m| {
            let ip = dst_of(m)?;
            Some((ip, lladdr(m)))
        })
        .collect())
}

/// FDB entries on the device: (MAC, remote node address).
pub async fn fdb(h: &Handle, dev: u32) -> Result<Vec<(Vec<u8>, Option<Ipv4Addr>)>, Error> {
    let all = dump(h, AddressFamily::Bridge).await?;
    Ok(all
        .iter()
        .filter(|m| m.header.ifindex == dev)
        .map(|m| {
            let dst = dst_of(m);
            (lladdr(m), dst)
        })
        .collect())
}

/// `NDA_DST` as IPv4: the parser keeps raw bytes for `AF_BRIDGE` (FDB) messages.
fn dst_of(m: &NeighbourMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
            <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
        }
        _ => None,
    })
}

fn lladdr(m: &NeighbourMessage) -> Vec<u8> {
    m.attributes
        .iter()
        .find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(l) => Some(l.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

async fn dump(h: &Handle, family: AddressFamily) -> Result<Vec<NeighbourMessage>, Error> {
    h.neighbours()
        .get()
        .set_address_family(family)
        .execute()
        .try_collect()
        .await
        .map_err(|e| Error::Request {
            what: format!("list neighbours ({family:?})"),
            detail: e.to_string(),
            errno: 0,
        })
}

/// Delete neighbour and FDB entries on the device that belong to no wanted peer.
pub async fn prune(h: &Handle, dev: u32, wanted: &[(Ipv4Net, Ipv4Addr)]) -> Result<(), Error> {
    let vteps: HashSet<Ipv4Addr> = wanted.iter().map(|(c, _)| vtep_ip(*c)).collect();
    let wanted_fdb: HashSet<(Vec<u8>, Ipv4Addr)> = wanted
        .iter()
        .map(|(c, ip)| (vtep_mac(vtep_ip(*c)).to_vec(), *ip))
        .collect();
    for m in dump(h, AddressFamily::Inet).await? {
        if m.header.ifindex != dev {
            continue;
        }
        let ip = dst_of(&m);
        if ip.is_some_and(|ip| !vteps.contains(&ip)) {
            let _ = h.neighbours().del(m).execute().await;
        }
    }
    for m in dump(h, AddressFamily::Bridge).await? {
        if m.header.ifindex != dev {
            continue;
        }
        let mac = lladdr(&m);
        let dst = dst_of(&m);
        // Only our kind of entry (a VTEP MAC with a remote): the kernel's own all-zero
        // or device-address entries stay.
        let ours = mac.len() == 6 && mac[0] == 0x0a && mac[1] == 0x58 && dst.is_some();
        let keep = match dst {
            Some(d) => wanted_fdb.contains(&(mac.clone(), d)),
            None => true,
        };
        if ours && !keep {
            let _ = h.neighbours().del(m).execute().await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vtep_facts_follow_the_pod_cidr() {
        let c: Ipv4Net = "10.42.3.0/24".parse().unwrap();
        assert_eq!(vtep_ip(c), Ipv4Addr::new(10, 42, 3, 0));
        assert_eq!(vtep_mac(vtep_ip(c)), [0x0a, 0x58, 10, 42, 3, 0]);
    }
}
