//! The node bridge (`rampart0`; k3s's flannel calls it `cni0`): every pod's host-side veth
//! is a port of it, and it holds the gateway address, the first address of the node's
//! `spec.podCIDR`, so the node routes to its own pods through it. Also switches on IPv4
//! forwarding (`/proc/sys/net/ipv4/ip_forward`), without which nothing leaves a pod.
//!
//! Idempotent: an existing bridge is re-adopted (brought up, address added if missing).

use rtnetlink::packet_route::link::{InfoBridgePort, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec};

use super::cidr::Ipv4Net;
use super::rtnl::{self, Error};

pub const BRIDGE: &str = "rampart0";

/// Create or re-adopt the bridge for `range`; returns its index.
pub async fn ensure(h: &Handle, range: Ipv4Net, mtu: u32) -> Result<u32, Error> {
    let index = match rtnl::link(h, BRIDGE).await? {
        Some(l) => l.index,
        None => {
            match rtnl::add_link(h, BRIDGE, LinkBridge::new(BRIDGE).mtu(mtu).build()).await {
                Err(e) if e.exists() => {}
                r => r?,
            }
            rtnl::link(h, BRIDGE)
                .await?
                .ok_or_else(|| Error::Request {
                    what: format!("create {BRIDGE}"),
                    detail: "created but not found".into(),
                    errno: libc::ENODEV,
                })?
                .index
        }
    };
    rtnl::set_link(h, BRIDGE, LinkUnspec::new_with_index(index).up().build()).await?;
    if let Some(gw) = range.gateway() {
        rtnl::add_address(h, index, gw, range.prefix()).await?;
    }
    if let Err(e) = rtnl::sysctl("net/ipv4/ip_forward", "1") {
        tracing::warn!(error = %e, "cannot enable net.ipv4.ip_forward; pod traffic will not be forwarded");
    }
    Ok(index)
}

/// Make `port` a port of the bridge, up, with hairpin mode on (a pod reaching itself
/// through a Service address gets its own packets back, as the CNI bridge plugin's
/// `hairpinMode: true` that k3s sets).
pub async fn add_port(h: &Handle, bridge: u32, port: u32) -> Result<(), Error> {
    rtnl::set_link(
        h,
        "pod veth",
        LinkUnspec::new_with_index(port)
            .controller(bridge)
            .up()
            .build(),
    )
    .await?;
    let msg: LinkMessage = LinkBridgePort::new(port)
        .append_info_data(InfoBridgePort::HairpinMode(true))
        .build();
    h.link()
        .set_port(msg)
        .execute()
        .await
        .map_err(|e| Error::Request {
            what: "hairpin mode on the pod's bridge port".into(),
            detail: e.to_string(),
            errno: 0,
        })
}
