//! Scheduler benchmark: a real `rampart server` (the binary cargo built for this profile, with
//! its scheduler and controllers under leader election, no embedded agent), 5,000 Node objects
//! (4 cores, 16Gi, 110 pods each, Ready), then 10,000 pods created by 32 clients as fast as the
//! API takes them while the scheduler binds them; then a burst of 1,000 bare pods (no owner,
//! created directly);
//! then the scheduler alone on a backlog of 10,000 pending pods (created while the benchmark
//! holds the scheduler's leader Lease, then released); then one Deployment of 1,000 replicas
//! created through the API (Deployment → ReplicaSet → slow-start pod creates → scheduler),
//! timed from its create until every pod is bound.
//!
//! Prints: node and pod create rates, and the scheduling throughput — pods bound per second
//! from the first create to the last binding, as seen by a watch — plus how far the last
//! binding trailed the last create. Never fails a build.
//!
//! Run: `cargo bench --profile ci --bench scheduler` (env `BENCH_SCALE=0.2` for a quick pass,
//! `BENCH_DIR`, `RAMPART_BIN`, `RAMPART_BENCH_LOGS=1` as for the api benchmark;
//! `BENCH_PHASES=backlog` runs only the named phases after the nodes). The server runs
//! with `--node-monitor-grace-period 1h`: the benchmark does not renew 5,000 node leases.
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

use support::{client, server_binary, Server};

const CLIENTS: usize = 32;

