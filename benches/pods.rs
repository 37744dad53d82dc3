//! Pod start latency and agent memory with a real `rampart server` and its embedded agent
//! (one process: API server, controllers and kubelet). Figures, never pass/fail. Needs root
//! (namespaces, mounts, cgroups) and Debian's `busybox-static`. Run:
//! `cargo bench --profile ci --bench pods` (env `BENCH_PODS=N`, default 30; `BENCH_RUNS=N`
//! single-pod runs, default 10).
//!
//! - start latency: create → `status.phase == Running` as the API reports it (polled every
//!   10 ms), local image (`imagePullPolicy: Never`, imported first), `spec.nodeName` set (no
//!   scheduler in the path): one pod at a time, then N pods created at once;
//! - memory: VmRSS of the server process (API server + controllers + kubelet in one) with
//!   the N pods running and idle for 10 s, and the sum of the pod shims' VmRSS (one
//!   `rampart __shim` per pod), counted apart. The containers themselves are not counted.
#![allow(unsafe_code)] // test support (the shared kubelet fixtures): each block says why

#[path = "../tests/kubelet_support/mod.rs"]
mod kubelet_support;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

fn main() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("pods benchmark skipped: needs root");
        return;
    }
    if let Err(e) = kubelet_support::privileged() {
        println!("pods benchmark skipped: {e}");
        return;
    }
    let pods: usize = env_num("BENCH_PODS", 30);
    let runs: usize = env_num("BENCH_RUNS", 10);
    let bin = match support::server_binary() {
        Ok(b) => b,
        Err(e) => {
            println!("pods benchmark skipped: {e}");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let node = "bench-pods";
    let cgroup_root = format!("rampart-bench-{}", std::process::id());
    let _cleanup = kubelet_support::Cleanup {
        cgroup_root: cgroup_root.clone(),
        data_dir: dir.path().to_path_buf(),
    };
    let server = support::Server::start_with(
        &bin,
        dir.path(),
        &[
            "--node-name",
            node,
            "--kubelet-port",
            "0",
            "--kubelet-cgroup-root",
            &cgroup_root,
            "--cluster-cidr",
            "10.249.0.0/16",
            "--disable-kube-proxy",
            "--disable-network-policy",
        ],
        &[],
    );
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            println!("pods benchmark failed: {e}");
            return;
        }
    };
    let tar = dir.path().join("busybox.tar");
    std::fs::write(
        &tar,
        kubelet_support::docker_archive("busybox:bench", &[kubelet_support::busybox_layer()]),
    )
    .expect("image tarball");
    let out = std::process::Command::new(&bin)
        .args(["images", "import", "--data-dir"])
        .arg(dir.path().join("agent"))
        .arg(&tar)
        .output()
        .expect("rampart images import");
    if !out.status.success() {
        println!(
            "pods benchmark failed: image import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let pid = server.child.id();
    if let Err(e) = rt.block_on(run(
        &dir.path().join("admin.kubeconfig"),
        node,
        pid,
        pods,
        runs,
    )) {
        println!("pods benchmark failed: {e}\n{}", server.tail());
    }
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": false,
            "containers": [{"name": "c", "image": "busybox:bench",
                            "imagePullPolicy": "Never", "command": ["sleep", "3600"]}],
        }
    }))
    .expect("pod")
}

/// Create the pod; the time until the API reports it Running.
async fn start_one(api: &Api<Pod>, name: &str, node: &str) -> Result<Duration, String> {
    let t0 = Instant::now();
    api.create(&PostParams::default(), &pod(name, node))
        .await
        .map_err(|e| format!("create {name}: {e}"))?;
    let deadline = t0 + Duration::from_secs(60);
    loop {
        if let Ok(p) = api.get(name).await {
            if p.status.and_then(|s| s.phase).as_deref() == Some("Running") {
                return Ok(t0.elapsed());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{name} not Running after 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn delete_all(api: &Api<Pod>) {
    let _ = api
        .delete_collection(&DeleteParams::default(), &Default::default())
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if api
            .list(&Default::default())
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(false)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn report(what: &str, mut t: Vec<Duration>) {
    t.sort();
    let pct = |p: f64| t[((t.len() as f64 * p).ceil() as usize).clamp(1, t.len()) - 1];
    println!(
        "{what:<34} n={:<3} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
        t.len(),
        support::ms(pct(0.5)),
        support::ms(pct(0.99)),
        support::ms(t[t.len() - 1]),
    );
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The shims serving pods below `data_dir` (their command line names the pod directory).
fn shims(data_dir: &Path) -> Vec<u32> {
    let want = data_dir.to_string_lossy().to_string();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("__shim") && c.contains(&want)
                })
                .unwrap_or(false)
        })
        .collect()
}

async fn run(
    kubeconfig: &Path,
    node: &str,
    pid: u32,
    pods: usize,
    runs: usize,
) -> Result<(), String> {
    let client = support::client(kubeconfig).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = nodes.get(node).await.ok().is_some_and(|n| {
            n.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("node {node} never became Ready"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let idle_rss = rss_kib(pid).unwrap_or(0);
    println!("pod start latency, create -> Running (API), local image, nodeName set");
    let mut single = Vec::new();
    for i in 0..runs {
        single.push(start_one(&api, &format!("one-{i}"), node).await?);
        delete_all(&api).await;
    }
    report("1 pod at a time", single);
    let started = Instant::now();
    let tasks: Vec<_> = (0..pods)
        .map(|i| {
            let api = api.clone();
            let node = node.to_string();
            tokio::spawn(async move { start_one(&api, &format!("many-{i}"), &node).await })
        })
        .collect();
    let mut many = Vec::new();
    for t in tasks {
        many.push(t.await.map_err(|e| e.to_string())??);
    }
    let wall = started.elapsed();
    report(&format!("{pods} pods created at once"), many);
    println!(
        "{:<34} {:.1} ms until all {pods} Running",
        "",
        support::ms(wall)
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let server_rss = rss_kib(pid).unwrap_or(0);
    let data_dir = kubeconfig.parent().unwrap_or(Path::new("/"));
    let shim_pids = shims(data_dir);
    let shim_rss: u64 = shim_pids.iter().filter_map(|p| rss_kib(*p)).sum();
    println!("memory (VmRSS), server + embedded agent in one process");
    println!(
        "{:<34} {:.1} MiB",
        "server, no pods (after start)",
        idle_rss as f64 / 1024.0
    );
    println!(
        "{:<34} {:.1} MiB",
        format!("server, {pods} pods running, idle"),
        server_rss as f64 / 1024.0
    );
    println!(
        "{:<34} {:.1} MiB total, {:.2} MiB each",
        format!("{} pod shims", shim_pids.len()),
        shim_rss as f64 / 1024.0,
        shim_rss as f64 / 1024.0 / shim_pids.len().max(1) as f64
    );
    delete_all(&api).await;
    Ok(())
}
