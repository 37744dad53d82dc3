//! The service proxy end to end: a real `rampart server` with its embedded agent and service
//! proxy runs inside a network namespace the test made (the test's thread unshares its
//! network namespace; the server it spawns inherits it), with `ip` and `nft` absent from its
//! PATH. Backends are plain listeners in a second namespace ("pods", 10.42.0.10–12 behind a
//! veth); an outside client lives in a third (192.168.77.2, reaching the node at
//! 192.168.77.1). Services and EndpointSlices are created through the API; traffic goes only
//! to addresses inside these namespaces.
//!
//! Checked: ClusterIP load-balancing over every backend, a "pod" reaching the apiserver
//! through the `kubernetes` Service (its endpoint is the node itself), NodePort from the other namespace,
//! an immediate ECONNREFUSED for a Service without endpoints, ClientIP session affinity,
//! externalTrafficPolicy Local, a LoadBalancer Service published by the built-in ServiceLB and
//! reached at its ingress IP from outside, the health check node port of Local load
//! balancers (200 with a local endpoint, 503 without, upstream's JSON), recovery after someone deletes the table, and a one-Service
//! change that leaves other Services' rules untouched. The test reads rule handles back with
//! Debian's `nft -j` (read-only; Rampart itself never runs it). Root only: skipped with the
//! reason otherwise, failed instead when `RAMPART_REQUIRE_PRIVILEGED=1`.
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)

mod harness;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{eventually, Raw, Server};

const IP: &str = "/usr/sbin/ip";
const NFT: &str = "/usr/sbin/nft";
const NODE: &str = "proxy-node";

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces and nftables)".into());
    }
    for bin in [IP, NFT] {
        if !std::path::Path::new(bin).exists() {
            return Some(format!(
                "needs {bin} to build the test network / read rules back"
            ));
        }
    }
    None
}

fn ip(args: &[&str]) {
    let st = Command::new(IP).args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?}");
}

/// Named namespaces this test made; deleted on drop.
struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new(IP).args(["netns", "del", n]).status();
        }
    }
}

/// Run `f` on a thread that entered the named namespace.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("thread in netns")
}

/// Listeners in the pods' namespace that answer every connection with their own address.
fn start_backends(ns: &str, ips: &[&'static str]) {
    let path = format!("/var/run/netns/{ns}");
    for ip in ips {
        let path = path.clone();
        let ip = *ip;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let l = TcpListener::bind((ip, 8080)).expect("bind backend");
            let _ = tx.send(());
            for mut c in l.incoming().map_while(Result::ok) {
                let _ = c.write_all(ip.as_bytes());
            }
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("backend listening");
    }
}

/// Connect and read the backend's answer.
fn ask(addr: &str) -> Result<String, std::io::Error> {
    let a: SocketAddr = addr.parse().expect("addr");
    let mut s = TcpStream::connect_timeout(&a, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// `GET /healthz` over TLS at `addr`, the server verified against the cluster CA under the
/// in-cluster name `kubernetes.default.svc`, as `identity` (cert, key PEM).
fn healthz(addr: &str, ca_pem: &str, identity: (String, String)) -> std::io::Result<String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let bad = |e: String| std::io::Error::other(e);
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    let chain: Vec<_> = CertificateDer::pem_slice_iter(identity.0.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let key =
        PrivateKeyDer::from_pem_slice(identity.1.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .map_err(|e| bad(e.to_string()))?;
    let name = ServerName::try_from("kubernetes.default.svc").map_err(|e| bad(e.to_string()))?;
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(|e| bad(e.to_string()))?;
    let a: SocketAddr = addr
        .parse()
        .map_err(|_| bad(format!("bad address {addr}")))?;
    let mut sock = TcpStream::connect_timeout(&a, Duration::from_secs(2))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(
        b"GET /healthz HTTP/1.1\r\nHost: kubernetes.default.svc\r\nConnection: close\r\n\r\n",
    )?;
    let mut out = Vec::new();
    // A close without close_notify still leaves the answer read.
    let _ = tls.read_to_end(&mut out);
    Ok(String::from_utf8_lossy(&out).to_string())
}

fn ask_from(ns: &str, addr: &'static str) -> Result<String, std::io::Error> {
    in_ns(ns, move || ask(addr))
}

fn create(s: &Server, path: &str, body: serde_json::Value) {
    let b = body.to_string();
    let r = s.raw(Raw::send("POST", path, "application/json", b.as_bytes()));
    assert!(
        r.status == 201,
        "POST {path}: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
}

fn service(name: &str, ip: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut v = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    });
    if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
        for (k, x) in extra {
            spec.insert(k.clone(), x.clone());
        }
    }
    v
}

fn slice(svc: &str, name: &str, eps: &[(&str, &str)]) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "labels": {
            "kubernetes.io/service-name": svc,
            "endpointslice.kubernetes.io/managed-by": "proxy-test"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps.iter().map(|(ip, node)| serde_json::json!({
            "addresses": [ip], "nodeName": node, "conditions": {"ready": true}
        })).collect::<Vec<_>>()
    })
}

