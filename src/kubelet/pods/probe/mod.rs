//! Container probes and the actions hooks share with them, as upstream's `prober` and
//! `prober/worker.go`: per running container attempt one task runs the startup probe until it
//! succeeds, then liveness and readiness side by side, each with its own
//! `initialDelaySeconds` (counted from the container's start), `periodSeconds`,
//! `timeoutSeconds`, `successThreshold` and `failureThreshold` (defaults 0/10/1/1/3).
//!
//! Results go to a `Board` the pod worker reads on every sync (and is woken by): `started`
//! (no startup probe: as soon as it runs), `ready` (readiness starts false; no readiness
//! probe: ready once started), and a kill request once liveness or startup reaches its
//! failure threshold. Every failed probe becomes an `Unhealthy` event, as upstream.
//!
//! Every connection is dialled inside the pod's network namespace (the shim's, see
//! `runtime::netns`), so probes reach the pod's ports with or without the pod network.
//! Invariant: a probe task never outlives its container attempt (the worker aborts it when
//! the attempt stops, and `Probes` aborts all of them when dropped).

pub mod exec;
pub mod grpc;
pub mod http;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::Notify;

use crate::kubelet::runtime::netns::{self, NetNs};
use crate::kubelet::runtime::shim::ContainerState;

/// Where a pod's probes and hooks connect: its network namespace and address.
#[derive(Debug, Clone)]
pub struct Target {
    pub ns: NetNs,
    /// The pod's IP (upstream's default host); loopback of the pod's namespace without one.
    pub pod_ip: Option<IpAddr>,
    /// The container's named ports.
    pub ports: Vec<(String, u16)>,
    /// Where `exec` actions run (None before the container attempt is known).
    pub exec: Option<exec::ExecIn>,
}

/// One thing to do against a container.
#[derive(Debug, Clone)]
pub enum Action {
    Http(http::Get),
    Tcp(SocketAddr),
    Grpc { addr: SocketAddr, service: String },
    Exec(Vec<String>),
    Sleep(Duration),
}

pub(crate) async fn dial(
    target: &Target,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    // The pod's own address (or its loopback while it has none) is dialled inside its network
    // namespace, which works with or without the pod network; any other host a probe or hook
    // names is dialled from the node, as upstream's kubelet does.
    let in_pod = match target.pod_ip {
        Some(ip) => addr.ip() == ip,
        None => addr.ip().is_loopback(),
    };
    if in_pod {
        return netns::dial_tcp(&target.ns, addr, timeout).await;
    }
    tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// The OS error as Go words it (`connect: connection refused`).
pub(crate) fn os_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".into(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "i/o timeout".into(),
        _ => e.to_string(),
    }
}

impl Target {
    fn port(&self, p: &IntOrString) -> Result<u16, String> {
        match p {
            IntOrString::Int(n) => u16::try_from(*n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("invalid port number: {n}")),
            IntOrString::String(name) => {
                if let Ok(n) = name.parse::<u16>() {
                    return Ok(n);
                }
                self.ports
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, p)| *p)
                    .ok_or_else(|| format!("couldn't find port: {name}"))
            }
        }
    }

    async fn addr(&self, host: Option<&str>, port: u16) -> Result<(String, SocketAddr), String> {
        match host.filter(|h| !h.is_empty()) {
            None => {
                let ip = self.pod_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
                Ok((ip.to_string(), SocketAddr::new(ip, port)))
            }
            Some(h) => {
                if let Ok(ip) = h.parse::<IpAddr>() {
                    return Ok((h.to_string(), SocketAddr::new(ip, port)));
                }
                let mut found = tokio::net::lookup_host((h, port))
                    .await
                    .map_err(|e| format!("dial tcp: lookup {h}: {e}"))?;
                let a = found
                    .next()
                    .ok_or_else(|| format!("dial tcp: lookup {h}: no such host"))?;
                Ok((h.to_string(), a))
            }
        }
    }
}

fn http_get(
    target: &Target,
    g: &k8s_openapi::api::core::v1::HTTPGetAction,
) -> Result<(Option<String>, u16, http::Get), String> {
    if g.scheme.as_deref().is_some_and(|s| s != "HTTP") {
        return Err(format!(
            "scheme {} is not supported by this kubelet (HTTP only)",
            g.scheme.as_deref().unwrap_or_default()
        ));
    }
    let port = target.port(&g.port)?;
    let get = http::Get {
        host: String::new(),
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        path: g.path.clone().unwrap_or_else(|| "/".into()),
        headers: g
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
    };
    Ok((g.host.clone(), port, get))
}

impl Action {
    pub async fn from_probe(p: &Probe, target: &Target) -> Result<Action, String> {
        if let Some(g) = &p.http_get {
            let (host, port, mut get) = http_get(target, g)?;
            let (h, addr) = target.addr(host.as_deref(), port).await?;
            get.host = h;
            get.addr = addr;
            return Ok(Action::Http(get));
        }
        if let Some(t) = &p.tcp_socket {
            let port = target.port(&t.port)?;
            return Ok(Action::Tcp(target.addr(t.host.as_deref(), port).await?.1));
        }
        if let Some(g) = &p.grpc {
            let port = u16::try_from(g.port).map_err(|_| format!("invalid port {}", g.port))?;
            let addr = target.addr(None, port).await?.1;
            return Ok(Action::Grpc {
                addr,
                service: g.service.clone().unwrap_or_default(),
            });
        }
        if let Some(e) = &p.exec {
            return Ok(Action::Exec(e.command.clone().unwrap_or_default()));
        }
        Err("probe has no action".into())
    }