fn node(name: &str, i: usize) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {
        "kubernetes.io/hostname": name,
        "topology.kubernetes.io/zone": format!("zone-{}", i % 3),
    }}}))
    .expect("node")
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // After the command name: utime and stime are fields 14 and 15 (indexes 11, 12 here).
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf(3) only reads a configuration value; it has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / hz)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn pod(name: &str, scheduler: &str) -> Pod {
    serde_json::from_value(
        json!({"metadata": {"name": name}, "spec": {"schedulerName": scheduler, "containers": [{
        "name": "app", "image": "registry.k8s.io/pause:3.10",
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}),
    )
    .expect("pod")
}

/// Run `total` jobs over the clients, `CLIENTS` at a time; returns (wall, errors).
async fn fan_out<F, Fut>(clients: &[kube::Client], total: usize, job: F) -> (Duration, usize)
where
    F: Fn(kube::Client, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), kube::Error>> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        let (c, job, next, errors) = (c.clone(), job.clone(), next.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                if let Err(e) = job(c.clone(), i).await {
                    if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        println!("first error: {e}");
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (start.elapsed(), errors.load(Ordering::Relaxed))
}

/// Count pods of `ns` with a node, from a watch; resolves when `want` are bound, returning
/// when the first and the last binding were seen.
fn watch_bound(
    c: kube::Client,
    ns: &str,
    want: usize,
) -> tokio::task::JoinHandle<Option<(Instant, Instant)>> {
    let api: Api<Pod> = Api::namespaced(c, ns);
    tokio::spawn(async move {
        let mut bound = HashSet::new();
        let mut first = None;
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects());
        while let Some(p) = stream.next().await {
            let Ok(p) = p else { continue };
            if p.spec.and_then(|s| s.node_name).is_some() {
                let now = Instant::now();
                let first = *first.get_or_insert(now);
                bound.insert(p.metadata.name.unwrap_or_default());
                if bound.len() >= want {
                    return Some((first, now));
                }
            }
        }
        None
    })
}

/// From a watch of `ns`: when the first pod appeared, when `want` pods existed and when
/// `want` were bound.
struct Seen {
    first_pod: Instant,
    all_created: Instant,
    all_bound: Instant,
}

fn watch_created_and_bound(
    c: kube::Client,
    ns: &str,
    want: usize,
) -> tokio::task::JoinHandle<Option<Seen>> {
    let api: Api<Pod> = Api::namespaced(c, ns);
    tokio::spawn(async move {
        let (mut seen, mut bound) = (HashSet::new(), HashSet::new());
        let (mut first_pod, mut all_created) = (None, None);
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects());
        while let Some(p) = stream.next().await {
            let Ok(p) = p else { continue };
            let now = Instant::now();
            first_pod.get_or_insert(now);
            let name = p.metadata.name.clone().unwrap_or_default();
            seen.insert(name.clone());
            if seen.len() >= want {
                all_created.get_or_insert(now);
            }
            if p.spec.and_then(|s| s.node_name).is_some() {
                bound.insert(name);
                if bound.len() >= want {
                    return Some(Seen {
                        first_pod: first_pod.unwrap_or(now),
                        all_created: all_created.unwrap_or(now),
                        all_bound: now,
                    });
                }
            }
        }
        None
    })
}

/// The real 1,000-replica Deployment: one create through the API, then the Deployment
/// controller makes a ReplicaSet, the ReplicaSet controller creates the pods in slow-start
/// batches (1, 2, 4, ... 500 per sync, as upstream) and the scheduler binds them.
async fn deployment_phase(
    clients: &[kube::Client],
    pid: u32,
    ns: &str,
    replicas: usize,
) -> Result<(), String> {
    let c = &clients[0];
    namespace(c, ns).await?;
    let watch = watch_created_and_bound(c.clone(), ns, replicas);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "bench"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "bench"}},
            "template": {"metadata": {"labels": {"app": "bench"}}, "spec": {"containers": [{
                "name": "app", "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}
    }))
    .map_err(|e| e.to_string())?;
    let cpu0 = cpu_time(pid);
    let start = Instant::now();
    Api::<Deployment>::namespaced(c.clone(), ns)
        .create(&PostParams::default(), &deploy)
        .await
        .map_err(|e| format!("deployment: {e}"))?;
    let seen = match tokio::time::timeout(Duration::from_secs(600), watch).await {
        Ok(Ok(Some(s))) => s,
        _ => {
            return Err(format!(
                "not all {replicas} pods of the Deployment were bound within 10 minutes"
            ))
        }
    };
    let cpu = cpu_time(pid).saturating_sub(cpu0);
    let at = |t: Instant| t.duration_since(start).as_secs_f64();
    println!(
        "{ns}: Deployment of {replicas} replicas: first pod {:.2} s after the create, \
         all {replicas} pods created at {:.2} s ({:.0} creates/s after the first), \
         all bound at {:.2} s → {:.0} pods/s end to end; \
         server CPU {:.0} µs/pod (RS creates + schedule + bind + events); load {}",
        at(seen.first_pod),
        at(seen.all_created),
        replicas as f64
            / seen
                .all_created
                .duration_since(seen.first_pod)
                .as_secs_f64()
                .max(1e-3),
        at(seen.all_bound),
        replicas as f64 / at(seen.all_bound).max(1e-3),
        cpu.as_secs_f64() * 1e6 / replicas as f64,
        load_average(),
    );
    Ok(())
}

/// Write the scheduler's leader Lease: `holder` for an hour (the running scheduler sees it
/// held by another at its next renewal, within 2 s, and stops), or empty with a 1 s duration
/// (a release: the scheduler campaigns every 2 s and leads again). Compare-and-swap, retried.
async fn set_scheduler_lease(c: &kube::Client, holder: Option<&str>) -> Result<(), String> {
    let api: Api<Lease> = Api::namespaced(c.clone(), "kube-system");
    for _ in 0..20 {
        let mut lease = api
            .get("kube-scheduler")
            .await
            .map_err(|e| format!("scheduler lease: {e}"))?;
        let mut spec = lease.spec.clone().unwrap_or_default();
        let now = MicroTime(jiff::Timestamp::now());
        spec.holder_identity = holder.map(str::to_string);
        spec.lease_duration_seconds = Some(if holder.is_some() { 3600 } else { 1 });
        spec.renew_time = Some(now.clone());
        spec.acquire_time = Some(now);
        lease.spec = Some(spec);
        match api
            .replace("kube-scheduler", &PostParams::default(), &lease)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(format!("scheduler lease: {e}")),
        }
    }
    Err("scheduler lease: too many conflicts".into())
}

