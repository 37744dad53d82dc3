//! Service proxy sync time, against Debian's `nft -f` applying the same structure.
//!
//! For N Services × 5 endpoints (N = 1,000 and 10,000; `RAMPART_BENCH_PROXY_SERVICES`
//! overrides, comma-separated), each in a fresh network namespace of its own:
//! - Rampart: the pure ruleset computation, the cold sync over netlink (chunked
//!   transactions), then 20 times "add one Service and sync" (a partial sync: one map element,
//!   one service chain, five endpoint chains) and 20 times "replace one Service's
//!   EndpointSlice" (one endpoint chain out, one in, the service chain rewritten) — p50/p99,
//!   through the proxy's own path: [`Memo`] recomputes the changed part, the applier diffs
//!   only it;
//! - the peer: `nft -f` of a script with the same table (maps, a chain per service and
//!   endpoint, numgen vmaps, DNAT), cold; then 20 times one Service added by a small script.
//!
//! Figures only (no pass/fail). Needs root and `nft`; prints why and exits otherwise.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::sync::Arc;

use rampart::proxy::applier;
use rampart::proxy::parts::Memo;
use rampart::proxy::ruleset::{ruleset, NodeFacts};
use serde_json::json;

const EPS: usize = 5;

fn svc_ip(i: usize) -> String {
    format!("10.43.{}.{}", i / 250, i % 250 + 1)
}

fn ep_ip(i: usize, e: usize) -> String {
    let n = i * EPS + e;
    format!("10.42.{}.{}", n / 250, n % 250 + 1)
}

fn objects(n: usize) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut svcs = Vec::with_capacity(n);
    let mut slices = Vec::with_capacity(n);
    for i in 0..n {
        svcs.push(
            serde_json::from_value(json!({
                "metadata": {"namespace": "bench", "name": format!("s{i}")},
                "spec": {"clusterIP": svc_ip(i), "ports": [{"name": "http", "port": 80}]}
            }))
            .expect("service"),
        );
        slices.push(
            serde_json::from_value(json!({
                "metadata": {"namespace": "bench", "name": format!("s{i}-1"),
                             "labels": {"kubernetes.io/service-name": format!("s{i}")}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": (0..EPS).map(|e| json!({"addresses": [ep_ip(i, e)], "nodeName": "n2"})).collect::<Vec<_>>()
            }))
            .expect("slice"),
        );
    }
    (svcs, slices)
}

fn facts() -> NodeFacts {
    NodeFacts {
        node_name: "n1".into(),
        node_ips: vec![[192, 168, 5, 1].into()],
        cluster_cidr: "10.42.0.0/16".parse().expect("cidr"),
        service_cidr: "10.43.0.0/16".parse().expect("cidr"),
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn fresh_netns() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
}

fn slice_with(i: usize, first_ep: usize) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": format!("s{i}-1"),
                     "labels": {"kubernetes.io/service-name": format!("s{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": (0..EPS).map(|e| json!({"addresses": [ep_ip(first_ep, e)], "nodeName": "n2"})).collect::<Vec<_>>()
    }))
    .expect("slice")
}

/// p50/p99 of the whole step and of its netlink part.
fn figures(total: &mut [Duration], netlink: &mut [Duration]) -> String {
    format!(
        "total p50 {} p99 {} (apply part p50 {} p99 {})",
        ms(pct(&mut total.to_vec(), 0.5)),
        ms(pct(total, 0.99)),
        ms(pct(&mut netlink.to_vec(), 0.5)),
        ms(pct(netlink, 0.99)),
    )
}

fn rampart(n: usize) {
    fresh_netns();
    let (svcs, slices) = objects(n);
    let t = Instant::now();
    let desired = {
        let s: Vec<&Service> = svcs.iter().collect();
        let e: Vec<&EndpointSlice> = slices.iter().collect();
        ruleset(&s, &e, &facts())
    };
    let compute = t.elapsed();
    drop(desired);
    // What the proxy holds: the reflectors' Arcs, and its memo of parts.
    let mut svcs: Vec<Arc<Service>> = svcs.into_iter().map(Arc::new).collect();
    let mut slices: Vec<Arc<EndpointSlice>> = slices.into_iter().map(Arc::new).collect();
    let mut memo = Memo::new(facts());
    let mut a = applier().expect("netlink");
    let t = Instant::now();
    let parts = memo.parts(&svcs, &slices, &[]);
    let st = a.sync_parts(&parts).expect("cold sync");
    let cold = t.elapsed();
    let (mut add, mut add_apply, mut add_msgs) = (Vec::new(), Vec::new(), 0);
    for k in 0..20 {
        let (s2, e2) = objects(n + k + 1);
        svcs.push(Arc::new(s2[n + k].clone()));
        slices.push(Arc::new(e2[n + k].clone()));
        let t = Instant::now();
        let d = memo.parts(&svcs, &slices, &[]);
        let t2 = Instant::now();
        let st1 = a.sync_parts(&d).expect("partial sync");
        add_apply.push(t2.elapsed());
        add.push(t.elapsed());
        add_msgs = st1.messages;
        assert_eq!(st1.parts_changed, 1, "one part changed");
    }
    let (mut chg, mut chg_apply, mut chg_msgs) = (Vec::new(), Vec::new(), 0);
    for k in 0..20 {
        // Service k's endpoints move to fresh addresses (a rolling update's end state).
        slices[k] = Arc::new(slice_with(k, n + 100 + k));
        let t = Instant::now();
        let d = memo.parts(&svcs, &slices, &[]);
        let t2 = Instant::now();
        let st1 = a.sync_parts(&d).expect("partial sync");
        chg_apply.push(t2.elapsed());
        chg.push(t.elapsed());
        chg_msgs = st1.messages;
    }
    println!(
        "rampart  {n:>6} services x {EPS}: compute {}, cold sync {} ({} messages in {} transactions); \
         add one Service: {} {add_msgs} messages; replace one Service's endpoints: {} {chg_msgs} messages",
        ms(compute),
        ms(cold),
        st.messages,
        st.transactions,
        figures(&mut add, &mut add_apply),
        figures(&mut chg, &mut chg_apply),
    );
}