    pub async fn from_handler(h: &LifecycleHandler, target: &Target) -> Result<Action, String> {
        if let Some(g) = &h.http_get {
            let (host, port, mut get) = http_get(target, g)?;
            let (hst, addr) = target.addr(host.as_deref(), port).await?;
            get.host = hst;
            get.addr = addr;
            return Ok(Action::Http(get));
        }
        if let Some(s) = &h.sleep {
            return Ok(Action::Sleep(Duration::from_secs(s.seconds.max(0) as u64)));
        }
        if let Some(e) = &h.exec {
            return Ok(Action::Exec(e.command.clone().unwrap_or_default()));
        }
        Err("invalid handler: only exec, httpGet and sleep are supported".into())
    }

    /// Performs the action once; `Err` carries the failure as upstream reports it.
    pub async fn perform(&self, target: &Target, timeout: Duration) -> Result<(), String> {
        match self {
            Action::Http(g) => {
                let (code, body) = http::get(target, g, timeout).await?;
                http::verdict(code, &body).map(|_| ())
            }
            Action::Tcp(addr) => {
                match tokio::time::timeout(timeout, dial(target, *addr, timeout)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("dial tcp {addr}: {}", os_error(&e))),
                    Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
                }
            }
            Action::Grpc { addr, service } => grpc::check(target, *addr, service, timeout).await,
            Action::Sleep(d) => {
                tokio::time::sleep(*d).await;
                Ok(())
            }
            Action::Exec(cmd) => match &target.exec {
                Some(at) => exec::probe(at, cmd, timeout).await,
                None => Err("the container is not running".into()),
            },
        }
    }
}

/// What the probes found for one container attempt.
#[derive(Debug, Clone, Default)]
pub struct Verdicts {
    pub started: bool,
    pub ready: bool,
    /// Set once liveness or startup failed `failureThreshold` times: why it must die.
    pub kill: Option<String>,
}

/// A probe failure to report as an `Unhealthy` event.
#[derive(Debug, Clone)]
pub struct Unhealthy {
    pub container: String,
    pub init: bool,
    pub message: String,
}

#[derive(Default)]
struct BoardInner {
    results: HashMap<String, Verdicts>,
    events: Vec<Unhealthy>,
}

/// Shared between the probe tasks and the pod worker.
#[derive(Default)]
pub struct Board {
    inner: Mutex<BoardInner>,
    pub wake: Notify,
}

impl Board {
    fn update(&self, id: &str, f: impl FnOnce(&mut Verdicts)) {
        if let Ok(mut b) = self.inner.lock() {
            f(b.results.entry(id.to_string()).or_default());
        }
        self.wake.notify_one();
    }

    fn report(&self, u: Unhealthy) {
        if let Ok(mut b) = self.inner.lock() {
            if b.events.len() < 100 {
                b.events.push(u);
            }
        }
        self.wake.notify_one();
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// The worker's handle on its pod's probe tasks.
#[derive(Default)]
pub struct Probes {
    pub board: Arc<Board>,
    tasks: HashMap<String, tokio::task::JoinHandle<()>>,
}

impl Drop for Probes {
    fn drop(&mut self) {
        for (_, t) in self.tasks.drain() {
            t.abort();
        }
    }
}

fn has_probes(c: &Container) -> bool {
    c.startup_probe.is_some() || c.liveness_probe.is_some() || c.readiness_probe.is_some()
}

/// The spec of a runtime container (by its name annotation).
pub fn spec_of<'a>(pod: &'a Pod, c: &ContainerState) -> Option<(&'a Container, bool)> {
    let name = c.annotations.get(super::container_spec::ANN_NAME)?;
    let spec = pod.spec.as_ref()?;
    if let Some(x) = spec.containers.iter().find(|x| &x.name == name) {
        return Some((x, false));
    }
    spec.init_containers
        .iter()
        .flatten()
        .find(|x| &x.name == name)
        .map(|x| (x, true))
}

impl Probes {
    /// Start tasks for running attempts that have probes, stop those of stopped attempts.
    pub fn sync(
        &mut self,
        pod: &Pod,
        runtime: &[ContainerState],
        ns: &NetNs,
        pod_ip: &str,
        shim_dir: &std::path::Path,
    ) {
        let running: Vec<&ContainerState> = runtime.iter().filter(|c| c.running).collect();
        self.tasks.retain(|id, t| {
            let keep = running.iter().any(|c| &c.id == id);
            if !keep {
                t.abort();
            }
            keep
        });
        if let Ok(mut b) = self.board.inner.lock() {
            b.results
                .retain(|id, _| runtime.iter().any(|c| &c.id == id));
        }
        for c in running {
            if self.tasks.contains_key(&c.id) {
                continue;
            }
            let Some((spec, init)) = spec_of(pod, c) else {
                continue;
            };
            if !has_probes(spec) {
                continue;
            }
            let target = Target {
                ns: ns.clone(),
                pod_ip: pod_ip.parse().ok(),
                ports: spec
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
                    .collect(),
                exec: Some(exec::ExecIn {
                    dir: shim_dir.to_path_buf(),
                    id: c.id.clone(),
                }),
            };
            let started_at = c
                .started_at
                .parse::<jiff::Timestamp>()
                .unwrap_or_else(|_| jiff::Timestamp::now());
            let task = tokio::spawn(watch(
                self.board.clone(),
                c.id.clone(),
                spec.clone(),
                init,
                target,
                started_at,
            ));
            self.tasks.insert(c.id.clone(), task);
        }
    }

