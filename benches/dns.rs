//! Cluster DNS benchmark: a real `rampart server` with its embedded agent serving the cluster
//! DNS on a loopback port, 1,000 Services created through the API, then Debian's `dnsperf`
//! asking for them (A records of `svc-N.bench.svc.cluster.local`, plus NXDOMAIN names); the
//! same names served by Debian's `unbound` (`local-data`, static zone) on loopback, measured
//! side by side. Latency percentiles come from a sequential sampler in this process (dnsperf
//! prints only the mean), once idle and once while dnsperf loads the server at a fixed rate.
//!
//! Needs `dnsperf` and `unbound` (`apt-get install dnsperf unbound`); without them the
//! benchmark says so and exits. Prints figures; never fails a build.
//!
//! Run: `cargo bench --profile ci --bench dns` (env `BENCH_SERVICES` (1000),
//! `BENCH_SECONDS` (10) per dnsperf run, `RAMPART_BIN` for another server binary).

mod support;

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, PostParams};

use support::server_binary;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut p = vec![(id >> 8) as u8, id as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        p.push(l.len() as u8);
        p.extend_from_slice(l.as_bytes());
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    p
}

/// Sequential queries; returns sorted round-trip times and how many answers had records.
fn sample(server: SocketAddr, names: &[String], n: usize) -> (Vec<Duration>, usize) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(1))).ok();
    sock.connect(server).expect("connect");
    let mut buf = [0u8; 1500];
    let mut times = Vec::with_capacity(n);
    let mut answered = 0;
    for i in 0..n {
        let name = &names[i % names.len()];
        let q = query(i as u16, name);
        let t = Instant::now();
        if sock.send(&q).is_err() {
            continue;
        }
        if let Ok(len) = sock.recv(&mut buf) {
            times.push(t.elapsed());
            if len > 7 && u16::from_be_bytes([buf[6], buf[7]]) > 0 {
                answered += 1;
            }
        }
    }
    times.sort();
    (times, answered)
}

fn pct(times: &[Duration], p: f64) -> f64 {
    if times.is_empty() {
        return f64::NAN;
    }
    let i = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
    times[i].as_secs_f64() * 1000.0
}

/// Run dnsperf; (queries/s, mean latency ms, lost queries).
fn dnsperf(
    server: SocketAddr,
    file: &Path,
    seconds: usize,
    rate: Option<usize>,
) -> (f64, f64, String) {
    let mut cmd = Command::new("dnsperf");
    cmd.args([
        "-s",
        &server.ip().to_string(),
        "-p",
        &server.port().to_string(),
    ])
    .arg("-d")
    .arg(file)
    .args([
        "-l",
        &seconds.to_string(),
        "-c",
        "4",
        "-T",
        "2",
        "-q",
        "500",
    ]);
    if let Some(r) = rate {
        cmd.args(["-Q", &r.to_string()]);
    }
    let out = match cmd.stderr(Stdio::inherit()).output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout).to_string(),
        Err(e) => return (f64::NAN, f64::NAN, format!("dnsperf: {e}")),
    };
    let field = |key: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(key))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let qps = field("Queries per second").parse().unwrap_or(f64::NAN);
    let avg = field("Average Latency (s)")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |s| s * 1000.0);
    (qps, avg, field("Queries lost"))
}

struct Row {
    what: String,
    qps: f64,
    mean: f64,
    lost: String,
    p50: f64,
    p99: f64,
}

fn measure(
    label: &str,
    server: SocketAddr,
    file: &Path,
    names: &[String],
    seconds: usize,
) -> Vec<Row> {
    let (idle, answered) = sample(server, names, 5000);
    assert!(answered > 0, "{label}: no answers with records");
    let (qps, mean, lost) = dnsperf(server, file, seconds, None);
    // Latency under a steady load of half the measured maximum.
    let rate = if qps.is_finite() {
        (qps / 2.0) as usize
    } else {
        10_000
    };
    let file2 = file.to_path_buf();
    let loader = std::thread::spawn(move || dnsperf(server, &file2, seconds, Some(rate.max(1000))));
    std::thread::sleep(Duration::from_millis(500));
    let (loaded, _) = sample(server, names, 5000);
    let (lqps, lmean, llost) = loader.join().unwrap_or((f64::NAN, f64::NAN, String::new()));
    vec![
        Row {
            what: format!("{label}: max rate"),
            qps,
            mean,
            lost,
            p50: pct(&idle, 0.5),
            p99: pct(&idle, 0.99),
        },
        Row {
            what: format!("{label}: at {rate} q/s"),
            qps: lqps,
            mean: lmean,
            lost: llost,
            p50: pct(&loaded, 0.5),
            p99: pct(&loaded, 0.99),
        },
    ]
}

