//! Container runtime benchmark: create + start + wait + delete of the same busybox bundle
//! (`/bin/true`) by our runtime, Debian's `crun` and `runc`, side by side in one run.
//! Figures, never pass/fail. Needs root and `crun`/`runc` on PATH (each missing runtime is
//! skipped with a note). Run: `cargo bench --profile ci --bench runtime` (env
//! `BENCH_RUNS=N`, default 30).
//!
//! Ours goes through a running pod shim (`rampart __shim`) as the kubelet does: one JSON
//! request to run, the exit seen through the shim's state (polled every 0.5 ms), one to
//! remove. It mounts an overlayfs root (the bundle's rootfs as the only lower layer),
//! creates a cgroup in cpu/cpuacct/memory/pids, compiles and installs the default seccomp
//! profile. crun and runc are executed per container (`<rt> run --bundle`), with the spec
//! `<rt> spec` writes (their default namespaces, masked paths and capabilities), a
//! read-only rootfs and their default seccomp-less spec.
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rampart::kubelet::runtime::shim::{Request, Response};
use rampart::kubelet::runtime::spec::{self, Process, Root, Spec, DEFAULT_CAPS};

fn main() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("runtime benchmark skipped: needs root");
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir().expect("tempdir");
    let rootfs = dir.path().join("bundle/rootfs");
    make_rootfs(&rootfs);
    println!("container create+start+wait+delete of /bin/true, {runs} runs each (ms)");
    println!(
        "{:<10} {:>8} {:>8} {:>8} {:>8}",
        "runtime", "mean", "p50", "p90", "max"
    );
    report("rampart", ours(dir.path(), &rootfs, runs));
    for rt in ["crun", "runc"] {
        match external(rt, &dir.path().join("bundle"), runs) {
            Ok(t) => report(rt, t),
            Err(e) => println!("{rt:<10} skipped: {e}"),
        }
    }
}

fn report(name: &str, mut t: Vec<Duration>) {
    if t.is_empty() {
        println!("{name:<10} no successful run");
        return;
    }
    t.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = t.iter().map(|d| ms(*d)).sum::<f64>() / t.len() as f64;
    println!(
        "{name:<10} {mean:>8.1} {:>8.1} {:>8.1} {:>8.1}",
        ms(t[t.len() / 2]),
        ms(t[(t.len() * 9 / 10).min(t.len() - 1)]),
        ms(t[t.len() - 1])
    );
}

fn make_rootfs(root: &Path) {
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir rootfs");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    for a in ["true", "sh"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).expect("symlink");
    }
}

fn ours(dir: &Path, rootfs: &Path, runs: usize) -> Vec<Duration> {
    let pod = dir.join("pod");
    let st = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["__shim", "--dir"])
        .arg(&pod)
        .args(["--hostname", "bench"])
        .status()
        .expect("start the shim");
    assert!(st.success(), "shim did not start");
    let sock = pod.join("shim.sock");
    let mut out = Vec::new();
    for i in 0..runs {
        let id = format!("c{i}");
        let spec = Spec {
            process: Process {
                args: vec!["/bin/true".into()],
                env: vec!["PATH=/bin".into()],
                cwd: "/".into(),
                capabilities: DEFAULT_CAPS.iter().map(|c| c.to_string()).collect(),
                ..Default::default()
            },
            root: Root {
                layers: vec![rootfs.to_path_buf()],
                readonly: false,
            },
            linux: spec::Linux {
                seccomp: Some("runtime/default".into()),
                masked_paths: true,
                cgroups_path: Some(format!("rampart-bench-{}/{id}", std::process::id())),
                ..Default::default()
            },
            ..Default::default()
        };
        let t0 = Instant::now();
        let r = call(
            &sock,
            &Request::Run {
                id: id.clone(),
                spec: Box::new(spec),
            },
        );
        if let Some(e) = r.error {
            println!("rampart run failed: {e}");
            break;
        }
        loop {
            let s = call(&sock, &Request::State);
            if s.containers.iter().any(|c| c.id == id && !c.running) {
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        call(&sock, &Request::Remove { id });
        out.push(t0.elapsed());
    }
    call(&sock, &Request::Shutdown);
    for _ in 0..100 {
        if UnixStream::connect(&sock).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for c in ["cpu", "cpuacct", "memory", "pids"] {
        let _ = std::fs::remove_dir(format!(
            "/sys/fs/cgroup/{c}/rampart-bench-{}",
            std::process::id()
        ));
    }
    out
}

fn call(sock: &PathBuf, req: &Request) -> Response {
    let mut s = UnixStream::connect(sock).expect("connect to the shim");
    let mut body = serde_json::to_vec(req).expect("encode");
    body.push(b'\n');
    s.write_all(&body).expect("send");
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).expect("answer");
    serde_json::from_str(&line).expect("decode")
}

fn external(rt: &str, bundle: &Path, runs: usize) -> Result<Vec<Duration>, String> {
    let which = Command::new("sh")
        .args(["-c", &format!("command -v {rt}")])
        .output()
        .map_err(|e| e.to_string())?;
    if !which.status.success() {
        return Err(format!("{rt} not installed (apt-get install {rt})"));
    }
    let _ = std::fs::remove_file(bundle.join("config.json"));
    let st = Command::new(rt)
        .arg("spec")
        .current_dir(bundle)
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err(format!("{rt} spec failed"));
    }
    let path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    cfg["process"]["args"] = serde_json::json!(["/bin/true"]);
    cfg["process"]["terminal"] = serde_json::json!(false);
    cfg["root"]["readonly"] = serde_json::json!(true);
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&cfg).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for i in 0..runs {
        let id = format!("rampart-bench-{rt}-{}-{i}", std::process::id());
        let t0 = Instant::now();
        let mut cmd = Command::new(rt);
        if rt == "crun" {
            // crun 1.8 refuses cgroup v1 "hybrid" hosts (an empty unified mount) outright;
            // it runs only with its cgroup manager off, i.e. doing less work than the others.
            cmd.arg("--cgroup-manager=disabled");
        }
        let st = cmd
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| e.to_string())?;
        if !st.status.success() {
            return Err(format!(
                "{rt} run failed: {}",
                String::from_utf8_lossy(&st.stderr).trim()
            ));
        }
        out.push(t0.elapsed());
    }
    Ok(out)
}