/// The same structure as `nft` syntax, for services `from..to`.
fn script(from: usize, to: usize, with_base: bool) -> String {
    let mut s = String::new();
    if with_base {
        s.push_str(
            "table ip bench {\n\
             map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }\n\
             chain services { ip daddr . meta l4proto . th dport vmap @service-ips; }\n\
             chain nat-prerouting { type nat hook prerouting priority -100; jump services; }\n\
             chain nat-output { type nat hook output priority -100; jump services; }\n\
             chain mark-for-masquerade { meta mark set meta mark or 0x4000; }\n}\n",
        );
    }
    for i in from..to {
        let svc = format!("service-{i:08X}-bench/s{i}/tcp/http");
        for e in 0..EPS {
            let ip = ep_ip(i, e);
            let _ = writeln!(
                s,
                "add chain ip bench endpoint-{i:08X}{e}-bench/s{i}/tcp/http__{ip}/8080\n\
                 add rule ip bench endpoint-{i:08X}{e}-bench/s{i}/tcp/http__{ip}/8080 ip saddr {ip} jump mark-for-masquerade\n\
                 add rule ip bench endpoint-{i:08X}{e}-bench/s{i}/tcp/http__{ip}/8080 meta l4proto tcp dnat to {ip}:8080"
            );
        }
        let _ = writeln!(s, "add chain ip bench {svc}");
        let _ = writeln!(
            s,
            "add rule ip bench {svc} ip saddr != 10.42.0.0/16 jump mark-for-masquerade"
        );
        let vmap: Vec<String> = (0..EPS)
            .map(|e| {
                format!(
                    "{e} : goto endpoint-{i:08X}{e}-bench/s{i}/tcp/http__{}/8080",
                    ep_ip(i, e)
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "add rule ip bench {svc} numgen random mod {EPS} vmap {{ {} }}",
            vmap.join(", ")
        );
        let _ = writeln!(
            s,
            "add element ip bench service-ips {{ {} . tcp . 80 : goto {svc} }}",
            svc_ip(i)
        );
    }
    s
}

fn nft_f(script: &str) -> Duration {
    let t = Instant::now();
    let mut c = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write script");
    let st = c.wait().expect("nft");
    assert!(st.success(), "nft -f failed");
    t.elapsed()
}

fn peer(n: usize) {
    fresh_netns();
    let cold = nft_f(&script(0, n, true));
    let mut one = Vec::new();
    for k in 0..20 {
        one.push(nft_f(&script(n + k, n + k + 1, false)));
    }
    println!(
        "nft -f   {n:>6} services x {EPS}: cold {}; add one Service p50 {} p99 {}",
        ms(cold),
        ms(pct(&mut one.clone(), 0.5)),
        ms(pct(&mut one, 0.99)),
    );
    // Which single operations pay the kernel's whole-table validation at commit
    // (`nft_table_validate`, run when a transaction set NFT_VALIDATE_NEED): one `nft -f`
    // per operation on the full table, p50 of 20 (the process start is in every figure).
    let svc0 = "service-00000000-bench/s0/tcp/http";
    type Probe = Box<dyn Fn(usize) -> String>;
    let kinds: [(&str, Probe); 5] = [
        (
            "vmap element, accept (no jump)",
            Box::new(|k| {
                format!(
                    "add element ip bench service-ips {{ 10.43.250.{} . tcp . 81 : accept }}\n",
                    k + 1
                )
            }),
        ),
        (
            "vmap element, goto an existing chain",
            Box::new(move |k| {
                format!("add element ip bench service-ips {{ 10.43.251.{} . tcp . 81 : goto {svc0} }}\n", k + 1)
            }),
        ),
        (
            "new empty chain",
            Box::new(|k| format!("add chain ip bench probe-empty-{k}\n")),
        ),
        (
            "new chain + DNAT rule (unreferenced)",
            Box::new(|k| {
                format!("add chain ip bench probe-dnat-{k}\nadd rule ip bench probe-dnat-{k} meta l4proto tcp dnat to 10.42.250.{}:8080\n", k + 1)
            }),
        ),
        (
            "new chain + rule jumping to an existing chain",
            Box::new(|k| {
                format!("add chain ip bench probe-jump-{k}\nadd rule ip bench probe-jump-{k} jump mark-for-masquerade\n")
            }),
        ),
    ];
    for (what, f) in &kinds {
        let mut t: Vec<Duration> = (0..20).map(|k| nft_f(&f(k))).collect();
        println!(
            "nft -f   {n:>6} services x {EPS}: {what}: p50 {}",
            ms(pct(&mut t, 0.5))
        );
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() || Command::new("nft").arg("--version").output().is_err() {
        println!("proxy bench skipped: needs root and Debian's nft (the peer)");
        return;
    }
    let sizes: Vec<usize> = std::env::var("RAMPART_BENCH_PROXY_SERVICES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1000, 10_000]);
    for n in sizes {
        // Each run in a thread of its own, so each gets its own fresh namespace.
        std::thread::spawn(move || rampart(n))
            .join()
            .expect("rampart run");
        std::thread::spawn(move || peer(n))
            .join()
            .expect("peer run");
    }
}
