//! The few rtnetlink requests the pod network makes, typed for it: find links and their
//! addresses, create and configure the bridge, veth pairs and the VXLAN device, add
//! addresses, routes, neighbour and FDB entries, and list what exists. Everything goes over
//! a netlink socket (`NETLINK_ROUTE`); no `ip` binary is involved.
//!
//! A `Handle` belongs to the network namespace the socket was created in: `connect()` on a
//! thread that entered a pod's namespace (see `runtime::netns::in_netns`) configures that
//! namespace. `EEXIST`/`ENOENT` are reported as such so callers can be idempotent.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::Handle;

use super::cidr::Ipv4Net;

/// The route protocol number that marks routes Rampart created (`ip route` shows
/// `proto 82`), so cleanup never touches a route someone else made.
pub const RTPROT_RAMPART: u8 = 82;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("{what}: {detail}")]
    Request {
        what: String,
        detail: String,
        errno: i32,
    },
}

impl Error {
    pub fn errno(&self) -> i32 {
        match self {
            Error::Request { errno, .. } => *errno,
            Error::Socket(e) => e.raw_os_error().unwrap_or(0),
        }
    }
    pub fn exists(&self) -> bool {
        self.errno() == libc::EEXIST
    }
    pub fn missing(&self) -> bool {
        matches!(self.errno(), libc::ENOENT | libc::ENODEV | libc::ESRCH)
    }
}

fn req(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let what = what.into();
    move |e| {
        let errno = match &e {
            rtnetlink::Error::NetlinkError(m) => -m.raw_code(),
            _ => 0,
        };
        let detail = match &e {
            rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
            other => other.to_string(),
        };
        Error::Request {
            what,
            detail,
            errno,
        }
    }
}

/// A netlink connection in the calling thread's network namespace; its I/O task runs on
/// the current tokio runtime.
pub fn connect() -> Result<Handle, Error> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::Socket)?;
    tokio::spawn(conn);
    Ok(handle)
}

/// A link as we need it.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub mac: Vec<u8>,
    pub controller: Option<u32>,
}

fn link_of(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mtu: 0,
        mac: Vec::new(),
        controller: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(m) => l.mtu = *m,
            LinkAttribute::Address(a) => l.mac = a.clone(),
            LinkAttribute::Controller(c) => l.controller = Some(*c),
            _ => {}
        }
    }
    l
}

/// The link named `name`, if it exists.
pub async fn link(h: &Handle, name: &str) -> Result<Option<Link>, Error> {
    let mut s = h.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(m) => Ok(m.as_ref().map(link_of)),
        Err(e) => {
            let e = req(format!("get link {name}"))(e);
            if e.missing() {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

/// Every link of the namespace.
pub async fn links(h: &Handle) -> Result<Vec<Link>, Error> {
    let msgs: Vec<LinkMessage> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(req("list links"))?;
    Ok(msgs.iter().map(link_of).collect())
}

pub async fn add_link(h: &Handle, what: &str, msg: LinkMessage) -> Result<(), Error> {
    h.link()
        .add(msg)
        .execute()
        .await
        .map_err(req(format!("create {what}")))
}

pub async fn set_link(h: &Handle, what: &str, msg: LinkMessage) -> Result<(), Error> {
    h.link()
        .set(msg)
        .execute()
        .await
        .map_err(req(format!("configure {what}")))
}

pub async fn del_link(h: &Handle, index: u32) -> Result<(), Error> {
    h.link()
        .del(index)
        .execute()
        .await
        .map_err(req(format!("delete link {index}")))
}

/// IPv4 addresses (with prefix length) on link `index`, or on every link with `None`.
pub async fn addresses(h: &Handle, index: Option<u32>) -> Result<Vec<(u32, Ipv4Addr, u8)>, Error> {
    let mut get = h.address().get();
    if let Some(i) = index {
        get = get.set_link_index_filter(i);
    }
    let msgs: Vec<AddressMessage> = get
        .execute()
        .try_collect()
        .await
        .map_err(req("list addresses"))?;
    let mut out = Vec::new();
    for m in msgs {
        if m.header.family != AddressFamily::Inet {
            continue;
        }
        for a in &m.attributes {
            if let AddressAttribute::Address(IpAddr::V4(ip)) = a {
                out.push((m.header.index, *ip, m.header.prefix_len));
            }
        }
    }
    Ok(out)
}

/// Add `ip/prefix` to link `index` (already present is fine).
pub async fn add_address(h: &Handle, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<(), Error> {
    match h
        .address()
        .add(index, IpAddr::V4(ip), prefix)
        .execute()
        .await
        .map_err(req(format!("add address {ip}/{prefix}")))
    {
        Err(e) if e.exists() => Ok(()),
        r => r,
    }
}

/// An IPv4 route as we read it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub protocol: u8,
    pub table: u8,
}

fn route_of(m: &RouteMessage) -> Option<Route> {
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    Some(Route {
        dst: Ipv4Net::new(dst, m.header.destination_prefix_length).ok()?,
        gateway,
        oif,
        protocol: u8::from(m.header.protocol),
        table: m.header.table,
    })
}

/// The IPv4 routes of the main table.
pub async fn routes(h: &Handle) -> Result<Vec<Route>, Error> {
    let msg = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build();
    let msgs: Vec<RouteMessage> = h
        .route()
        .get(msg)
        .execute()
        .try_collect()
        .await
        .map_err(req("list routes"))?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.table == libc::RT_TABLE_MAIN)
        .filter_map(route_of)
        .collect())
}

/// Add (or replace) a route to `dst` via `gateway` (on-link when `onlink`) out of `oif`,
/// marked with our protocol number.
pub async fn replace_route(
    h: &Handle,
    dst: Ipv4Net,
    gateway: Option<Ipv4Addr>,
    oif: Option<u32>,
    onlink: bool,
    protocol: u8,
) -> Result<(), Error> {
    let mut b = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst.addr(), dst.prefix())
        .protocol(RouteProtocol::from(protocol));
    if let Some(gw) = gateway {
        b = b.gateway(gw);
    }
    if let Some(i) = oif {
        b = b.output_interface(i);
    }
    if onlink {
        b = b.onlink();
    }
    h.route()
        .add(b.build())
        .replace()
        .execute()
        .await
        .map_err(req(format!("route {dst}")))
}

/// Delete the route to `dst` with our protocol number (gone already is fine).
pub async fn del_route(h: &Handle, dst: Ipv4Net, protocol: u8) -> Result<(), Error> {
    let b = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst.addr(), dst.prefix())
        .protocol(RouteProtocol::from(protocol));
    match h
        .route()
        .del(b.build())
        .execute()
        .await
        .map_err(req(format!("delete route {dst}")))
    {
        Err(e) if e.missing() => Ok(()),
        r => r,
    }
}

/// Write a sysctl under `/proc/sys` of the calling thread's network namespace.
pub fn sysctl(path: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(format!("/proc/sys/{path}"), value)
}