fn have(bin: &str) -> bool {
    Command::new(bin)
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !have("dnsperf") || !have("unbound") {
        eprintln!(
            "dns benchmark skipped: needs dnsperf and unbound (apt-get install dnsperf unbound)"
        );
        return;
    }
    let services = env_usize("BENCH_SERVICES", 1000);
    let seconds = env_usize("BENCH_SECONDS", 10);
    let bin = match server_binary() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "").expect("resolv.conf");
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let server = support::Server::start_with(
        &bin,
        &dir.path().join("server"),
        &[
            "--cluster-dns-listen",
            &dns.to_string(),
            "--resolv-conf",
            resolv.to_str().unwrap_or_default(),
        ],
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let client = support::client(&dir.path().join("server/admin.kubeconfig"))
        .await
        .expect("client");
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": "bench"}}))
        .expect("namespace");
    let _ = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await;
    let api: Api<Service> = Api::namespaced(client, "bench");
    let started = Instant::now();
    let mut ips = Vec::new();
    for i in 0..services {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("svc-{i}")},
            "spec": {"ports": [{"name": "http", "port": 80}]}
        }))
        .expect("service");
        let created = api
            .create(&PostParams::default(), &svc)
            .await
            .expect("create");
        ips.push(created.spec.and_then(|s| s.cluster_ip).unwrap_or_default());
    }
    eprintln!(
        "{services} Services created in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let names: Vec<String> = (0..services)
        .map(|i| format!("svc-{i}.bench.svc.cluster.local"))
        .collect();
    // Wait until the last one resolves through the agent's DNS.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, answered) = sample(dns, &names[services - 1..], 1);
        if answered == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster DNS never served the Services:\n{}",
            server.tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // dnsperf input: every Service name once, plus 10 % names that do not exist.
    let file = dir.path().join("queries.txt");
    let mut f = std::fs::File::create(&file).expect("queries");
    for (i, n) in names.iter().enumerate() {
        writeln!(f, "{n} A").ok();
        if i % 10 == 0 {
            writeln!(f, "missing-{i}.bench.svc.cluster.local A").ok();
        }
    }
    drop(f);
    let mut rows = measure("rampart", dns, &file, &names, seconds);
    drop(server);

    // unbound with the same names as local data.
    let port = free_port();
    let conf = dir.path().join("unbound.conf");
    let mut c = format!(
        "server:\n  interface: 127.0.0.1@{port}\n  port: {port}\n  do-daemonize: no\n  chroot: \"\"\n  username: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  num-threads: 2\n  so-reuseport: yes\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 0\n  access-control: 127.0.0.0/8 allow\n  do-ip6: no\n  local-zone: \"cluster.local.\" static\n",
        d = dir.path().display()
    );
    for (n, ip) in names.iter().zip(&ips) {
        c.push_str(&format!("  local-data: \"{n}. 5 IN A {ip}\"\n"));
    }
    std::fs::write(&conf, c).expect("unbound.conf");
    let mut unbound = Command::new("unbound")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .spawn()
        .expect("unbound");
    let ub: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(20);
    while sample(ub, &names[..1], 1).1 == 0 {
        assert!(Instant::now() < deadline, "unbound did not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    rows.extend(measure("unbound", ub, &file, &names, seconds));
    let _ = unbound.kill();
    let _ = unbound.wait();

    println!("\nCluster DNS, {services} Services, {seconds} s per dnsperf run (dnsperf -c 4 -T 2 -q 500), same 2-core machine");
    println!(
        "{:<34} {:>10} {:>10} {:>8} {:>9} {:>9}",
        "", "q/s", "mean ms", "lost", "p50 ms", "p99 ms"
    );
    for r in rows {
        println!(
            "{:<34} {:>10.0} {:>10.3} {:>8} {:>9.3} {:>9.3}",
            r.what, r.qps, r.mean, r.lost, r.p50, r.p99
        );
    }
    println!("goal: ≥ 30,000 q/s for cluster names, p99 < 1 ms (p50/p99 from a sequential sampler: idle on the max-rate row, under the load on the other)");
}
