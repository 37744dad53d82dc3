//! The embedded cluster DNS against a real server with its embedded agent: the DNS is served
//! on a loopback port (`--cluster-dns-listen`), names outside the cluster go to a fake
//! upstream this test runs on loopback (never an outside resolver), and every query is made
//! with hand-built packets and parsed by a small client written here (independent of the
//! server's codec), over UDP and TCP.
//!
//! As root: the cluster DNS address on the `rampart-dns` dummy interface, port 53, inside a
//! network namespace the test creates.
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)

mod harness;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{eventually, free_port, Server};

const A: u16 = 1;
const CNAME: u16 = 5;
const SOA: u16 = 6;
const PTR: u16 = 12;
const AAAA: u16 = 28;
const SRV: u16 = 33;
const OPT: u16 = 41;

// ---------------------------------------------------------------- a small DNS client

fn encode_name(out: &mut Vec<u8>, name: &str) {
    for l in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
}

fn query_packet(id: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let ar = edns.is_some() as u8;
    let mut p = vec![
        (id >> 8) as u8,
        id as u8,
        0x01,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        ar,
    ];
    encode_name(&mut p, name);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    if let Some(size) = edns {
        p.push(0);
        p.extend_from_slice(&OPT.to_be_bytes());
        p.extend_from_slice(&size.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    p
}

fn decode_name(p: &[u8], mut at: usize) -> (String, usize) {
    let mut labels = Vec::new();
    let mut end = None;
    for _ in 0..128 {
        let len = p[at] as usize;
        if len == 0 {
            return (labels.join("."), end.unwrap_or(at + 1));
        }
        if len & 0xC0 == 0xC0 {
            end.get_or_insert(at + 2);
            at = ((len & 0x3F) << 8) | p[at + 1] as usize;
            continue;
        }
        labels.push(String::from_utf8_lossy(&p[at + 1..at + 1 + len]).to_string());
        at += 1 + len;
    }
    panic!("name loop in answer");
}

#[derive(Debug, Clone)]
struct Rr {
    name: String,
    rtype: u16,
    ttl: u32,
    /// A/AAAA address, CNAME/PTR target, SRV "prio weight port target", SOA "mname minimum".
    data: String,
}

#[derive(Debug)]
struct Reply {
    id: u16,
    rcode: u8,
    aa: bool,
    tc: bool,
    question: String,
    answers: Vec<Rr>,
    authority: Vec<Rr>,
    additional: Vec<Rr>,
}

impl Reply {
    fn data(&self, rtype: u16) -> Vec<String> {
        let mut v: Vec<String> = self
            .answers
            .iter()
            .filter(|r| r.rtype == rtype)
            .map(|r| r.data.clone())
            .collect();
        v.sort();
        v
    }
}

fn parse_reply(p: &[u8]) -> Reply {
    let c = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
    let (question, mut at) = decode_name(p, 12);
    at += 4;
    let mut sections = [Vec::new(), Vec::new(), Vec::new()];
    for (s, count) in [c(6), c(8), c(10)].into_iter().enumerate() {
        for _ in 0..count {
            let (name, next) = decode_name(p, at);
            let rtype = c(next);
            let ttl = u32::from_be_bytes([p[next + 4], p[next + 5], p[next + 6], p[next + 7]]);
            let len = c(next + 8) as usize;
            let rd = next + 10;
            let data = match rtype {
                A => Ipv4Addr::new(p[rd], p[rd + 1], p[rd + 2], p[rd + 3]).to_string(),
                AAAA => {
                    let b: [u8; 16] = p[rd..rd + 16].try_into().unwrap();
                    std::net::Ipv6Addr::from(b).to_string()
                }
                CNAME | PTR => decode_name(p, rd).0,
                SRV => format!(
                    "{} {} {} {}",
                    c(rd),
                    c(rd + 2),
                    c(rd + 4),
                    decode_name(p, rd + 6).0
                ),
                SOA => {
                    let (m, n1) = decode_name(p, rd);
                    let (_, n2) = decode_name(p, n1);
                    let min = u32::from_be_bytes([p[n2 + 16], p[n2 + 17], p[n2 + 18], p[n2 + 19]]);
                    format!("{m} {min}")
                }
                _ => String::new(),
            };
            sections[s].push(Rr {
                name,
                rtype,
                ttl,
                data,
            });
            at = rd + len;
        }
    }
    assert_eq!(at, p.len(), "trailing bytes in the reply");
    let [answers, authority, additional] = sections;
    Reply {
        id: c(0),
        rcode: p[3] & 0xF,
        aa: p[2] & 0x04 != 0,
        tc: p[2] & 0x02 != 0,
        question,
        answers,
        authority,
        additional,
    }
}

fn udp_raw(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(wait)).unwrap();
    sock.send_to(packet, server).unwrap();
    let mut buf = vec![0u8; 65535];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

fn udp(server: SocketAddr, name: &str, qtype: u16) -> Reply {
    udp_edns(server, name, qtype, None)
}

fn udp_edns(server: SocketAddr, name: &str, qtype: u16, edns: Option<u16>) -> Reply {
    let id: u16 = rand_id();
    let raw = udp_raw(
        server,
        &query_packet(id, name, qtype, edns),
        Duration::from_secs(5),
    )
    .unwrap_or_else(|| panic!("no UDP answer for {name}"));
    let r = parse_reply(&raw);
    assert_eq!(r.id, id);
    assert_eq!(r.question, name, "question echoed");
    r
}

fn tcp(server: SocketAddr, name: &str, qtype: u16) -> Reply {
    let mut s = TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let id = rand_id();
    let q = query_packet(id, name, qtype, None);
    s.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
    s.write_all(&q).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    let r = parse_reply(&buf);
    assert_eq!(r.id, id);
    r
}

fn rand_id() -> u16 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 65521) as u16
}

