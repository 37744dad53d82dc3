//! The pod network end to end (issue 15 item 5, issue 16 item 1): a real `rampart server`
//! and three real agents, each node in its own network namespace. Nodes 1 and 2 share one
//! link (a bridge in a "lan" namespace) so they reach each other's pods by host-gw routes;
//! node 3 sits behind that namespace acting as a router, on another subnet, so only VXLAN
//! reaches it. Pods get addresses from their node's podCIDR, talk to each other on one node
//! and across nodes (busybox `ping` inside pods, CRI log read from disk), the node reaches
//! its pods (TCP from inside the node's namespace), a restarted agent keeps pod addresses
//! and routes and removes a stale route it owns, a deleted pod's address and veth go, and a
//! deleted Node's route, neighbour and FDB entries go within seconds.
//!
//! Everything — namespaces, links, addresses, routes — is set up and read back over netlink
//! by the test itself: no `ip`, `iptables` or `nft` binary is needed or called. Traffic goes
//! only to addresses inside the namespaces this test creates. Root only (skipped with a
//! reason otherwise; `RAMPART_REQUIRE_PRIVILEGED=1` fails instead).
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)

mod harness;
mod kubelet_support;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{eventually, rampart_ok, Server};
use kubelet_support::*;
use rampart::kubelet::network::rtnl::{self, RTPROT_RAMPART};
use rampart::kubelet::network::{bridge, veth, vxlan, Ipv4Net};
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};
use serde_json::Value;

const LAN: &str = "10.214.1";
const FAR: &str = "10.214.2";

/// A named network namespace held by a bind mount on a file in the test's directory.
struct Ns {
    path: PathBuf,
}

