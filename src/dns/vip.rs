//! The node-local cluster DNS address: a `dummy` interface (`rampart-dns`) holding the cluster
//! DNS IP as a /32 (or /128), created over rtnetlink (no `ip` binary), as NodeLocal
//! DNSCache's `nodelocaldns` interface. Pods reach it through their default route to the node.
//!
//! Kernels without the `dummy` driver (EOPNOTSUPP, e.g. some VM kernels) get the address on
//! `lo` instead: local delivery is the same, only the interface name differs.
//!
//! Invariant: idempotent — an existing interface and address are kept (a restarted agent
//! finds them in place), so the address never disappears while the agent restarts.

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::{LinkDummy, LinkUnspec};

pub const IFACE: &str = "rampart-dns";

/// EEXIST from the kernel.
fn exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EEXIST)
}

/// Create `iface` (dummy) if missing, bring it up, and put `ip` on it.
pub async fn ensure(iface: &str, ip: IpAddr) -> Result<(), String> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let result = async {
        let find = || async {
            handle
                .link()
                .get()
                .match_name(iface.to_string())
                .execute()
                .try_next()
                .await
        };
        let link = match find().await {
            Ok(Some(l)) => l,
            _ => {
                match handle
                    .link()
                    .add(LinkDummy::new(iface).build())
                    .execute()
                    .await
                {
                    Ok(()) => {}
                    Err(e) if exists(&e) => {}
                    Err(e) if unsupported(&e) => {
                        tracing::warn!(
                            "this kernel has no dummy interfaces; putting the cluster DNS address on lo"
                        );
                        return add_address(&handle, "lo", ip).await;
                    }
                    Err(e) => return Err(format!("cannot create the dummy interface: {e}")),
                }
                find()
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| "the interface vanished after it was created".to_string())?
            }
        };
        let index = link.header.index;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| format!("cannot bring the interface up: {e}"))?;
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        match handle.address().add(index, ip, prefix).execute().await {
            Ok(()) => Ok(()),
            Err(e) if exists(&e) => Ok(()),
            Err(e) => Err(format!("cannot add {ip}: {e}")),
        }
    }
    .await;
    conn.abort();
    result
}

/// EOPNOTSUPP: no such link kind in this kernel.
fn unsupported(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EOPNOTSUPP)
}

/// Put `ip` on the existing interface `name` (kept if already there).
async fn add_address(handle: &rtnetlink::Handle, name: &str, ip: IpAddr) -> Result<(), String> {
    let link = handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .map_err(|e| format!("cannot find {name}: {e}"))?
        .ok_or_else(|| format!("no interface {name}"))?;
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    match handle
        .address()
        .add(link.header.index, ip, prefix)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if exists(&e) => Ok(()),
        Err(e) => Err(format!("cannot add {ip} to {name}: {e}")),
    }
}

/// Remove `iface` (uninstall); a missing interface is fine.
pub async fn remove(iface: &str) -> Result<(), String> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let result = async {
        let link = handle
            .link()
            .get()
            .match_name(iface.to_string())
            .execute()
            .try_next()
            .await;
        match link {
            Ok(Some(l)) => handle
                .link()
                .del(l.header.index)
                .execute()
                .await
                .map_err(|e| e.to_string()),
            _ => Ok(()),
        }
    }
    .await;
    conn.abort();
    result
}