// ---------------------------------------------------------------- a fake upstream resolver

/// Answers `*.example.test` A 192.0.2.7 TTL 60, `missing.example.test` NXDOMAIN with a SOA
/// (negative TTL 30), `big.example.test` with 100 addresses; counts queries by name.
struct Upstream {
    addr: SocketAddr,
    counts: Arc<Mutex<HashMap<String, u32>>>,
}

fn upstream_answer(q: &[u8]) -> Vec<u8> {
    let (name, end) = decode_name(q, 12);
    let qtype = u16::from_be_bytes([q[end], q[end + 1]]);
    let mut out = q[..end + 4].to_vec();
    out[2] = 0x81; // QR, RD
    out[3] = 0x80; // RA
    out[10] = 0;
    out[11] = 0;
    let rr = |out: &mut Vec<u8>, rtype: u16, ttl: u32, data: &[u8]| {
        out.extend_from_slice(&[0xC0, 12]);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    };
    if name == "missing.example.test" {
        out[3] |= 3;
        out[8] = 0;
        out[9] = 1;
        let mut soa = Vec::new();
        encode_name(&mut soa, "ns.example.test");
        encode_name(&mut soa, "admin.example.test");
        for v in [1u32, 7200, 1800, 86400, 30] {
            soa.extend_from_slice(&v.to_be_bytes());
        }
        rr(&mut out, SOA, 300, &soa);
    } else if qtype == A {
        let n: u8 = if name == "big.example.test" { 100 } else { 1 };
        out[6] = 0;
        out[7] = n;
        for i in 0..n {
            rr(&mut out, A, 60, &[192, 0, 2, 7 + i]);
        }
    }
    out
}

fn start_upstream() -> Upstream {
    // One port for both protocols: a free UDP port may be taken for TCP, so try a few.
    let (sock, addr, tcp) = (0..50)
        .find_map(|_| {
            let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
            let addr = sock.local_addr().ok()?;
            let tcp = std::net::TcpListener::bind(addr).ok()?;
            Some((sock, addr, tcp))
        })
        .expect("a port free for both UDP and TCP");
    let counts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let c = counts.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let (name, _) = decode_name(&buf[..n], 12);
            *c.lock().unwrap().entry(name).or_default() += 1;
            let mut a = upstream_answer(&buf[..n]);
            if a.len() > 512 {
                // As a real server: over UDP without room, header + question with TC.
                let (_, end) = decode_name(&a, 12);
                a.truncate(end + 4);
                a[2] |= 0x02;
                a[6] = 0;
                a[7] = 0;
            }
            let _ = sock.send_to(&a, peer);
        }
    });
    let c = counts.clone();
    std::thread::spawn(move || {
        for s in tcp.incoming() {
            let Ok(mut s) = s else { continue };
            let c = c.clone();
            std::thread::spawn(move || {
                let mut len = [0u8; 2];
                while s.read_exact(&mut len).is_ok() {
                    let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                    if s.read_exact(&mut q).is_err() {
                        return;
                    }
                    let (name, _) = decode_name(&q, 12);
                    *c.lock().unwrap().entry(format!("tcp:{name}")).or_default() += 1;
                    let a = upstream_answer(&q);
                    let _ = s.write_all(&(a.len() as u16).to_be_bytes());
                    let _ = s.write_all(&a);
                }
            });
        }
    });
    Upstream { addr, counts }
}