/// The Service `default/name` (raw GET: kubectl is not on this test's PATH).
fn get_service(s: &Server, name: &str) -> serde_json::Value {
    let path = format!("/api/v1/namespaces/default/services/{name}");
    s.raw(Raw::get(&path)).json()
}

/// Rule handles per chain whose name contains `needle`, read back with `nft -j -a`.
fn handles(needle: &str) -> BTreeSet<(String, u64)> {
    let out = Command::new(NFT)
        .args(["-j", "-a", "list", "table", "ip", "rampart-proxy"])
        .output()
        .expect("nft");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            let r = &o["rule"];
            let chain = r["chain"].as_str()?;
            chain
                .contains(needle)
                .then(|| (chain.to_string(), r["handle"].as_u64().unwrap_or(0)))
        })
        .collect()
}

#[test]
fn services_work_through_nftables_programmed_over_netlink() {
    if let Some(why) = skip_reason() {
        assert!(
            std::env::var("RAMPART_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
            "RAMPART_REQUIRE_PRIVILEGED=1 but: {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    // The node: this thread's own fresh namespace.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
    let tag = format!("rpx{}", std::process::id() % 100_000);
    let (pods, client) = (format!("{tag}p"), format!("{tag}c"));
    let _cleanup = Netns(vec![pods.clone(), client.clone()]);
    ip(&["link", "set", "lo", "up"]);
    for (ns, host_if, peer_if, host_addr) in [
        (&pods, "vpods", "eth0", "10.42.0.1/24"),
        (&client, "vext", "eth0", "192.168.77.1/24"),
    ] {
        ip(&["netns", "add", ns]);
        ip(&[
            "link", "add", host_if, "type", "veth", "peer", "name", peer_if, "netns", ns,
        ]);
        ip(&["addr", "add", host_addr, "dev", host_if]);
        ip(&["link", "set", host_if, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "link", "set", peer_if, "up"]);
    }
    for a in ["10.42.0.10/24", "10.42.0.11/24", "10.42.0.12/24"] {
        ip(&["-n", &pods, "addr", "add", a, "dev", "eth0"]);
    }
    ip(&["-n", &pods, "route", "add", "default", "via", "10.42.0.1"]);
    ip(&[
        "-n",
        &client,
        "addr",
        "add",
        "192.168.77.2/24",
        "dev",
        "eth0",
    ]);
    ip(&[
        "-n",
        &client,
        "route",
        "add",
        "default",
        "via",
        "192.168.77.1",
    ]);
    ip(&["route", "add", "10.43.0.0/16", "dev", "vpods"]);
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("ip_forward");
    start_backends(&pods, &["10.42.0.10", "10.42.0.11", "10.42.0.12"]);

    // Rampart runs without ip/nft/iptables reachable: an empty PATH.
    let empty = tempfile::tempdir().expect("tempdir");
    std::env::set_var("PATH", empty.path());
    let s = Server::start_with_agent(&[
        "--disable-kube-proxy=false",
        "--node-name",
        NODE,
        "--advertise-address",
        "192.168.77.1",
        // On the node's addresses too (this namespace only): pods reach it through the
        // `kubernetes` Service, whose endpoint is the advertised address.
        "--bind-address",
        "0.0.0.0",
    ]);

    let three = [
        ("10.42.0.10", NODE),
        ("10.42.0.11", "elsewhere"),
        ("10.42.0.12", "elsewhere"),
    ];
    let base = "/api/v1/namespaces/default/services";
    let slices = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
    create(
        &s,
        base,
        service(
            "web",
            "10.43.0.50",
            serde_json::json!({"type": "NodePort",
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]}),
        ),
    );
    create(&s, slices, slice("web", "web-1", &three));
    create(
        &s,
        base,
        service("empty", "10.43.0.51", serde_json::json!({})),
    );
    create(
        &s,
        base,
        service(
            "sticky",
            "10.43.0.52",
            serde_json::json!({"sessionAffinity": "ClientIP"}),
        ),
    );
    create(&s, slices, slice("sticky", "sticky-1", &three));
    create(
        &s,
        base,
        service(
            "local",
            "10.43.0.53",
            serde_json::json!({"type": "NodePort",
        "externalTrafficPolicy": "Local",
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30081}]}),
        ),
    );
    create(&s, slices, slice("local", "local-1", &three));

    // ClusterIP: every backend answers, from the node itself.
    assert!(
        eventually(Duration::from_secs(40), || ask("10.43.0.50:80").is_ok()),
        "the ClusterIP never answered (proxy not synced?)"
    );
    let seen: BTreeSet<String> = (0..40).filter_map(|_| ask("10.43.0.50:80").ok()).collect();
    assert_eq!(seen.len(), 3, "load-balanced over every backend: {seen:?}");

    // A pod reaches the apiserver through the `kubernetes` ClusterIP, whose endpoint is the
    // node itself (upstream's single-node case): verified TLS under the in-cluster name,
    // and `/healthz` answers.
    let (ca, id) = (s.ca_pem(), s.admin_identity());
    let mut reply = String::new();
    assert!(
        eventually(Duration::from_secs(20), || {
            let (ca, id) = (ca.clone(), id.clone());
            reply = in_ns(&pods, move || healthz("10.43.0.1:443", &ca, id))
                .unwrap_or_else(|e| format!("error: {e}"));
            reply.starts_with("HTTP/1.1 200") && reply.trim_end().ends_with("ok")
        }),
        "https://10.43.0.1/healthz from the pods' namespace: {reply}"
    );

    // NodePort from another namespace, on the node's address.
    let got = ask_from(&client, "192.168.77.1:30080").expect("NodePort from outside");
    assert!(got.starts_with("10.42.0.1"), "{got}");

    // No endpoints: refused at once, not a timeout.
    let t = Instant::now();
    let err = ask("10.43.0.51:80").expect_err("no endpoints");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "took {:?}",
        t.elapsed()
    );

    // Session affinity: one client, one backend.
    let sticky: BTreeSet<String> = (0..20).filter_map(|_| ask("10.43.0.52:80").ok()).collect();
    assert_eq!(sticky.len(), 1, "{sticky:?}");

    // externalTrafficPolicy Local: outside traffic only to this node's endpoint.
    let local: BTreeSet<String> = (0..15)
        .filter_map(|_| ask_from(&client, "192.168.77.1:30081").ok())
        .collect();
    assert_eq!(
        local,
        BTreeSet::from(["10.42.0.10".to_string()]),
        "only the local endpoint"
    );

    // A change to one Service rewrites only its chains.
    let web_before = handles("default/web/");
    assert!(!web_before.is_empty());
    let sticky_before = handles("default/sticky/");
    let patch = serde_json::json!({"endpoints": [
        {"addresses": ["10.42.0.10"], "nodeName": NODE, "conditions": {"ready": true}},
        {"addresses": ["10.42.0.11"], "nodeName": "elsewhere", "conditions": {"ready": true}}
    ]})
    .to_string();
    let r = s.raw(Raw::send(
        "PATCH",
        &format!("{slices}/sticky-1"),
        "application/merge-patch+json",
        patch.as_bytes(),
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        eventually(Duration::from_secs(10), || {
            !handles("default/sticky/")
                .iter()
                .any(|(c, _)| c.contains("10.42.0.12"))
        }),
        "the removed endpoint's chain is gone"
    );
    assert_ne!(handles("default/sticky/"), sticky_before);
    assert_eq!(
        handles("default/web/"),
        web_before,
        "other Services untouched"
    );

    // Figure (printed): from a new Service's creation (both API answers) to traffic flowing
    // through its ClusterIP; the proxy batches changes for up to MIN_SYNC_PERIOD (1 s).
    let t = Instant::now();
    create(
        &s,
        base,
        service("late", "10.43.0.57", serde_json::json!({})),
    );
    create(&s, slices, slice("late", "late-1", &three));
    let created = t.elapsed();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut flowing = None;
    while Instant::now() < deadline {
        let a: SocketAddr = "10.43.0.57:80".parse().expect("addr");
        if TcpStream::connect_timeout(&a, Duration::from_millis(20)).is_ok() {
            flowing = Some(t.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let flowing = flowing.expect("a new Service carries traffic within 10 s");
    eprintln!(
        "figure: Service + EndpointSlice created in {created:?}, traffic flowing after {flowing:?}"
    );

    // LoadBalancer: the built-in ServiceLB publishes the node's address, and the proxy
    // answers it from outside.
    create(
        &s,
        base,
        service(
            "lb",
            "10.43.0.54",
            serde_json::json!({"type": "LoadBalancer",
        "ports": [{"name": "http", "port": 81, "targetPort": 8080}]}),
        ),
    );
    create(&s, slices, slice("lb", "lb-1", &three));
    assert!(
        eventually(Duration::from_secs(20), || {
            get_service(&s, "lb")["status"]["loadBalancer"]["ingress"][0]["ip"] == "192.168.77.1"
        }),
        "LoadBalancer: ServiceLB never published the node: {}",
        get_service(&s, "lb")
    );
    assert!(
        eventually(Duration::from_secs(10), || ask_from(
            &client,
            "192.168.77.1:81"
        )
        .is_ok_and(|a| a.starts_with("10.42.0.1"))),
        "LoadBalancer: the ingress IP does not reach the endpoints"
    );

    // externalTrafficPolicy Local LoadBalancers: the health check node port says how many
    // endpoints are local (200), or 503 without one.
    for (name, ip, eps) in [
        ("hc-local", "10.43.0.55", &three[..]),
        ("hc-remote", "10.43.0.56", &three[1..]),
    ] {
        create(
            &s,
            base,
            service(
                name,
                ip,
                serde_json::json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}),
            ),
        );
        create(&s, slices, slice(name, &format!("{name}-1"), eps));
    }
    let health = |name: &str| -> Option<String> {
        let port = get_service(&s, name)["spec"]["healthCheckNodePort"].as_u64()?;
        let addr = format!("192.168.77.1:{port}");
        in_ns(&client, move || {
            let a: SocketAddr = addr.parse().ok()?;
            let mut c = TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok()?;
            c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: lb\r\n\r\n")
                .ok()?;
            let mut out = String::new();
            c.read_to_string(&mut out).ok()?;
            Some(out)
        })
    };
    let mut answer = None;
    assert!(
        eventually(Duration::from_secs(15), || {
            answer = health("hc-local");
            answer
                .as_deref()
                .is_some_and(|a| a.starts_with("HTTP/1.1 200"))
        }),
        "health check node port with a local endpoint: {answer:?}"
    );
    let answer = answer.unwrap_or_default();
    let body: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or("")).expect("JSON body");
    assert_eq!(
        body,
        serde_json::json!({"service": {"namespace": "default", "name": "hc-local"},
            "localEndpoints": 1, "serviceProxyHealthy": true})
    );
    let remote = health("hc-remote").unwrap_or_default();
    assert!(
        remote.starts_with("HTTP/1.1 503"),
        "no local endpoint: {remote}"
    );
    assert!(remote.contains("\"localEndpoints\": 0"), "{remote}");

    // Someone deletes the table: the proxy notices with one get and rebuilds it.
    let mut b = rampart::netfilter::Batch::new(rampart::netfilter::Family::Ip);
    b.destroy_table("rampart-proxy");
    rampart::netfilter::Socket::open()
        .expect("socket")
        .apply(&mut b)
        .expect("delete the table");
    assert!(ask("10.43.0.50:80").is_err(), "no table, no service");
    assert!(
        eventually(Duration::from_secs(20), || ask("10.43.0.50:80").is_ok()),
        "the table was rebuilt"
    );
    drop(s);
}