    /// (started, ready) of an attempt; containers without probes are started and ready.
    pub fn state(&self, pod: &Pod, c: &ContainerState) -> (bool, bool) {
        let Some((spec, _)) = spec_of(pod, c) else {
            return (c.running, c.running);
        };
        if !c.running {
            return (false, false);
        }
        let r = self
            .board
            .inner
            .lock()
            .ok()
            .and_then(|b| b.results.get(&c.id).cloned())
            .unwrap_or_default();
        let started = spec.startup_probe.is_none() || r.started;
        let ready = started && (spec.readiness_probe.is_none() || r.ready);
        (started, ready)
    }

    /// Attempts whose liveness or startup probe has failed for good, with the reason.
    pub fn kills(&self) -> Vec<(String, String)> {
        self.board
            .inner
            .lock()
            .map(|b| {
                b.results
                    .iter()
                    .filter_map(|(id, r)| r.kill.clone().map(|k| (id.clone(), k)))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn take_events(&self) -> Vec<Unhealthy> {
        self.board
            .inner
            .lock()
            .map(|mut b| std::mem::take(&mut b.events))
            .unwrap_or_default()
    }
}

fn secs(v: Option<i32>, default: i32, min: i32) -> u64 {
    v.unwrap_or(default).max(min) as u64
}

/// The probes of one container attempt.
async fn watch(
    board: Arc<Board>,
    id: String,
    c: Container,
    init: bool,
    target: Target,
    started_at: jiff::Timestamp,
) {
    if let Some(p) = &c.startup_probe {
        if !run(&board, &id, &c, init, &target, started_at, Kind::Startup, p).await {
            return;
        }
    }
    board.update(&id, |r| r.started = true);
    let live = async {
        if let Some(p) = &c.liveness_probe {
            run(
                &board,
                &id,
                &c,
                init,
                &target,
                started_at,
                Kind::Liveness,
                p,
            )
            .await;
        }
    };
    let ready = async {
        if let Some(p) = &c.readiness_probe {
            run(
                &board,
                &id,
                &c,
                init,
                &target,
                started_at,
                Kind::Readiness,
                p,
            )
            .await;
        }
    };
    tokio::join!(live, ready);
}

/// One probe's loop. Returns true when a startup probe succeeded; false once a liveness or
/// startup probe asked for the container's death (readiness runs until aborted).
#[allow(clippy::too_many_arguments)]
async fn run(
    board: &Board,
    id: &str,
    c: &Container,
    init: bool,
    target: &Target,
    started_at: jiff::Timestamp,
    kind: Kind,
    p: &Probe,
) -> bool {
    let delay = secs(p.initial_delay_seconds, 0, 0);
    let period = Duration::from_secs(secs(p.period_seconds, 10, 1));
    let timeout = Duration::from_secs(secs(p.timeout_seconds, 1, 1));
    let success_threshold = secs(p.success_threshold, 1, 1);
    let failure_threshold = secs(p.failure_threshold, 3, 1);
    let since = jiff::Timestamp::now()
        .duration_since(started_at)
        .as_secs_f64()
        .max(0.0);
    let wait = (delay as f64 - since).max(0.0);
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    let (mut ok, mut bad) = (0u64, 0u64);
    loop {
        let outcome = match Action::from_probe(p, target).await {
            Ok(a) => a.perform(target, timeout).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                ok += 1;
                bad = 0;
            }
            Err(msg) => {
                bad += 1;
                ok = 0;
                board.report(Unhealthy {
                    container: c.name.clone(),
                    init,
                    message: format!("{} probe failed: {msg}", kind.word()),
                });
            }
        }
        match kind {
            Kind::Startup if ok >= 1 => return true,
            Kind::Readiness if ok >= success_threshold => board.update(id, |r| r.ready = true),
            Kind::Readiness if bad >= failure_threshold => board.update(id, |r| r.ready = false),
            Kind::Startup | Kind::Liveness if bad >= failure_threshold => {
                let why = format!(
                    "Container {} failed {} probe, will be restarted",
                    c.name,
                    kind.word().to_lowercase()
                );
                board.update(id, |r| r.kill = Some(why));
                return false;
            }
            _ => {}
        }
        tokio::time::sleep(period).await;
    }
}