impl Upstream {
    fn count(&self, name: &str) -> u32 {
        self.counts.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

// ---------------------------------------------------------------- the cluster

struct Cluster {
    server: Server,
    dns: SocketAddr,
    upstream: Upstream,
}

fn cluster() -> Cluster {
    let upstream = start_upstream();
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("search corp.example.test\nnameserver {}\n", upstream.addr),
    )
    .unwrap();
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = Server::start_with_agent(&[
        "--cluster-dns-listen",
        &dns.to_string(),
        "--resolv-conf",
        resolv.to_str().unwrap(),
    ]);
    // Keep the resolv.conf alive as long as the server.
    std::mem::forget(dir);
    // The agent gets its service-proxy identity, then the DNS lists the cluster.
    let ready = eventually(Duration::from_secs(60), || {
        udp_raw(
            dns,
            &query_packet(1, "kubernetes.default.svc.cluster.local", A, None),
            Duration::from_millis(500),
        )
        .map(|r| parse_reply(&r))
        .is_some_and(|r| r.rcode == 0 && !r.answers.is_empty())
    });
    assert!(
        ready,
        "the cluster DNS never answered for kubernetes.default"
    );
    Cluster {
        server,
        dns,
        upstream,
    }
}

const OBJECTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{name: http, port: 80, protocol: TCP}, {name: syslog, port: 514, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: default
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports: [{name: pg, port: 5432, protocol: TCP}]
endpoints:
- {addresses: [10.42.0.5], hostname: db-0, conditions: {ready: true}}
- {addresses: [10.42.0.6], conditions: {ready: true}}
- {addresses: [10.42.0.7], hostname: db-2, conditions: {ready: false}}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec: {type: ExternalName, externalName: www.example.test}
"#;

fn apply(c: &Cluster, yaml: &str) {
    let out = c.server.kubectl_in(&["apply", "-f", "-"], Some(yaml));
    assert!(
        out.status.success(),
        "apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cluster_ip(c: &Cluster, ns: &str, name: &str) -> String {
    c.server.ok(&[
        "get",
        "svc",
        "-n",
        ns,
        name,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])
}

fn wait_answer(c: &Cluster, name: &str, qtype: u16, want: impl Fn(&Reply) -> bool) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = udp(c.dns, name, qtype);
        if want(&r) || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cluster_records_over_udp_and_tcp() {
    let c = cluster();
    apply(&c, OBJECTS);
    let web_ip = cluster_ip(&c, "default", "web");
    let dns = c.dns;

    // kubernetes.default and kube-dns, the Services every cluster has.
    let r = udp(dns, "kubernetes.default.svc.cluster.local", A);
    assert_eq!(r.data(A), ["10.43.0.1"]);
    assert!(r.aa, "authoritative for the cluster zone");
    assert!(r.answers.iter().all(|a| a.ttl == 5), "TTL 5 s: {r:?}");
    let r = udp(dns, "kube-dns.kube-system.svc.cluster.local", A);
    assert_eq!(r.data(A), ["10.43.0.10"]);
    let svc = c
        .server
        .ok(&["get", "svc", "-n", "kube-system", "kube-dns", "-o", "json"]);
    let svc: serde_json::Value = serde_json::from_str(&svc).unwrap();
    assert_eq!(svc["metadata"]["labels"]["k8s-app"], "kube-dns");
    assert_eq!(
        svc["metadata"]["annotations"]["rampart.io/node-local"],
        "true"
    );
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "UDP");
    assert_eq!(svc["spec"]["ports"][1]["name"], "dns-tcp");

    // ClusterIP Service: A, NODATA for AAAA (SOA in authority), SRV per named port.
    let r = wait_answer(&c, "web.default.svc.cluster.local", A, |r| {
        !r.answers.is_empty()
    });
    assert_eq!(r.data(A), std::slice::from_ref(&web_ip));
    for r in [
        udp(dns, "web.default.svc.cluster.local", AAAA),
        tcp(dns, "web.default.svc.cluster.local", AAAA),
    ] {
        assert_eq!((r.rcode, r.answers.len()), (0, 0), "NODATA: {r:?}");
        assert_eq!(r.authority[0].rtype, SOA);
        assert_eq!(r.authority[0].data, "ns.dns.cluster.local 5");
    }
    let r = udp(dns, "_http._tcp.web.default.svc.cluster.local", SRV);
    assert_eq!(r.data(SRV), ["0 100 80 web.default.svc.cluster.local"]);
    assert_eq!(r.additional[0].data, web_ip);
    assert_eq!(r.additional[0].name, "web.default.svc.cluster.local");
    let r = udp(dns, "_syslog._udp.web.default.svc.cluster.local", SRV);
    assert_eq!(r.data(SRV), ["0 100 514 web.default.svc.cluster.local"]);
    let r = udp(dns, "_syslog._tcp.web.default.svc.cluster.local", SRV);
    assert_eq!(r.rcode, 3, "wrong protocol: NXDOMAIN");

    // NXDOMAIN vs NODATA.
    let r = udp(dns, "nope.default.svc.cluster.local", A);
    assert_eq!((r.rcode, r.answers.len()), (3, 0));
    assert_eq!(r.authority[0].rtype, SOA);
    for parent in [
        "default.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
    ] {
        let r = udp(dns, parent, A);
        assert_eq!((r.rcode, r.answers.len()), (0, 0), "{parent} exists: {r:?}");
    }
    assert_eq!(udp(dns, "web.nosuchns.svc.cluster.local", A).rcode, 3);

    // Headless: ready endpoints, per-endpoint names from hostname or the address, SRV to them.
    let r = wait_answer(&c, "db.default.svc.cluster.local", A, |r| {
        r.answers.len() == 2
    });
    assert_eq!(
        r.data(A),
        ["10.42.0.5", "10.42.0.6"],
        "ready endpoints only"
    );
    assert_eq!(
        tcp(dns, "db-0.db.default.svc.cluster.local", A).data(A),
        ["10.42.0.5"]
    );
    assert_eq!(
        udp(dns, "10-42-0-6.db.default.svc.cluster.local", A).data(A),
        ["10.42.0.6"]
    );
    assert_eq!(
        udp(dns, "db-2.db.default.svc.cluster.local", A).rcode,
        3,
        "not ready"
    );
    let r = udp(dns, "_pg._tcp.db.default.svc.cluster.local", SRV);
    assert_eq!(
        r.data(SRV),
        [
            "0 50 5432 10-42-0-6.db.default.svc.cluster.local",
            "0 50 5432 db-0.db.default.svc.cluster.local"
        ]
    );
    assert_eq!(r.additional.len(), 2, "glue A records: {r:?}");

    // PTR for a Service IP and an endpoint.
    let octets: Vec<&str> = web_ip.split('.').rev().collect();
    let r = udp(dns, &format!("{}.in-addr.arpa", octets.join(".")), PTR);
    assert_eq!(r.data(PTR), ["web.default.svc.cluster.local"]);
    let r = tcp(dns, "5.0.42.10.in-addr.arpa", PTR);
    assert_eq!(r.data(PTR), ["db-0.db.default.svc.cluster.local"]);

    // ExternalName: CNAME.
    let r = udp(dns, "ext.default.svc.cluster.local", A);
    assert_eq!(r.answers[0].rtype, CNAME);
    assert_eq!(r.answers[0].data, "www.example.test");

    // Pods ("pods insecure"): any address in an existing namespace.
    assert_eq!(
        udp(dns, "10-42-3-4.default.pod.cluster.local", A).data(A),
        ["10.42.3.4"]
    );
    assert_eq!(udp(dns, "10-42-3-4.nosuchns.pod.cluster.local", A).rcode, 3);
    assert_eq!(udp(dns, "not-an-ip.default.pod.cluster.local", A).rcode, 3);

    // Letter case is ignored and echoed back (0x20).
    let r = udp(dns, "WEB.Default.svc.Cluster.Local", A);
    assert_eq!(r.data(A), [web_ip]);
}

#[test]
fn changes_appear_within_a_second_and_truncation() {
    let c = cluster();
    let dns = c.dns;
    assert_eq!(udp(dns, "late.default.svc.cluster.local", A).rcode, 3);
    apply(
        &c,
        "apiVersion: v1\nkind: Service\nmetadata: {name: late, namespace: default}\nspec: {ports: [{port: 80}]}\n",
    );
    let created = Instant::now();
    let ip = cluster_ip(&c, "default", "late");
    let seen = eventually(Duration::from_secs(1), || {
        udp(dns, "late.default.svc.cluster.local", A).data(A) == [ip.clone()]
    });
    assert!(seen, "the new Service was not served within a second");
    eprintln!("create → answer: {:?}", created.elapsed());
    c.server.ok(&["delete", "svc", "late", "-n", "default"]);
    let gone = eventually(Duration::from_secs(1), || {
        udp(dns, "late.default.svc.cluster.local", A).rcode == 3
    });
    assert!(gone, "the deleted Service was still served after a second");

    // 60 endpoints do not fit 512 bytes: TC over UDP, everything over TCP and with EDNS room.
    let endpoints: String = (1..=60)
        .map(|i| format!("- {{addresses: [10.42.1.{i}]}}\n"))
        .collect();
    apply(
        &c,
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: many, namespace: default}}\nspec: {{clusterIP: None}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: many-1, namespace: default, labels: {{kubernetes.io/service-name: many}}}}\naddressType: IPv4\nendpoints:\n{endpoints}"
        ),
    );
    let r = wait_answer(&c, "many.default.svc.cluster.local", A, |r| r.tc);
    assert!(r.tc, "TC over plain UDP: {r:?}");
    assert!(r.answers.is_empty());
    assert_eq!(
        tcp(dns, "many.default.svc.cluster.local", A).answers.len(),
        60
    );
    let r = udp_edns(dns, "many.default.svc.cluster.local", A, Some(1232));
    assert!(!r.tc);
    assert_eq!(r.answers.len(), 60);
}