/// The scheduler alone on a backlog, as `10,000 pending pods` reads: the benchmark holds the
/// scheduler's Lease while it creates the pods (nothing schedules them), then releases it; the
/// scheduler leads again, lists the pending pods and binds them all. Throughput is pods bound
/// per second from the first binding to the last (the start-up — campaign, list of nodes and
/// pods — is printed apart).
async fn backlog_phase(
    clients: &[kube::Client],
    pid: u32,
    ns: &str,
    total: usize,
) -> Result<(), String> {
    let c = &clients[0];
    namespace(c, ns).await?;
    set_scheduler_lease(c, Some("scheduler-benchmark")).await?;
    // The scheduler's renewal comes every 2 s; after it the scheduler has stopped.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ns_owned = ns.to_string();
    let (create_wall, errors) = fan_out(clients, total, move |c, i| {
        let api: Api<Pod> = Api::namespaced(c, &ns_owned);
        async move {
            api.create(
                &PostParams::default(),
                &pod(&format!("b-{i:05}"), "default-scheduler"),
            )
            .await
            .map(|_| ())
        }
    })
    .await;
    let watch = watch_bound(c.clone(), ns, total);
    // Let the watch list the pending pods first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pending = Api::<Pod>::namespaced(c.clone(), ns)
        .list_metadata(&kube::api::ListParams::default().fields("spec.nodeName="))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0);
    println!("{ns}: {pending} pods pending; releasing the scheduler's lease (server pid {pid})");
    let cpu0 = cpu_time(pid);
    let released = Instant::now();
    set_scheduler_lease(c, None).await?;
    let (first, last) = match tokio::time::timeout(Duration::from_secs(600), watch).await {
        Ok(Ok(Some(t))) => t,
        _ => {
            return Err(format!(
                "not all {total} pods of {ns} were bound within 10 minutes"
            ))
        }
    };
    let cpu = cpu_time(pid).saturating_sub(cpu0);
    let binding = last.duration_since(first);
    println!(
        "{ns}: {total} pods created with no scheduler leading in {:.2} s ({:.0} creates/s, {errors} errors), \
         {pending} pending at the release; first binding {:.2} s after the release (campaign, lists); \
         all bound {:.2} s later → scheduling throughput {:.0} pods/s ({:.0} pods/s counting from the release); \
         server CPU {:.0} µs/pod (schedule + bind + events); load {}",
        create_wall.as_secs_f64(),
        total as f64 / create_wall.as_secs_f64(),
        first.duration_since(released).as_secs_f64(),
        binding.as_secs_f64(),
        total as f64 / binding.as_secs_f64().max(1e-3),
        total as f64 / last.duration_since(released).as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / total as f64,
        load_average(),
    );
    Ok(())
}

async fn namespace(c: &kube::Client, ns: &str) -> Result<(), String> {
    Api::<Namespace>::all(c.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))
                .map_err(|e| e.to_string())?,
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Creates alone: pods for a scheduler that does not exist, so nothing binds them.
async fn creates_only(clients: &[kube::Client], pid: u32, total: usize) -> Result<(), String> {
    namespace(&clients[0], "bench-unscheduled").await?;
    let cpu0 = cpu_time(pid);
    let (wall, errors) = fan_out(clients, total, |c, i| {
        let api: Api<Pod> = Api::namespaced(c, "bench-unscheduled");
        async move {
            api.create(&PostParams::default(), &pod(&format!("u-{i:05}"), "nobody"))
                .await
                .map(|_| ())
        }
    })
    .await;
    let cpu = cpu_time(pid).saturating_sub(cpu0);
    println!(
        "creates alone: {total} pods in {:.2} s ({:.0} creates/s, {errors} errors); server CPU {:.0} µs/pod; load {}",
        wall.as_secs_f64(),
        total as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / total as f64,
        load_average(),
    );
    Ok(())
}

async fn pods_phase(
    clients: &[kube::Client],
    pid: u32,
    ns: &str,
    total: usize,
) -> Result<(), String> {
    let c = &clients[0];
    namespace(c, ns).await?;
    let watch = watch_bound(c.clone(), ns, total);
    // Let the watch list (empty) before the first create.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu0 = cpu_time(pid);
    let start = Instant::now();
    let ns_owned = ns.to_string();
    let (create_wall, errors) = fan_out(clients, total, move |c, i| {
        let api: Api<Pod> = Api::namespaced(c, &ns_owned);
        async move {
            api.create(
                &PostParams::default(),
                &pod(&format!("p-{i:05}"), "default-scheduler"),
            )
            .await
            .map(|_| ())
        }
    })
    .await;
    let created = start.elapsed();
    let done = match tokio::time::timeout(Duration::from_secs(600), watch).await {
        Ok(Ok(Some((_, t)))) => t,
        _ => {
            return Err(format!(
                "not all {total} pods of {ns} were bound within 10 minutes"
            ))
        }
    };
    let wall = done.duration_since(start);
    let cpu = cpu_time(pid).saturating_sub(cpu0);
    println!(
        "{ns}: {total} pods created in {:.2} s ({:.0} creates/s, {errors} errors); all bound {:.2} s after the first create \
         → scheduling throughput {:.0} pods/s; last binding {:.2} s after the last create; \
         server CPU {:.0} µs/pod (create + schedule + bind + events); load {}",
        create_wall.as_secs_f64(),
        total as f64 / create_wall.as_secs_f64(),
        wall.as_secs_f64(),
        total as f64 / wall.as_secs_f64(),
        done.saturating_duration_since(start + created).as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / total as f64,
        load_average(),
    );
    Ok(())
}

