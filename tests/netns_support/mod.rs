//! Network namespaces for the multi-node suites (`pod_network.rs`, `cluster_network.rs`,
//! `netpol.rs`, `multinode_netns.rs`): namespaces held by bind mounts in the test's own
//! directory, veth links and addresses made over rtnetlink (no `ip` binary), agents started
//! inside a namespace (setns before exec), and the three-node topology of the pod network
//! tests. Everything is removed on drop; traffic never leaves the namespaces a test made.
#![allow(unsafe_code)] // test support: setns before exec in the agent's child (the block says why)
#![allow(dead_code)]

use std::future::Future;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rampart::kubelet::network::rtnl;
use serde_json::Value;

use crate::harness::Server;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};

/// A named network namespace held by a bind mount on a file in the test's directory.
pub struct Ns {
    pub path: PathBuf,
}

impl Ns {
    pub fn new(dir: &Path, name: &str) -> Ns {
        let path = dir.join(name);
        std::fs::File::create(&path).unwrap();
        let p = path.clone();
        std::thread::spawn(move || {
            // unshare(CLONE_NEWNET) changes only this thread; the mount keeps the namespace.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &p,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .unwrap();
        })
        .join()
        .unwrap();
        let ns = Ns { path };
        ns.netlink(|h| async move {
            let lo = rtnl::link(&h, "lo").await.unwrap().unwrap();
            rtnl::set_link(&h, "lo", LinkUnspec::new_with_index(lo.index).up().build())
                .await
                .unwrap();
        });
        ns
    }

    /// Run `f` on a thread inside this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().unwrap()
    }

    /// Start `f` on a thread inside this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = self.path.clone();
        std::thread::spawn(move || {
            let f2 = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&f2, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
    }

    /// Run netlink requests inside this namespace.
    pub fn netlink<T, F, Fut>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(Handle) -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        self.run(move || block_on_netlink(f))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn block_on_netlink<T, F, Fut>(f: F) -> T
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = T>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let h = rtnl::connect().unwrap();
        f(h).await
    })
}

/// Netlink in the test's own (host) namespace, on a fresh thread.
pub fn host_netlink<T, F, Fut>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    std::thread::spawn(move || block_on_netlink(f))
        .join()
        .unwrap()
}

/// A veth pair `name` (here) ↔ `peer` created directly inside the namespace at `peer_ns`.
pub async fn veth_into(h: &Handle, name: &str, peer: &str, peer_ns: &Path) -> u32 {
    let f = std::fs::File::open(peer_ns).unwrap();
    let peer_msg = LinkUnspec::new_with_name(peer)
        .setns_by_fd(f.as_raw_fd())
        .build();
    let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(name.to_string())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
        .build();
    rtnl::add_link(h, name, msg).await.unwrap();
    drop(f);
    let l = rtnl::link(h, name).await.unwrap().unwrap();
    rtnl::set_link(h, name, LinkUnspec::new_with_index(l.index).up().build())
        .await
        .unwrap();
    l.index
}

/// Give link `name` the address `addr` (CIDR form), bring it up, and route the default
/// through `gateway` when given.
pub async fn up_with(h: &Handle, name: &str, addr: &str, gateway: Option<&str>) {
    let l = rtnl::link(h, name).await.unwrap().unwrap();
    let (ip, len) = addr.split_once('/').unwrap();
    rtnl::add_address(h, l.index, ip.parse().unwrap(), len.parse().unwrap())
        .await
        .unwrap();
    rtnl::set_link(h, name, LinkUnspec::new_with_index(l.index).up().build())
        .await
        .unwrap();
    if let Some(gw) = gateway {
        rtnl::replace_route(
            h,
            "0.0.0.0/0".parse().unwrap(),
            Some(gw.parse().unwrap()),
            Some(l.index),
            false,
            libc::RTPROT_STATIC,
        )
        .await
        .unwrap();
    }
}

