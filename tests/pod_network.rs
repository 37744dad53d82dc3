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

mod harness;
mod kubelet_support;
mod netns_support;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use harness::{eventually, rampart_ok, Server};
use kubelet_support::*;
use netns_support::{log_text, node_json, running_ip, wait_pod, Agent, Ns, Topology};
use rampart::kubelet::network::rtnl::{self, RTPROT_RAMPART};
use rampart::kubelet::network::{bridge, veth, vxlan, Ipv4Net};
use serde_json::Value;

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
    let topo = Topology::create("rpn", 214);
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
            &topo.node_ip(k),
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
    assert_eq!(p1a["status"]["hostIP"], topo.node_ip(1));

    // Node 1's kernel state, read back over netlink: the bridge with the gateway, a host-gw
    // route to node 2's pods, a VXLAN route + neighbour + FDB entry for node 3.
    let n1 = &topo.nodes[0];
    assert!(
        eventually(Duration::from_secs(20), || {
            let r = routes_of(n1);
            r.iter().any(|r| {
                r.dst == cidrs[1]
                    && r.protocol == RTPROT_RAMPART
                    && r.gateway == Some(topo.node_ip(2).parse().unwrap())
            }) && r.iter().any(|r| {
                r.dst == cidrs[2]
                    && r.protocol == RTPROT_RAMPART
                    && r.gateway == Some(vxlan::vtep_ip(cidrs[2]))
            })
        }),
        "node-1 routes: {:?}",
        routes_of(n1)
    );
    let node3_ip: Ipv4Addr = topo.node_ip(3).parse().unwrap();
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
        let gw = Some("10.214.1.12".parse().unwrap());
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
        topo.node_ip(2),
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
    // The server was started on `--https-port 0`: what service proxies read (the
    // EndpointSlice) and the Service's targetPort carry the port it really listens on, not
    // 0 (a pod's `kubernetes.default` would be refused).
    assert_eq!(k["spec"]["ports"][0]["targetPort"], s.port, "{k:#}");
    let slice = s.json(&["get", "endpointslice", "kubernetes", "-n", "default"]);
    assert_eq!(slice["ports"][0]["port"], s.port, "{slice:#}");
    assert_eq!(slice["ports"][0]["name"], "https", "{slice:#}");
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
