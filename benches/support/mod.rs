//! What the benchmarks share: a real `rampart server` child process (the binary cargo built for
//! this profile), latency figures, and kube-rs clients from a kubeconfig.
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};

#[derive(Default)]
pub struct Figures {
    pub ops: usize,
    pub wall: Duration,
    pub lat: Vec<Duration>,
    pub errors: usize,
}

impl Figures {
    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    pub fn pct(&self, p: f64) -> Duration {
        let mut v = self.lat.clone();
        v.sort();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
    }
    pub fn merge(parts: Vec<(Vec<Duration>, usize)>, wall: Duration) -> Figures {
        let mut f = Figures {
            wall,
            ..Default::default()
        };
        for (lat, errors) in parts {
            f.ops += lat.len();
            f.lat.extend(lat);
            f.errors += errors;
        }
        f
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub struct Server {
    pub child: Child,
    log_tail: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    pub fn start(bin: &Path, dir: &Path) -> Result<Server, String> {
        Self::start_with(bin, dir, &[], &[])
    }

    /// Start with extra arguments and environment variables.
    pub fn start_with(
        bin: &Path,
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Server, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free loopback port: {e}"))?;
        let mut child = Command::new(bin)
            .args([
                "server",
                "--log-format",
                "json",
                "--bind-address",
                "127.0.0.1",
            ])
            .arg("--https-port")
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let log_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = log_tail.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        // Keep draining the log for the whole run so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let echo = std::env::var_os("RAMPART_BENCH_LOGS").is_some();
            let mut ready = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("server: {line}");
                }
                if !ready && line.contains("rampart server ready") {
                    ready = true;
                    let _ = tx.send(());
                }
                let mut t = tail.lock().expect("log tail");
                if t.len() == 20 {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        let mut server = Server { child, log_tail };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(()) => Ok(server),
            Err(_) => {
                let _ = server.child.kill();
                let _ = server.child.wait();
                Err(format!(
                    "the server did not print \"rampart server ready\" within 60 s; last log lines:\n{}",
                    server.tail()
                ))
            }
        }
    }

    pub fn tail(&self) -> String {
        let t = self.log_tail.lock().expect("log tail");
        t.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) with SIGTERM on the pid of our own, not yet reaped, child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server binary cargo built for this profile: next to the bench executable's `deps/`.
pub fn server_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("RAMPART_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("unexpected bench path {}", exe.display()))?;
    let bin = profile_dir.join("rampart");
    if bin.is_file() {
        return Ok(bin);
    }
    // Cargo sets this for benchmarks too when it knows the binary; fall back to it.
    if let Some(p) = option_env!("CARGO_BIN_EXE_rampart") {
        if Path::new(p).is_file() {
            return Ok(p.into());
        }
    }
    Err(format!(
        "the server binary {} is missing: build it for this profile first, e.g. \
         `cargo build --profile ci --bin rampart` (same CARGO_TARGET_DIR)",
        bin.display()
    ))
}

pub async fn client(kubeconfig: &Path) -> Result<kube::Client, String> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| format!("kubeconfig: {e}"))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("kubeconfig: {e}"))?;
    kube::Client::try_from(cfg).map_err(|e| format!("client: {e}"))
}