/// A veth from the host (`host_link`, `host_addr`) to `eth0` in a namespace (`ns_addr`,
/// default route via the host end); deleted on drop.
pub struct HostLink {
    name: String,
}

impl HostLink {
    pub fn new(host_link: &str, host_addr: &str, ns: &Ns, ns_addr: &str) -> HostLink {
        let (hl, np, ha) = (
            host_link.to_string(),
            ns.path.clone(),
            host_addr.to_string(),
        );
        host_netlink(move |h| async move {
            veth_into(&h, &hl, "eth0", &np).await;
            up_with(&h, &hl, &ha, None).await;
        });
        let gw = host_addr.split_once('/').unwrap().0.to_string();
        let na = ns_addr.to_string();
        ns.netlink(move |h| async move { up_with(&h, "eth0", &na, Some(&gw)).await });
        HostLink {
            name: host_link.to_string(),
        }
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        let hl = self.name.clone();
        host_netlink(move |h| async move {
            if let Ok(Some(l)) = rtnl::link(&h, &hl).await {
                let _ = rtnl::del_link(&h, l.index).await;
            }
        });
    }
}

/// A `rampart` process started inside a network namespace; killed on drop.
pub struct Agent {
    pub child: Child,
    args: Vec<String>,
    ns: PathBuf,
}