async fn run(kubeconfig: &Path, pid: u32, scale: f64) -> Result<(), String> {
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(client(kubeconfig).await?);
    }
    let nodes = ((5000.0 * scale) as usize).max(10);
    let pods = ((10_000.0 * scale) as usize).max(10);
    let burst = ((1000.0 * scale) as usize).max(10);
    let (wall, errors) = fan_out(&clients, nodes, |c, i| async move {
        let api: Api<Node> = Api::all(c);
        let name = format!("node-{i:05}");
        api.create(&PostParams::default(), &node(&name, i)).await?;
        let res = json!({"cpu": "4", "memory": "16Gi", "pods": "110"});
        let t = jiff::Timestamp::now();
        let now = jiff::Timestamp::from_second(t.as_second())
            .unwrap_or(t)
            .to_string();
        let status = json!({"status": {"capacity": res, "allocatable": res, "conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "bench",
             "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map(|_| ())
    })
    .await;
    println!(
        "{nodes} nodes created and made Ready in {:.2} s ({:.0} nodes/s, {errors} errors)",
        wall.as_secs_f64(),
        nodes as f64 / wall.as_secs_f64()
    );
    // `BENCH_PHASES=backlog` (comma-separated: creates, pods, burst, backlog, deployment) runs a subset.
    let phases = std::env::var("BENCH_PHASES").unwrap_or_default();
    let on = |p: &str| phases.is_empty() || phases.split(',').any(|x| x.trim() == p);
    if on("creates") {
        creates_only(&clients, pid, burst).await?;
    }
    if on("pods") {
        pods_phase(&clients, pid, "bench-sched", pods).await?;
    }
    if on("burst") {
        pods_phase(&clients, pid, "bench-burst", burst).await?;
    }
    if on("backlog") {
        backlog_phase(&clients, pid, "bench-backlog", pods).await?;
    }
    if on("deployment") {
        deployment_phase(&clients, pid, "bench-deploy", burst).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let bin = match server_binary() {
        Ok(b) => b,
        Err(e) => {
            println!("scheduler benchmark skipped: {e}");
            return;
        }
    };
    let base = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            bin.parent()
                .map(|p| p.join("bench-tmp"))
                .unwrap_or_else(|| PathBuf::from("target/bench-tmp"))
        });
    if let Err(e) = std::fs::create_dir_all(&base) {
        println!(
            "scheduler benchmark skipped: cannot create {}: {e}",
            base.display()
        );
        return;
    }
    let dir = match tempfile::tempdir_in(&base) {
        Ok(d) => d,
        Err(e) => {
            println!("scheduler benchmark skipped: temp dir: {e}");
            return;
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut server = match Server::start_with(
        &bin,
        dir.path(),
        &["--disable-agent", "--node-monitor-grace-period", "1h"],
        &[],
    ) {
        Ok(s) => s,
        Err(e) => {
            println!("scheduler benchmark skipped: {e}");
            return;
        }
    };
    println!(
        "scheduler benchmark: server {}, scale {scale}, {} cores, load average {}",
        bin.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
    );
    let started = Instant::now();
    let pid = server.child.id();
    if let Err(e) = run(&dir.path().join("admin.kubeconfig"), pid, scale).await {
        println!("scheduler benchmark aborted: {e}");
        if let Some(status) = server.exited() {
            println!(
                "the server exited ({status}); last log lines:\n{}",
                server.tail()
            );
        }
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    drop(server);
}