#[test]
fn forwarding_with_cache_and_malformed_packets() {
    let c = cluster();
    let dns = c.dns;
    let up = &c.upstream;

    // Forwarded, then cached (the upstream sees one query), TTL aged, not authoritative.
    let r = udp(dns, "www.example.test", A);
    assert_eq!(r.data(A), ["192.0.2.7"]);
    assert!(!r.aa);
    assert_eq!(r.answers[0].ttl, 60);
    for _ in 0..5 {
        assert_eq!(udp(dns, "WWW.example.test", A).data(A), ["192.0.2.7"]);
    }
    assert_eq!(up.count("www.example.test"), 1, "answered from the cache");
    // Negative answers are cached for the SOA's negative TTL.
    for _ in 0..3 {
        let r = udp(dns, "missing.example.test", A);
        assert_eq!(r.rcode, 3);
        assert_eq!(r.authority[0].rtype, SOA);
    }
    assert_eq!(up.count("missing.example.test"), 1);
    // Over TCP the query goes to the upstream over TCP.
    let r = tcp(dns, "tcp-only.example.test", A);
    assert_eq!(r.data(A), ["192.0.2.7"]);
    assert_eq!(up.count("tcp:tcp-only.example.test"), 1);
    // A big upstream answer: truncated over UDP (not cached), complete over TCP.
    let r = udp(dns, "big.example.test", A);
    assert!(r.tc);
    let r = tcp(dns, "big.example.test", A);
    assert_eq!(r.answers.len(), 100);

    // Malformed input: dropped or FORMERR/NOTIMP, and the server keeps answering.
    assert!(udp_raw(dns, &[1, 2, 3], Duration::from_millis(300)).is_none());
    let mut response = query_packet(7, "web.default.svc.cluster.local", A, None);
    response[2] |= 0x80;
    assert!(
        udp_raw(dns, &response, Duration::from_millis(300)).is_none(),
        "a response is never answered"
    );
    let mut two = query_packet(8, "a.example.test", A, None);
    two[5] = 2;
    let r = udp_raw(dns, &two, Duration::from_secs(2)).expect("FORMERR reply");
    assert_eq!((r[0], r[1], r[3] & 0xF), (0, 8, 1), "FORMERR");
    let mut notify = query_packet(9, "a.example.test", A, None);
    notify[2] = 0x20; // opcode 4 (NOTIFY)
    let r = udp_raw(dns, &notify, Duration::from_secs(2)).expect("NOTIMP reply");
    assert_eq!(r[3] & 0xF, 4, "NOTIMP");
    let mut looping = vec![0, 10, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1];
    let r = udp_raw(dns, &looping, Duration::from_secs(2)).expect("FORMERR for a pointer loop");
    assert_eq!(r[3] & 0xF, 1);
    looping.truncate(13);
    let _ = udp_raw(dns, &looping, Duration::from_millis(300));
    // Random garbage of every length.
    for n in 0..200usize {
        let junk: Vec<u8> = (0..n).map(|i| (i * 7919 + n) as u8).collect();
        let _ = udp_raw(dns, &junk, Duration::from_millis(5));
    }
    // A TCP frame that ends early, then a valid query on a new connection.
    {
        let mut s = TcpStream::connect(dns).unwrap();
        s.write_all(&[0, 50, 1, 2]).unwrap();
    }
    assert_eq!(
        tcp(dns, "kubernetes.default.svc.cluster.local", A).data(A),
        ["10.43.0.1"]
    );
    assert_eq!(
        udp(dns, "kubernetes.default.svc.cluster.local", A).data(A),
        ["10.43.0.1"]
    );
}