impl Agent {
    pub fn spawn(ns: &Path, args: Vec<String>) -> Agent {
        let f = std::fs::File::open(ns).unwrap();
        let fd = f.as_raw_fd();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rampart"));
        cmd.args(&args).stdout(Stdio::null()).stderr(
            if std::env::var_os("RAMPART_TEST_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            },
        );
        // SAFETY: runs in the forked child before exec; setns(2) is async-signal-safe and
        // `fd` stays open in the parent (and so in the child) until after spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn agent");
        drop(f);
        Agent {
            child,
            args,
            ns: ns.to_path_buf(),
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.kill9();
        *self = Agent::spawn(&self.ns.clone(), self.args.clone());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The three-node network: host ↔ lan (router + bridge) ↔ nodes 1, 2 (one L2 segment) and
/// node 3 (its own subnet behind the router, so only VXLAN reaches its pods).
pub struct Topology {
    _dir: tempfile::TempDir,
    host_link: String,
    /// The second octet of every address: `10.<net>.0.1` is the host's end (where the
    /// server listens), `10.<net>.1.0/24` the nodes 1 and 2 share (`.1` the lan's bridge),
    /// `10.<net>.2.0/24` node 3's subnet behind the router.
    pub net: u8,
    pub lan: Ns,
    pub nodes: Vec<Ns>,
}

impl Topology {
    /// `prefix` names the host's link (`<prefix><pid>`) and `net` picks the addresses, so
    /// suites running at once never share either.
    pub fn create(prefix: &str, net: u8) -> Topology {
        let host_ip = format!("10.{net}.0.1");
        let router = format!("10.{net}.0.2");
        let (lan_net, far_net) = (format!("10.{net}.1"), format!("10.{net}.2"));
        let dir = tempfile::tempdir().unwrap();
        let tag = std::process::id() % 100_000;
        let lan = Ns::new(dir.path(), "lan");
        let nodes: Vec<Ns> = (1..=3)
            .map(|k| Ns::new(dir.path(), &format!("node{k}")))
            .collect();
        let host_link = format!("{prefix}{tag}");
        {
            let (hl, lan_path) = (host_link.clone(), lan.path.clone());
            let (host_ip, router) = (host_ip.clone(), router.clone());
            host_netlink(move |h| async move {
                veth_into(&h, &hl, "up0", &lan_path).await;
                up_with(&h, &hl, &format!("{host_ip}/24"), None).await;
                let l = rtnl::link(&h, &hl).await.unwrap().unwrap();
                rtnl::replace_route(
                    &h,
                    format!("10.{net}.0.0/16").parse().unwrap(),
                    Some(router.parse().unwrap()),
                    Some(l.index),
                    false,
                    libc::RTPROT_STATIC,
                )
                .await
                .unwrap();
            });
        }
        let paths: Vec<PathBuf> = nodes.iter().map(|n| n.path.clone()).collect();
        let (lan2, far2) = (lan_net.clone(), far_net.clone());
        lan.netlink(move |h| async move {
            up_with(&h, "up0", &format!("{router}/24"), Some(&host_ip)).await;
            rtnl::add_link(&h, "br0", LinkBridge::new("br0").build())
                .await
                .unwrap();
            up_with(&h, "br0", &format!("{lan2}.1/24"), None).await;
            let br = rtnl::link(&h, "br0").await.unwrap().unwrap().index;
            for (k, p) in paths.iter().enumerate().take(2) {
                let idx = veth_into(&h, &format!("n{}", k + 1), "eth0", p).await;
                rtnl::set_link(
                    &h,
                    "port",
                    LinkUnspec::new_with_index(idx).controller(br).build(),
                )
                .await
                .unwrap();
            }
            veth_into(&h, "n3", "eth0", &paths[2]).await;
            up_with(&h, "n3", &format!("{far2}.1/24"), None).await;
            rtnl::sysctl("net/ipv4/ip_forward", "1").unwrap();
        });
        for (k, n) in nodes.iter().enumerate() {
            let (addr, gw) = if k < 2 {
                (format!("{lan_net}.{}/24", 11 + k), format!("{lan_net}.1"))
            } else {
                (format!("{far_net}.13/24"), format!("{far_net}.1"))
            };
            n.netlink(move |h| async move { up_with(&h, "eth0", &addr, Some(&gw)).await });
        }
        Topology {
            _dir: dir,
            host_link,
            net,
            lan,
            nodes,
        }
    }

    /// The host's address on the link to the lan namespace.
    pub fn host_ip(&self) -> String {
        format!("10.{}.0.1", self.net)
    }

    /// Node k's (1-based) address.
    pub fn node_ip(&self, k: usize) -> String {
        match k {
            1 => format!("10.{}.1.11", self.net),
            2 => format!("10.{}.1.12", self.net),
            _ => format!("10.{}.2.13", self.net),
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let hl = self.host_link.clone();
        host_netlink(move |h| async move {
            if let Ok(Some(l)) = rtnl::link(&h, &hl).await {
                let _ = rtnl::del_link(&h, l.index).await;
            }
        });
    }
}

/// Node `name` as JSON, if it exists.
pub fn node_json(s: &Server, name: &str) -> Option<Value> {
    let o = s.kubectl(&["get", "node", name, "-o", "json"]);
    o.status
        .success()
        .then(|| serde_json::from_slice(&o.stdout).ok())
        .flatten()
}

pub fn wait_pod(
    s: &Server,
    name: &str,
    secs: u64,
    what: &str,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let o = s.kubectl(&["get", "pod", name, "-o", "json"]);
        if o.status.success() {
            last = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
            if f(&last) {
                return last;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "pod {name}: {what} not reached in {secs}s; last: {:#}",
        last["status"]
    );
}

pub fn running_ip(s: &Server, name: &str) -> (Ipv4Addr, Value) {
    let p = wait_pod(s, name, 60, "Running with a podIP", |p| {
        p["status"]["phase"] == "Running"
            && p["status"]["podIP"]
                .as_str()
                .is_some_and(|ip| !ip.is_empty())
    });
    let ip: Ipv4Addr = p["status"]["podIP"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        p["status"]["podIPs"][0]["ip"],
        ip.to_string(),
        "{:#}",
        p["status"]
    );
    (ip, p)
}

/// The container's output, from its CRI log file.
pub fn log_text(logs: &Path, pod: &Value) -> String {
    let dir = logs.join(format!(
        "default_{}_{}",
        pod["metadata"]["name"].as_str().unwrap(),
        pod["metadata"]["uid"].as_str().unwrap()
    ));
    std::fs::read_to_string(dir.join("main/0.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .collect::<Vec<_>>()
        .join("\n")
}
