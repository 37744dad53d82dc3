//! One pod's link: a veth pair whose host end (`veth<hash of the pod UID>`) is a port of the
//! node bridge and whose other end is created directly inside the pod's network namespace
//! (the shim's, `IFLA_NET_NS_PID`) as `eth0`, then given the pod's address, brought up and a
//! default route via the bridge's gateway address — what the CNI bridge plugin does for k3s.
//!
//! The inside of the pod's namespace is configured from a discarded OS thread that entered
//! it (`runtime::netns::in_netns`) with its own netlink socket and a one-thread runtime: no
//! fork from the agent, no tokio worker ever changes namespace.
//!
//! Invariants: the host end's name is a function of the pod UID, so a restarted agent finds
//! it again (a pod whose host veth exists is attached); a half-made pair is deleted before
//! the error is returned. Deleting the host end deletes the pod's end with it.

use std::net::Ipv4Addr;

use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth};
use sha2::{Digest, Sha256};

use super::rtnl::{self, Error};
use crate::kubelet::runtime::netns::{in_netns, NetNs};

/// The host end's name for a pod (15 characters, the kernel's limit).
pub fn host_name(uid: &str) -> String {
    let h = Sha256::digest(uid.as_bytes());
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!("veth{}", &hex[..11])
}

/// What the pod's `eth0` gets.
#[derive(Debug, Clone, Copy)]
pub struct PodAddr {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

/// Create and wire the pod's veth pair (no-op when its host end exists already).
pub async fn attach(
    h: &Handle,
    bridge: u32,
    uid: &str,
    shim_pid: i32,
    addr: PodAddr,
) -> Result<(), Error> {
    let name = host_name(uid);
    if let Some(l) = rtnl::link(h, &name).await? {
        if l.controller != Some(bridge) {
            super::bridge::add_port(h, bridge, l.index).await?;
        }
        return Ok(());
    }
    let pid = u32::try_from(shim_pid).map_err(|_| Error::Request {
        what: "pod network namespace".into(),
        detail: format!("bad shim pid {shim_pid}"),
        errno: libc::ESRCH,
    })?;
    let peer = LinkUnspec::new_with_name("eth0")
        .mtu(addr.mtu)
        .setns_by_pid(pid)
        .build();
    let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(name.clone())
        .mtu(addr.mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    rtnl::add_link(h, &format!("veth pair {name}"), msg).await?;
    let r = async {
        let l = rtnl::link(h, &name).await?.ok_or_else(|| Error::Request {
            what: format!("veth {name}"),
            detail: "created but not found".into(),
            errno: libc::ENODEV,
        })?;
        super::bridge::add_port(h, bridge, l.index).await?;
        configure_inside(shim_pid, addr).await
    }
    .await;
    if r.is_err() {
        let _ = detach(h, uid).await;
    }
    r
}

/// Address, link up and default route inside the pod's namespace.
async fn configure_inside(shim_pid: i32, addr: PodAddr) -> Result<(), Error> {
    let inside = in_netns(&NetNs::Pid(shim_pid), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let h = rtnl::connect()?;
            let eth0 = rtnl::link(&h, "eth0")
                .await?
                .ok_or_else(|| Error::Request {
                    what: "eth0 in the pod".into(),
                    detail: "missing".into(),
                    errno: libc::ENODEV,
                })?;
            rtnl::add_address(&h, eth0.index, addr.ip, addr.prefix).await?;
            rtnl::set_link(
                &h,
                "eth0",
                LinkUnspec::new_with_index(eth0.index).up().build(),
            )
            .await?;
            let default = super::cidr::Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).map_err(|e| {
                Error::Request {
                    what: "default route".into(),
                    detail: e.to_string(),
                    errno: libc::EINVAL,
                }
            })?;
            rtnl::replace_route(
                &h,
                default,
                Some(addr.gateway),
                Some(eth0.index),
                false,
                libc::RTPROT_BOOT,
            )
            .await
        })
        .map_err(|e| std::io::Error::other(e.to_string()))
    })
    .await;
    inside.map_err(|e| Error::Request {
        what: "configure eth0 inside the pod".into(),
        detail: e.to_string(),
        errno: e.raw_os_error().unwrap_or(0),
    })
}

/// Delete the pod's veth pair (absent is fine).
pub async fn detach(h: &Handle, uid: &str) -> Result<(), Error> {
    let name = host_name(uid);
    match rtnl::link(h, &name).await? {
        Some(l) => match rtnl::del_link(h, l.index).await {
            Err(e) if e.missing() => Ok(()),
            r => r,
        },
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_names_fit_the_kernel_limit_and_differ() {
        let a = super::host_name("2b5c8e0a-0000-4000-8000-000000000001");
        let b = super::host_name("2b5c8e0a-0000-4000-8000-000000000002");
        assert_eq!(a.len(), 15);
        assert_ne!(a, b);
        assert!(a.starts_with("veth"));
    }
}