/// Root only: `dns::run` without a listen address puts the cluster DNS IP on the
/// `rampart-dns` dummy interface (created over netlink, idempotent across restarts; `lo` on a
/// kernel without the dummy driver) and
/// serves port 53 there, inside a network namespace made for this test. No API server is
/// reachable, so cluster names are SERVFAIL (not yet listed) while forwarding to a fake
/// upstream inside the namespace works.
#[test]
fn vip_on_dummy_interface_in_a_netns() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var("RAMPART_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            panic!("RAMPART_REQUIRE_PRIVILEGED=1 but this test needs root (network namespaces)");
        }
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    let result = std::thread::spawn(|| {
        // SAFETY: unshare(2) of the network namespace affects only this thread, which owns
        // every socket the test makes below (a current-thread runtime).
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!("unshare: {}", std::io::Error::last_os_error()));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(vip_scenario())
    })
    .join()
    .expect("netns thread");
    result.unwrap();
}

async fn vip_scenario() -> Result<(), String> {
    use rtnetlink::LinkUnspec;
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    handle
        .link()
        .set(LinkUnspec::new_with_name("lo").up().build())
        .execute()
        .await
        .map_err(|e| format!("lo up: {e}"))?;
    // A fake upstream on the namespace's loopback.
    let up = tokio::net::UdpSocket::bind("127.0.0.1:5353")
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = up.recv_from(&mut buf).await {
            let _ = up.send_to(&upstream_answer(&buf[..n]), peer).await;
        }
    });
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1:5353\n").map_err(|e| e.to_string())?;
    let vip: std::net::IpAddr = "10.43.0.10".parse().unwrap();
    // Twice, as after an agent restart: the interface and address already exist.
    rampart::dns::vip::ensure(rampart::dns::vip::IFACE, vip).await?;
    let nowhere = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
    let client = kube::Client::try_from(nowhere).map_err(|e| e.to_string())?;
    let (_tx, rx) = tokio::sync::watch::channel(client);
    let mut cfg = rampart::dns::Config::new(vip);
    cfg.resolv_conf = resolv;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(rampart::dns::run(cfg, rx, async move {
        let _ = stop_rx.await;
    }));
    let client = tokio::net::UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|e| e.to_string())?;
    let ask = |name: &'static str| {
        let client = &client;
        async move {
            for _ in 0..50 {
                let q = query_packet(77, name, A, None);
                client
                    .send_to(&q, "10.43.0.10:53")
                    .await
                    .map_err(|e| e.to_string())?;
                let mut buf = vec![0u8; 4096];
                if let Ok(Ok((n, _))) =
                    tokio::time::timeout(Duration::from_millis(100), client.recv_from(&mut buf))
                        .await
                {
                    return Ok(parse_reply(&buf[..n]));
                }
            }
            Err(format!("no answer for {name} on 10.43.0.10:53"))
        }
    };
    let r = ask("www.example.test").await?;
    assert_eq!(r.data(A), ["192.0.2.7"], "forwarded through the VIP");
    let r = ask("kubernetes.default.svc.cluster.local").await?;
    assert_eq!(r.rcode, 2, "SERVFAIL before the cluster is listed");
    let _ = stop_tx.send(());
    served
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    // And a second start finds everything in place.
    rampart::dns::vip::ensure(rampart::dns::vip::IFACE, vip).await?;
    rampart::dns::vip::remove(rampart::dns::vip::IFACE).await?;
    Ok(())
}
