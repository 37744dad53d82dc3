//! Store benchmark: Rampart's RocksDB store against a single-node etcd (Debian `etcd-server`)
//! started on a temporary directory of the same disk, in the same run.
//!
//! Measures durable writes (unique keys, 1 KiB values; a `create` for us, a `put` for etcd) with
//! 1 and 64 concurrent writers — throughput and p50/p99 latency — and watch delivery latency
//! (time from issuing a write to its event arriving at a watcher). Prints figures and ratios;
//! never fails a build. Run: `cargo bench --profile ci --bench store` (env `BENCH_SCALE=0.2` for
//! a quick pass).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use rampart::store::{Backend, RocksBackend, RocksConfig};

mod support;

const VALUE_SIZE: usize = 1024;

struct Figures {
    ops: usize,
    wall: Duration,
    lat: Vec<Duration>,
}

impl Figures {
    fn throughput(&self) -> f64 {
        self.ops as f64 / self.wall.as_secs_f64()
    }
    fn pct(&self, p: f64) -> Duration {
        let mut v = self.lat.clone();
        v.sort();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_etcd(base: &std::path::Path) -> Option<Etcd> {
    let bin = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let dir = tempfile::tempdir_in(base).ok()?;
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(bin)
        .args(["--name", "bench", "--data-dir"])
        .arg(dir.path().join("etcd"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("bench={peer_url}")])
        .args([
            "--log-level",
            "error",
            "--quota-backend-bytes",
            "8589934592",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let etcd = Etcd {
        child,
        url,
        _dir: dir,
    };
    for _ in 0..100 {
        if let Ok(mut c) = etcd_client::Client::connect([etcd.url.as_str()], None).await {
            if c.status().await.is_ok() {
                return Some(etcd);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn rampart_writes(
    store: &Arc<RocksBackend>,
    writers: usize,
    per: usize,
    tag: &str,
) -> Figures {
    let value = Bytes::from(vec![b'v'; VALUE_SIZE]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, value, tag) = (store.clone(), value.clone(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let t = Instant::now();
                store
                    .create(&format!("/bench/{tag}/{w}/{i}"), value.clone())
                    .await
                    .expect("rampart write");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("writer task"));
    }
    Figures {
        ops: writers * per,
        wall: start.elapsed(),
        lat,
    }
}

async fn etcd_writes(
    client: &etcd_client::Client,
    writers: usize,
    per: usize,
    tag: &str,
) -> Figures {
    let value = vec![b'v'; VALUE_SIZE];
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (mut kv, value, tag) = (client.kv_client(), value.clone(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let t = Instant::now();
                kv.put(format!("/bench/{tag}/{w}/{i}"), value.clone(), None)
                    .await
                    .expect("etcd put");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("writer task"));
    }
    Figures {
        ops: writers * per,
        wall: start.elapsed(),
        lat,
    }
}

async fn rampart_watch_latency(store: &Arc<RocksBackend>, n: usize) -> Figures {
    let mut watch = store
        .watch("/watch/", store.current_revision())
        .await
        .expect("watch");
    let value = Bytes::from(vec![b'w'; VALUE_SIZE]);
    let start = Instant::now();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let writer = store.clone();
        let v = value.clone();
        let put = tokio::spawn(async move { writer.create(&format!("/watch/{i}"), v).await });
        let ev = watch.next().await.expect("event").expect("event ok");
        lat.push(t.elapsed());
        assert!(ev.key.ends_with(&format!("/{i}")));
        put.await.expect("join").expect("write");
    }
    Figures {
        ops: n,
        wall: start.elapsed(),
        lat,
    }
}

async fn etcd_watch_latency(client: &etcd_client::Client, n: usize) -> Figures {
    let mut wc = client.watch_client();
    let opts = etcd_client::WatchOptions::new().with_prefix();
    let mut stream = wc.watch("/watch/", Some(opts)).await.expect("etcd watch");
    let value = vec![b'w'; VALUE_SIZE];
    let start = Instant::now();
    let mut lat = Vec::with_capacity(n);
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        let t = Instant::now();
        let mut kv = client.kv_client();
        let v = value.clone();
        let put = tokio::spawn(async move { kv.put(format!("/watch/{i}"), v, None).await });
        while pending.is_empty() {
            let resp = stream
                .message()
                .await
                .expect("etcd watch")
                .expect("etcd watch open");
            pending.extend(resp.events().iter().map(|_| ()));
        }
        pending.pop_front();
        lat.push(t.elapsed());
        put.await.expect("join").expect("put");
    }
    Figures {
        ops: n,
        wall: start.elapsed(),
        lat,
    }
}

fn row(name: &str, ours: &Figures, peer: Option<&Figures>) {
    let peer_cols = match peer {
        Some(p) => format!(
            "{:>10.0} {:>8.2} {:>8.2} | {:>6.2}x {:>6.2}x",
            p.throughput(),
            ms(p.pct(0.5)),
            ms(p.pct(0.99)),
            ours.throughput() / p.throughput(),
            ms(p.pct(0.99)) / ms(ours.pct(0.99)).max(1e-9),
        ),
        None => "etcd not available".into(),
    };
    println!(
        "{name:<22} {:>10.0} {:>8.2} {:>8.2} | {peer_cols}",
        ours.throughput(),
        ms(ours.pct(0.5)),
        ms(ours.pct(0.99)),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let n = |x: usize| ((x as f64 * scale) as usize).max(1);
    // Same disk for both: a directory next to the build output, not /tmp (which may be tmpfs).
    let base = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp");
    let base = std::env::var_os("BENCH_DIR")
        .map(Into::into)
        .unwrap_or(base);
    std::fs::create_dir_all(&base).expect("bench directory");
    let ours_dir = tempfile::tempdir_in(&base).expect("temp dir");
    let store =
        Arc::new(RocksBackend::open(RocksConfig::new(ours_dir.path())).expect("open store"));
    let etcd = start_etcd(&base).await;
    let client = match &etcd {
        Some(e) => etcd_client::Client::connect([e.url.as_str()], None)
            .await
            .ok(),
        None => None,
    };
    if client.is_none() {
        println!("note: etcd not found or did not start (apt-get install etcd-server); ours only");
    }

    // Warm both up.
    rampart_writes(&store, 4, n(50), "warm").await;
    if let Some(c) = &client {
        etcd_writes(c, 4, n(50), "warm").await;
    }

    println!(
        "store benchmark: {VALUE_SIZE}-byte values, durable (fsync) writes, dir {}",
        base.display()
    );
    println!(
        "{:<22} {:>10} {:>8} {:>8} | {:>10} {:>8} {:>8} | {:>7} {:>7}",
        "workload", "rampart/s", "p50 ms", "p99 ms", "etcd/s", "p50 ms", "p99 ms", "thru", "p99"
    );
    let mut results = Vec::new();
    for (name, writers, per) in [
        ("put, 1 writer", 1, n(1000)),
        ("put, 64 writers", 64, n(200)),
    ] {
        let ours = rampart_writes(&store, writers, per, name).await;
        let peer = match &client {
            Some(c) => Some(etcd_writes(c, writers, per, name).await),
            None => None,
        };
        row(name, &ours, peer.as_ref());
        results.push((name, ours, peer));
    }
    let ours = rampart_watch_latency(&store, n(500)).await;
    let peer = match &client {
        Some(c) => Some(etcd_watch_latency(c, n(500)).await),
        None => None,
    };
    row("write→watch event", &ours, peer.as_ref());
    println!(
        "(ratios: thru = rampart/etcd throughput, p99 = etcd p99 / rampart p99; >1 is better)"
    );
    if let Some(e) = &etcd {
        api_column(&base, &e.url, n).await;
    }
    drop(etcd);
}

// ---------------------------------------------------------------------------------------------
// The same comparison through the API: `rampart server` on its embedded RocksDB store against
// `rampart server --datastore-endpoint` on the etcd above, both real processes driven over
// HTTPS by kube-rs clients (ConfigMap creates with ~1 KiB data, then GETs), in this run.

async fn api_creates(clients: &[kube::Client], per: usize, tag: &str) -> Figures {
    use k8s_openapi::api::core::v1::ConfigMap;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (w, c) in clients.iter().enumerate() {
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(c.clone(), "default");
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let obj = ConfigMap {
                    metadata: kube::api::ObjectMeta {
                        name: Some(format!("{tag}-{w}-{i}")),
                        ..Default::default()
                    },
                    data: Some([("v".to_string(), "x".repeat(VALUE_SIZE))].into()),
                    ..Default::default()
                };
                let t = Instant::now();
                if api.create(&Default::default(), &obj).await.is_ok() {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap_or_default());
    }
    Figures {
        ops: lat.len(),
        wall: start.elapsed(),
        lat,
    }
}

async fn api_gets(clients: &[kube::Client], per: usize, name: &str) -> Figures {
    use k8s_openapi::api::core::v1::ConfigMap;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(c.clone(), "default");
        let name = name.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                if api.get(&name).await.is_ok() {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap_or_default());
    }
    Figures {
        ops: lat.len(),
        wall: start.elapsed(),
        lat,
    }
}

async fn api_column(base: &std::path::Path, etcd_url: &str, n: impl Fn(usize) -> usize) {
    let bin = match support::server_binary() {
        Ok(b) => b,
        Err(e) => {
            println!("api column skipped: {e}");
            return;
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (Ok(rocks_dir), Ok(etcd_dir)) = (tempfile::tempdir_in(base), tempfile::tempdir_in(base))
    else {
        println!("api column skipped: no temp dir in {}", base.display());
        return;
    };
    let quiet = ["--disable-agent", "--leader-elect=false"];
    let on_rocks = support::Server::start_with(&bin, rocks_dir.path(), &quiet, &[]);
    let on_etcd = support::Server::start_with(
        &bin,
        etcd_dir.path(),
        &[quiet[0], quiet[1], "--datastore-endpoint", etcd_url],
        &[],
    );
    let (Ok(on_rocks), Ok(on_etcd)) = (on_rocks, on_etcd) else {
        println!("api column skipped: a server did not start");
        return;
    };
    let mut clients = Vec::new();
    for dir in [rocks_dir.path(), etcd_dir.path()] {
        let mut v = Vec::new();
        for _ in 0..32 {
            match support::client(&dir.join("admin.kubeconfig")).await {
                Ok(c) => v.push(c),
                Err(e) => {
                    println!("api column skipped: {e}");
                    return;
                }
            }
        }
        clients.push(v);
    }
    println!();
    println!(
        "through the API: rampart server on RocksDB vs on the etcd above (same run; load average {})",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:<22} {:>10} {:>8} {:>8} | {:>10} {:>8} {:>8} | {:>7} {:>7}",
        "workload", "rocks/s", "p50 ms", "p99 ms", "etcd/s", "p50 ms", "p99 ms", "thru", "p99"
    );
    // Warm both (TLS sessions, caches).
    api_creates(&clients[0][..4], n(20), "warm").await;
    api_creates(&clients[1][..4], n(20), "warm").await;
    for (name, k, per) in [
        ("create, 1 client", 1, n(300)),
        ("create, 32 clients", 32, n(40)),
    ] {
        let tag = name.replace([',', ' '], "");
        let r = api_creates(&clients[0][..k], per, &tag).await;
        let e = api_creates(&clients[1][..k], per, &tag).await;
        row(name, &r, Some(&e));
    }
    let r = api_gets(&clients[0], n(100), "warm-0-0").await;
    let e = api_gets(&clients[1], n(100), "warm-0-0").await;
    row("get, 32 clients", &r, Some(&e));
    println!(
        "(ratios: thru = rocks/etcd throughput, p99 = etcd p99 / rocks p99; >1: RocksDB faster)"
    );
    drop(on_rocks);
    drop(on_etcd);
}