impl Ns {
    fn new(dir: &Path, name: &str) -> Ns {
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
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path.clone();
        std::thread::spawn(move || {
            let f2 = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&f2, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    /// Run netlink requests inside this namespace.
    fn netlink<T, F, Fut>(&self, f: F) -> T
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

fn block_on_netlink<T, F, Fut>(f: F) -> T
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
fn host_netlink<T, F, Fut>(f: F) -> T
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
async fn veth_into(h: &Handle, name: &str, peer: &str, peer_ns: &Path) -> u32 {
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

async fn up_with(h: &Handle, name: &str, addr: &str, gateway: Option<&str>) {
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

/// The test's network: host ↔ lan (router + bridge) ↔ nodes 1, 2 (one L2 segment) and
/// node 3 (its own subnet behind the router).
struct Topology {
    _dir: tempfile::TempDir,
    host_link: String,
    lan: Ns,
    nodes: Vec<Ns>,
}

impl Topology {
    fn create() -> Topology {
        let dir = tempfile::tempdir().unwrap();
        let tag = std::process::id() % 100_000;
        let lan = Ns::new(dir.path(), "lan");
        let nodes: Vec<Ns> = (1..=3)
            .map(|k| Ns::new(dir.path(), &format!("node{k}")))
            .collect();
        let host_link = format!("rpn{tag}");
        {
            let (hl, lan_path) = (host_link.clone(), lan.path.clone());
            host_netlink(move |h| async move {
                veth_into(&h, &hl, "up0", &lan_path).await;
                up_with(&h, &hl, "10.214.0.1/24", None).await;
                let l = rtnl::link(&h, &hl).await.unwrap().unwrap();
                rtnl::replace_route(
                    &h,
                    "10.214.0.0/16".parse().unwrap(),
                    Some("10.214.0.2".parse().unwrap()),
                    Some(l.index),
                    false,
                    libc::RTPROT_STATIC,
                )
                .await
                .unwrap();
            });
        }
        let paths: Vec<PathBuf> = nodes.iter().map(|n| n.path.clone()).collect();
        lan.netlink(move |h| async move {
            up_with(&h, "up0", "10.214.0.2/24", Some("10.214.0.1")).await;
            rtnl::add_link(&h, "br0", LinkBridge::new("br0").build())
                .await
                .unwrap();
            up_with(&h, "br0", &format!("{LAN}.1/24"), None).await;
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
            up_with(&h, "n3", &format!("{FAR}.1/24"), None).await;
            rtnl::sysctl("net/ipv4/ip_forward", "1").unwrap();
        });
        for (k, n) in nodes.iter().enumerate() {
            let (addr, gw) = if k < 2 {
                (format!("{LAN}.{}/24", 11 + k), format!("{LAN}.1"))
            } else {
                (format!("{FAR}.13/24"), format!("{FAR}.1"))
            };
            n.netlink(move |h| async move { up_with(&h, "eth0", &addr, Some(&gw)).await });
        }
        Topology {
            _dir: dir,
            host_link,
            lan,
            nodes,
        }
    }

    fn node_ip(k: usize) -> String {
        match k {
            1 => format!("{LAN}.11"),
            2 => format!("{LAN}.12"),
            _ => format!("{FAR}.13"),
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
        let _ = &self.lan;
    }
}

struct Agent {
    child: Child,
    args: Vec<String>,
    ns: PathBuf,
}

impl Agent {
    fn spawn(ns: &Path, args: Vec<String>) -> Agent {
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

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.kill9();
        *self = Agent::spawn(&self.ns.clone(), self.args.clone());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn node_json(s: &Server, name: &str) -> Option<Value> {
    let o = s.kubectl(&["get", "node", name, "-o", "json"]);
    o.status
        .success()
        .then(|| serde_json::from_slice(&o.stdout).ok())
        .flatten()
}

fn pod_yaml(name: &str, node: &str, script: &str, policy: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  nodeName: {node}
  restartPolicy: {policy}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:test
    imagePullPolicy: Never
    command: ["sh", "-c", {script:?}]
{extra}"#
    )
}

fn wait_pod(s: &Server, name: &str, secs: u64, what: &str, f: impl Fn(&Value) -> bool) -> Value {
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

fn running_ip(s: &Server, name: &str) -> (Ipv4Addr, Value) {
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
fn log_text(logs: &Path, pod: &Value) -> String {
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

/// A pod on `node` that pings each target once; returns which answered.
fn ping_from(
    s: &Server,
    logs: &Path,
    name: &str,
    node: &str,
    targets: &[Ipv4Addr],
) -> Vec<(Ipv4Addr, bool)> {
    let script: String = targets
        .iter()
        .map(|t| {
            format!(
                "if busybox timeout 5 busybox ping -c1 -W2 {t} >/dev/null 2>&1; then echo ok {t}; else echo fail {t}; fi; "
            )
        })
        .collect();
    s.ok_in(
        &["apply", "-f", "-"],
        &pod_yaml(name, node, &script, "Never", ""),
    );
    let p = wait_pod(s, name, 60, "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    let text = log_text(logs, &p);
    targets
        .iter()
        .map(|t| (*t, text.lines().any(|l| l == format!("ok {t}"))))
        .collect()
}

fn tcp_from(ns: &Ns, ip: Ipv4Addr, port: u16) -> bool {
    ns.run(move || {
        TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(3)).is_ok()
    })
}

fn routes_of(ns: &Ns) -> Vec<rtnl::Route> {
    ns.netlink(|h| async move { rtnl::routes(&h).await.unwrap() })
}

fn fdb_of(ns: &Ns) -> Vec<(Vec<u8>, Option<Ipv4Addr>)> {
    ns.netlink(|h| async move {
        match rtnl::link(&h, vxlan::DEVICE).await.unwrap() {
            Some(l) => vxlan::fdb(&h, l.index).await.unwrap(),
            None => Vec::new(),
        }
    })
}

fn neighbours_of(ns: &Ns) -> Vec<(Ipv4Addr, Vec<u8>)> {
    ns.netlink(|h| async move {
        match rtnl::link(&h, vxlan::DEVICE).await.unwrap() {
            Some(l) => vxlan::neighbours(&h, l.index).await.unwrap(),
            None => Vec::new(),
        }
    })
}

fn link_exists(ns: &Ns, name: &str) -> bool {
    let name = name.to_string();
    ns.netlink(move |h| async move { rtnl::link(&h, &name).await.unwrap().is_some() })
}

#[test]
fn pods_get_addresses_and_reach_each_other_on_and_across_nodes() {
    require_privileged!();
    let topo = Topology::create();
    let s = Server::start_with(&["--bind-address", "0.0.0.0", "--tls-san", "10.214.0.1"]);
    let dd = s.data_dir().to_str().unwrap().to_string();
    let token = rampart_ok(&["token", "create", "--data-dir", &dd, "--ttl", "10m"])
        .trim()
        .to_string();
    let cgroup_root = format!("rampart-test-{}", std::process::id());
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let _cleanups: Vec<Cleanup> = dirs
        .iter()
        .map(|d| Cleanup {
            cgroup_root: cgroup_root.clone(),
            data_dir: d.path().to_path_buf(),
        })
        .collect();
    let image = docker_archive("busybox:test", &[busybox_layer()]);
    let mut agents = Vec::new();
    for k in 1..=3 {
        let d = dirs[k - 1].path();
        std::fs::create_dir_all(d.join("images")).unwrap();
        std::fs::write(d.join("images/busybox.tar"), &image).unwrap();
        let args: Vec<String> = [
            "agent",
            "--log-format",
            "json",
            "--server",
            &format!("https://10.214.0.1:{}", s.port),
            "--token",
            &token,
            "--data-dir",
            d.to_str().unwrap(),
            "--node-name",
            &format!("node-{k}"),
            "--node-ip",
            &Topology::node_ip(k),
            "--pod-log-dir",
            d.join("logs").to_str().unwrap(),
            "--kubelet-cgroup-root",
            &cgroup_root,
            // Upstream's default eviction thresholds would evict these pods on a build
            // machine with a fuller disk; this test is not about eviction.
            "--eviction-hard",
            "memory.available<1Mi,nodefs.available<1%,imagefs.available<1%,nodefs.inodesFree<1%",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        agents.push(Agent::spawn(&topo.nodes[k - 1].path, args));
    }
    let mut cidrs: Vec<Ipv4Net> = Vec::new();
    for k in 1..=3 {
        let name = format!("node-{k}");
        let mut cidr = None;
        assert!(
            eventually(Duration::from_secs(60), || {
                cidr = node_json(&s, &name)
                    .and_then(|n| n["spec"]["podCIDR"].as_str().and_then(|c| c.parse().ok()));
                cidr.is_some()
            }),
            "{name} never got a podCIDR"
        );
        cidrs.push(cidr.unwrap());
    }
    let logs = |k: usize| dirs[k - 1].path().join("logs");

    // Servers on every node and several pods started at once on node 1.
    let serve = "busybox httpd -f -p 8080 -h /tmp";
    for (name, node) in [("srv-1a", 1), ("srv-1b", 1), ("srv-2", 2), ("srv-3", 3)] {
        s.ok_in(
            &["apply", "-f", "-"],
            &pod_yaml(name, &format!("node-{node}"), serve, "Always", ""),
        );
    }
    let many: String = (0..6)
        .map(|i| pod_yaml(&format!("many-{i}"), "node-1", "sleep 3600", "Always", ""))
        .collect::<Vec<_>>()
        .join("---\n");
    s.ok_in(&["apply", "-f", "-"], &many);
    let (ip1a, p1a) = running_ip(&s, "srv-1a");
    let (ip1b, p1b) = running_ip(&s, "srv-1b");
    let (ip2, _) = running_ip(&s, "srv-2");
    let (ip3, _) = running_ip(&s, "srv-3");
    assert!(
        cidrs[0].contains(ip1a) && cidrs[0].contains(ip1b),
        "{ip1a} {ip1b} not in {}",
        cidrs[0]
    );
    assert!(cidrs[1].contains(ip2), "{ip2} not in {}", cidrs[1]);
    assert!(cidrs[2].contains(ip3), "{ip3} not in {}", cidrs[2]);
    let mut node1_ips = vec![ip1a, ip1b];
    for i in 0..6 {
        let (ip, _) = running_ip(&s, &format!("many-{i}"));
        assert!(cidrs[0].contains(ip));
        node1_ips.push(ip);
    }
    let mut unique = node1_ips.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        node1_ips.len(),
        "an address was handed out twice: {node1_ips:?}"
    );
    assert!(
        !node1_ips.contains(&cidrs[0].gateway().unwrap()),
        "a pod got the gateway address"
    );
    assert_eq!(p1a["status"]["hostIP"], Topology::node_ip(1));

    // Node 1's kernel state, read back over netlink: the bridge with the gateway, a host-gw
    // route to node 2's pods, a VXLAN route + neighbour + FDB entry for node 3.
    let n1 = &topo.nodes[0];
    assert!(
        eventually(Duration::from_secs(20), || {
            let r = routes_of(n1);
            r.iter().any(|r| {
                r.dst == cidrs[1]
                    && r.protocol == RTPROT_RAMPART
                    && r.gateway == Some(Topology::node_ip(2).parse().unwrap())
            }) && r.iter().any(|r| {
                r.dst == cidrs[2]
                    && r.protocol == RTPROT_RAMPART
                    && r.gateway == Some(vxlan::vtep_ip(cidrs[2]))
            })
        }),
        "node-1 routes: {:?}",
        routes_of(n1)
    );
    let node3_ip: Ipv4Addr = Topology::node_ip(3).parse().unwrap();
    assert!(
        fdb_of(n1).iter().any(|(mac, dst)| *dst == Some(node3_ip)
            && mac[..] == vxlan::vtep_mac(vxlan::vtep_ip(cidrs[2]))[..]),
        "{:?}",
        fdb_of(n1)
    );
    assert!(neighbours_of(n1)
        .iter()
        .any(|(ip, _)| *ip == vxlan::vtep_ip(cidrs[2])));
    let gw = cidrs[0].gateway().unwrap();
    assert!(n1.netlink(move |h| async move {
        let br = rtnl::link(&h, bridge::BRIDGE).await.unwrap().unwrap();
        rtnl::addresses(&h, Some(br.index))
            .await
            .unwrap()
            .iter()
            .any(|(_, ip, _)| *ip == gw)
    }));
    assert!(link_exists(
        n1,
        &veth::host_name(p1a["metadata"]["uid"].as_str().unwrap())
    ));
    // Node 3 reaches node 1 by VXLAN too (its route points into rampart.vxlan).
    let n3 = &topo.nodes[2];
    assert!(eventually(Duration::from_secs(20), || routes_of(n3)
        .iter()
        .any(
            |r| r.dst == cidrs[0] && r.gateway == Some(vxlan::vtep_ip(cidrs[0]))
        )));

    // Pod to pod: same node, host-gw to node 2, VXLAN to node 3, and back from node 3.
    let got = ping_from(&s, &logs(1), "ping-from-1", "node-1", &[ip1b, ip2, ip3]);
    assert!(got.iter().all(|(_, ok)| *ok), "from node-1: {got:?}");
    let got = ping_from(&s, &logs(3), "ping-from-3", "node-3", &[ip1a, ip2]);
    assert!(got.iter().all(|(_, ok)| *ok), "from node-3: {got:?}");

    // Host to pod: the node reaches its own pods and, through the routes, the others'.
    assert!(
        tcp_from(n1, ip1a, 8080),
        "node-1 cannot reach its pod {ip1a}"
    );
    assert!(
        tcp_from(n1, ip2, 8080),
        "node-1 cannot reach node-2's pod {ip2}"
    );
    assert!(
        tcp_from(n1, ip3, 8080),
        "node-1 cannot reach node-3's pod {ip3} over VXLAN"
    );

    // A deleted pod's veth goes and its address is given back.
    let uid1b = p1b["metadata"]["uid"].as_str().unwrap().to_string();
    s.ok(&["delete", "pod", "srv-1b", "--wait=true", "--timeout=60s"]);
    assert!(eventually(Duration::from_secs(20), || !link_exists(
        n1,
        &veth::host_name(&uid1b)
    )));
    let ipam_dir = dirs[0].path().join("network/ipam");
    let owners = || -> Vec<String> {
        std::fs::read_dir(&ipam_dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().parse::<Ipv4Addr>().is_ok())
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(10), || !owners().contains(&uid1b)),
        "{:?}",
        owners()
    );

    // Agent restart (kill -9): pods keep their addresses and stay reachable, routes stay,
    // a stale route of ours is removed and a route of someone else's is left alone.
    let stale: Ipv4Net = "10.42.250.0/24".parse().unwrap();
    let foreign: Ipv4Net = "10.99.0.0/24".parse().unwrap();
    agents[0].kill9();
    n1.netlink(move |h| async move {
        let gw = Some(format!("{LAN}.12").parse().unwrap());
        rtnl::replace_route(&h, stale, gw, None, false, RTPROT_RAMPART)
            .await
            .unwrap();
        rtnl::replace_route(&h, foreign, gw, None, false, libc::RTPROT_STATIC)
            .await
            .unwrap();
    });
    agents[0].restart();
    assert!(
        eventually(Duration::from_secs(30), || !routes_of(n1)
            .iter()
            .any(|r| r.dst == stale)),
        "the stale route survived the restart: {:?}",
        routes_of(n1)
    );
    let r = routes_of(n1);
    assert!(
        r.iter().any(|r| r.dst == foreign),
        "a foreign route was removed: {r:?}"
    );
    assert!(
        r.iter().any(|r| r.dst == cidrs[1]) && r.iter().any(|r| r.dst == cidrs[2]),
        "{r:?}"
    );
    let (again, _) = running_ip(&s, "srv-1a");
    assert_eq!(
        again, ip1a,
        "the pod's address changed over an agent restart"
    );
    assert!(tcp_from(n1, ip1a, 8080));
    s.ok_in(
        &["apply", "-f", "-"],
        &pod_yaml("after-restart", "node-1", "sleep 3600", "Always", ""),
    );
    let (fresh, _) = running_ip(&s, "after-restart");
    assert!(
        !node1_ips.iter().any(|ip| *ip == fresh && *ip != ip1b),
        "{fresh} is already in use: {node1_ips:?}"
    );

    // hostNetwork pods stay in the node's namespace and report the node IP.
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: hostnet\n  labels:\n    pod-security.kubernetes.io/enforce: privileged\n",
    );
    let hn = pod_yaml(
        "hostnet",
        "node-2",
        "sleep 3600",
        "Always",
        "  hostNetwork: true\n",
    )
    .replace("namespace: default", "namespace: hostnet");
    s.ok_in(&["apply", "-f", "-"], &hn);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        last = s.json(&["get", "pod", "-n", "hostnet", "hostnet"]);
        if last["status"]["phase"] == "Running" {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        last["status"]["podIP"],
        Topology::node_ip(2),
        "{:#}",
        last["status"]
    );

    // A Node that leaves: its route, neighbour and FDB entries are gone within seconds.
    agents[2].kill9();
    s.ok(&["delete", "node", "node-3"]);
    let vtep3 = vxlan::vtep_ip(cidrs[2]);
    assert!(
        eventually(Duration::from_secs(15), || {
            !routes_of(n1).iter().any(|r| r.dst == cidrs[2])
                && !fdb_of(n1).iter().any(|(_, d)| *d == Some(node3_ip))
                && !neighbours_of(n1).iter().any(|(ip, _)| *ip == vtep3)
        }),
        "node-3's entries stayed on node-1: routes {:?} fdb {:?}",
        routes_of(n1),
        fdb_of(n1)
    );
    assert!(
        routes_of(n1).iter().any(|r| r.dst == cidrs[1]),
        "node-2's route went too"
    );
    drop(agents);
}

/// `--service-cidr` on the server is the ClusterIP range: the `kubernetes` Service takes its
/// first address, new Services get addresses inside it, and an address outside is refused
/// with upstream's message naming the range. No root needed.
#[test]
fn service_cidr_flag_sets_the_cluster_ip_range() {
    let s = Server::start_with(&[
        "--service-cidr",
        "10.96.0.0/16",
        "--cluster-dns",
        "10.96.0.10",
    ]);
    let k = s.json(&["get", "service", "kubernetes", "-n", "default"]);
    assert_eq!(k["spec"]["clusterIP"], "10.96.0.1", "{k:#}");
    s.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let web = s.json(&["get", "service", "web"]);
    let ip: Ipv4Addr = web["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
    let range: Ipv4Net = "10.96.0.0/16".parse().unwrap();
    assert!(range.contains(ip), "{ip} is outside --service-cidr");
    let out = s.fails(&[
        "create",
        "service",
        "clusterip",
        "off",
        "--tcp=80:8080",
        "--clusterip=10.43.0.50",
    ]);
    assert!(
        out.contains("The range of valid IPs is 10.96.0.0/16"),
        "{out}"
    );
    // A DNS address outside the range is refused at start, naming the flag.
    let o = harness::rampart(&[
        "server",
        "--data-dir",
        s.data_dir().join("other").to_str().unwrap(),
        "--service-cidr",
        "10.96.0.0/16",
        "--cluster-dns",
        "10.43.0.10",
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--cluster-dns"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
