//! Sockets inside a pod's network namespace, opened from the agent without forking.
//!
//! The pod's network namespace is owned by its shim (`/proc/<shim pid>/ns/net`). Probes,
//! port-forward and hooks must reach the pod's own ports even when the pod has no routable
//! address (before or without the pod network), as upstream's kubelet does through the CRI's
//! netns. A socket belongs to the namespace it was *created* in, so a short-lived OS thread
//! enters the namespace (`setns` changes only the calling thread), creates and connects the
//! socket, and hands it back; the thread then exits, so no tokio worker ever changes namespace.
//!
//! Invariant: `setns` is only ever called on a thread this module spawned and discards.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

/// Where a pod's network namespace lives: the shim's PID (`/proc/<pid>/ns/net`) or a path.
#[derive(Debug, Clone)]
pub enum NetNs {
    Pid(i32),
    Path(PathBuf),
}

impl NetNs {
    fn path(&self) -> PathBuf {
        match self {
            NetNs::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            NetNs::Path(p) => p.clone(),
        }
    }
}

/// Runs `f` on a fresh OS thread that has entered `ns`, and returns what it made. Sockets
/// created by `f` stay in `ns` after the thread is gone.
pub async fn in_netns<T, F>(ns: &NetNs, f: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    let path = ns.path();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            let entered = File::open(&path)
                .and_then(|f| setns(&f, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from));
            let _ = tx.send(entered.and_then(|()| f()));
        })?;
    rx.await
        .map_err(|_| std::io::Error::other("netns thread ended without an answer"))?
}

/// Connects to `addr` (usually `127.0.0.1:<port>` or the pod IP) from inside `ns`.
pub async fn dial_tcp(
    ns: &NetNs,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let s = in_netns(ns, move || {
        let s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
    .await?;
    tokio::net::TcpStream::from_std(s)
}

/// Binds a UDP socket inside `ns`.
pub async fn bind_udp(ns: &NetNs, local: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let s = in_netns(ns, move || {
        let s = std::net::UdpSocket::bind(local)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
    .await?;
    tokio::net::UdpSocket::from_std(s)
}
