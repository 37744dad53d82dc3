//! One pod worker per pod bound to this node (upstream's `pod_workers.go` + `SyncPod`):
//! it owns the pod's shim, starts init containers in order and then the containers,
//! restarts them by `restartPolicy` with upstream's back-off (immediately, then 10 s
//! doubling to 5 min, `CrashLoopBackOff` meanwhile), writes the status through
//! `pods/status` when it changes, and on deletion stops the containers gracefully (SIGTERM,
//! SIGKILL after the grace period), stops the shim, removes the pod's files and makes the
//! final delete with grace 0 — what upstream's kubelet does.
//!
//! The runtime state (containers, PIDs, attempts, exits) lives in the shim, so a restarted
//! agent re-adopts running pods unchanged: the worker only reads it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::container_spec::{self, Inputs};
use super::events::{self, Ev};
use super::hooks::{self, Hook};
use super::probe::{self, Probes, Target};
use super::status::{self, attempt_of, attempts, Notes};
use super::stop::{self, is_sidecar};
use super::{resources, Shared};
use crate::kubelet::runtime::client as shim;
use crate::kubelet::runtime::netns::NetNs;
use crate::kubelet::runtime::shim::{ContainerState, Request};

const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const SYNC: Duration = Duration::from_secs(1);
/// Upstream's `MaxContainerBackOff` reset: a container that ran this long restarts at once.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How often configMap and secret volumes are re-read (upstream: the sync period, 1 min,
/// plus its cache TTL; shorter here, the reads are cheap watch-cache GETs).
const VOLUME_REFRESH: Duration = Duration::from_secs(10);

pub struct Worker {
    shared: Arc<Shared>,
    pod: Pod,
    uid: String,
    dir: PathBuf,
    runtime: Vec<ContainerState>,
    sandbox: bool,
    volumes: Option<BTreeMap<String, PathBuf>>,
    waiting: HashMap<String, (String, String)>,
    backoff: HashMap<String, (Duration, Instant)>,
    backoff_msg: HashMap<String, String>,
    image_ids: HashMap<String, String>,
    pulls: super::pull::PullState,
    said: HashSet<String>,
    last_status: Option<Value>,
    finished: bool,
    /// The shim's PID: its namespaces are the pod's (probes and hooks dial in there).
    shim_pid: i32,
    probes: Probes,
    /// Attempts being stopped by a task (failed liveness/startup, finished sidecars).
    stopping: HashMap<String, tokio::task::JoinHandle<()>>,
    /// Set once the eviction manager chose this pod: the `Evicted` message.
    evicted: Option<String>,
    net_ip: Option<String>,
    /// When configMap/secret volumes were last re-read.
    volumes_refreshed: Instant,
}

impl Drop for Worker {
    fn drop(&mut self) {
        for (_, t) in self.stopping.drain() {
            t.abort();
        }
    }
}

/// Run the worker until the pod is gone from this node.
pub async fn run(shared: Arc<Shared>, mut rx: watch::Receiver<Option<Pod>>) {
    let Some(pod) = rx.borrow().clone() else {
        return;
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut w = Worker {
        dir: shared.pods_dir.join(&uid),
        shared,
        pod,
        uid,
        runtime: Vec::new(),
        sandbox: false,
        volumes: None,
        waiting: HashMap::new(),
        backoff: HashMap::new(),
        backoff_msg: HashMap::new(),
        image_ids: HashMap::new(),
        pulls: Default::default(),
        said: HashSet::new(),
        last_status: None,
        finished: false,
        shim_pid: 0,
        probes: Probes::default(),
        stopping: HashMap::new(),
        evicted: None,
        net_ip: None,
        volumes_refreshed: Instant::now(),
    };
    loop {
        let current = rx.borrow_and_update().clone();
        match current {
            None => {
                // Gone from the API (force-deleted): stop everything at once.
                w.teardown(Duration::ZERO).await;
                return;
            }
            Some(p) => w.pod = p,
        }
        if w.pod.metadata.deletion_timestamp.is_some() {
            let grace = w
                .pod
                .metadata
                .deletion_grace_period_seconds
                .or_else(|| {
                    w.pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.termination_grace_period_seconds)
                })
                .unwrap_or(30)
                .max(0) as u64;
            w.teardown(Duration::from_secs(grace)).await;
            w.final_delete().await;
            return;
        }
        let eviction = w
            .shared
            .evictions
            .lock()
            .ok()
            .and_then(|e| e.get(&w.uid).cloned());
        if let Some(msg) = eviction {
            w.evict(msg).await;
        }
        if let Err(e) = w.sync().await {
            tracing::warn!(pod = %w.name(), error = %e, "pod sync failed; retrying");
        }
        let board = w.probes.board.clone();
        tokio::select! {
            r = rx.changed() => if r.is_err() { w.teardown(Duration::ZERO).await; return },
            _ = board.wake.notified() => {}
            _ = tokio::time::sleep(SYNC) => {}
        }
    }
}

impl Worker {
    fn name(&self) -> String {
        format!(
            "{}/{}",
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
            self.pod.metadata.name.as_deref().unwrap_or_default()
        )
    }

    fn client(&self) -> kube::Client {
        self.shared.clients.borrow().clone()
    }

    fn event(&self, reason: &str, message: String, warning: bool, fp: Option<String>) {
        events::record(
            &self.client(),
            &self.shared.node_name,
            &self.pod,
            Ev {
                reason,
                message,
                warning,
                field_path: fp,
            },
        );
    }

    fn terminal(&self) -> bool {
        matches!(
            self.pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded") | Some("Failed")
        )
    }

    async fn refresh(&mut self) -> Result<(), String> {
        match shim::call(&self.dir, &Request::State).await {
            Ok(r) => {
                self.runtime = r.containers;
                self.shim_pid = r.shim_pid;
                self.sandbox = true;
                Ok(())
            }
            Err(e) => {
                self.sandbox = false;
                Err(e.to_string())
            }
        }
    }

    async fn sync(&mut self) -> Result<(), String> {
        if self.finished {
            return Ok(());
        }
        if self.terminal() && !shim::alive(&self.dir).await {
            // Terminal before we saw it (or before an agent restart): nothing runs.
            self.finished = true;
            return Ok(());
        }
        if self.refresh().await.is_err() {
            if self.terminal() {
                self.finished = true;
                return Ok(());
            }
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| format!("{}: {e}", self.dir.display()))?;
            let host_net = self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false);
            shim::spawn(&self.dir, &container_spec::hostname(&self.pod), host_net)
                .await
                .map_err(|e| e.to_string())?;
            self.refresh().await?;
        }
        if !self.attach_network().await {
            // A re-adopted sandbox keeps its last status (and podIP) until attached again.
            if self.runtime.is_empty() {
                return self.write_status().await;
            }
            return Ok(());
        }
        let pod_ip = self.pod_ip();
        container_spec::write_pod_files(&self.dir, &self.pod, &pod_ip, &self.shared.dns)
            .map_err(|e| format!("pod files: {e}"))?;
        if self.volumes.is_none() {
            match super::volumes::prepare(
                &self.client(),
                &self.pod,
                &self.dir,
                &self.shared.node_name,
            )
            .await
            {
                Ok(v) => self.volumes = Some(v),
                Err(e) => {
                    if self.said.insert(format!("mount:{e}")) {
                        self.event(
                            "FailedMount",
                            format!("MountVolume.SetUp failed: {e}"),
                            true,
                            None,
                        );
                    }
                    return self.write_status().await;
                }
            }
        }
        if self.volumes_refreshed.elapsed() >= VOLUME_REFRESH {
            self.volumes_refreshed = Instant::now();
            super::volumes::refresh(&self.client(), &self.pod, &self.dir, &self.shared.node_name)
                .await;
        }
        self.watch_probes();
        if !self.terminal() {
            self.advance().await;
            self.refresh().await?;
        }
        self.stop_sidecars_when_done();
        self.write_status().await?;
        if self.terminal_now() {
            // Like upstream: once terminal, the sandbox goes; logs and status stay.
            let _ = shim::call(&self.dir, &Request::Shutdown).await;
            self.detach_network().await;
            self.finished = true;
        }
        Ok(())
    }

    /// Where probes and hooks of container `c` (attempt `id`) connect and exec (None before
    /// the shim is known).
    fn target(&self, c: &Container, id: &str) -> Option<Target> {
        if self.shim_pid <= 0 {
            return None;
        }
        Some(Target {
            ns: NetNs::Pid(self.shim_pid),
            pod_ip: self.pod_ip().parse().ok(),
            ports: c
                .ports
                .iter()
                .flatten()
                .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
                .collect(),
            exec: Some(probe::exec::ExecIn {
                dir: self.dir.clone(),
                id: id.to_string(),
            }),
        })
    }

    /// The pod's termination grace period (a probe may set its own for the kill it causes).
    fn grace(&self, probe_grace: Option<i64>) -> Duration {
        let g = probe_grace
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .max(0);
        Duration::from_secs(g as u64)
    }

    /// Start/stop probe tasks, report their failures, kill what liveness/startup condemned.
    fn watch_probes(&mut self) {
        self.stopping.retain(|_, t| !t.is_finished());
        if self.shim_pid > 0 {
            let ns = NetNs::Pid(self.shim_pid);
            let ip = self.pod_ip();
            self.probes
                .sync(&self.pod, &self.runtime, &ns, &ip, &self.dir);
        }
        for u in self.probes.take_events() {
            self.event(
                "Unhealthy",
                u.message,
                true,
                events::field_path(u.init, &u.container),
            );
        }
        for (id, why) in self.probes.kills() {
            let Some(c) = self
                .runtime
                .iter()
                .find(|c| c.id == id && c.running)
                .cloned()
            else {
                continue;
            };
            if self.stopping.contains_key(&id) {
                continue;
            }
            let Some((spec, init)) = probe::spec_of(&self.pod, &c).map(|(s, i)| (s.clone(), i))
            else {
                continue;
            };
            self.event("Killing", why, false, events::field_path(init, &spec.name));
            let probe_grace = spec
                .liveness_probe
                .as_ref()
                .and_then(|p| p.termination_grace_period_seconds);
            let grace = self.grace(probe_grace);
            self.spawn_stop(&spec, init, &id, grace);
        }
    }

    /// Stop one attempt in the background (preStop, SIGTERM, SIGKILL after `grace`).
    fn spawn_stop(&mut self, spec: &Container, init: bool, id: &str, grace: Duration) {
        let dir = self.dir.clone();
        let pod = self.pod.clone();
        let target = self.target(spec, id);
        let spec = spec.clone();
        let idc = id.to_string();
        let client = self.client();
        let node = self.shared.node_name.clone();
        let board = self.probes.board.clone();
        let task = tokio::spawn(async move {
            let failed =
                stop::stop_one(&dir, &pod, Some(&spec), &idc, target.as_ref(), grace).await;
            if let Some(msg) = failed {
                events::record(
                    &client,
                    &node,
                    &pod,
                    Ev {
                        reason: Hook::PreStop.reason(),
                        message: msg,
                        warning: true,
                        field_path: events::field_path(init, &spec.name),
                    },
                );
            }
            board.wake.notify_one();
        });
        self.stopping.insert(id.to_string(), task);
    }

    /// Hard eviction: kill every container at once, report `Failed`/`Evicted`, stop the shim.
    async fn evict(&mut self, msg: String) {
        self.event("Evicted", msg.clone(), true, None);
        if self.refresh().await.is_ok() {
            for (_, t) in self.stopping.drain() {
                t.abort();
            }
            let running: Vec<ContainerState> =
                self.runtime.iter().filter(|c| c.running).cloned().collect();
            for c in &running {
                let spec = probe::spec_of(&self.pod, c).map(|(s, i)| (s.clone(), i));
                if let Some((s, init)) = &spec {
                    self.event(
                        "Killing",
                        format!("Stopping container {}", s.name),
                        false,
                        events::field_path(*init, &s.name),
                    );
                }
                stop::stop_one(&self.dir, &self.pod, None, &c.id, None, Duration::ZERO).await;
            }
            let _ = self.refresh().await;
        }
        self.evicted = Some(msg);
        self.backoff_msg.clear();
        self.waiting.clear();
        if let Err(e) = self.write_status().await {
            tracing::warn!(pod = %self.name(), error = %e, "cannot report the eviction");
        }
        let _ = shim::call(&self.dir, &Request::Shutdown).await;
        self.finished = true;
        if let Ok(mut e) = self.shared.evictions.lock() {
            e.remove(&self.uid);
        }
    }

    /// Whether the regular containers are done for good (restartPolicy says no more runs).
    fn main_done(&self) -> bool {
        let Some(spec) = &self.pod.spec else {
            return false;
        };
        let policy = spec.restart_policy.as_deref().unwrap_or("Always");
        !spec.containers.is_empty()
            && spec.containers.iter().all(|c| {
                attempts(&self.runtime, &c.name).last().is_some_and(|l| {
                    !l.running
                        && match policy {
                            "Always" => false,
                            "OnFailure" => l.exit_code == Some(0),
                            _ => true,
                        }
                })
            })
    }

    /// Once the regular containers are done, sidecars stop, last started first.
    fn stop_sidecars_when_done(&mut self) {
        if !self.main_done() {
            return;
        }
        let Some(spec) = self.pod.spec.clone() else {
            return;
        };
        if !self.stopping.is_empty() {
            return; // one at a time, in reverse order
        }
        for c in spec.init_containers.iter().flatten().rev() {
            if !is_sidecar(c) {
                continue;
            }
            let running = attempts(&self.runtime, &c.name)
                .last()
                .filter(|l| l.running)
                .map(|l| l.id.clone());
            if let Some(id) = running {
                self.event(
                    "Killing",
                    format!("Stopping container {}", c.name),
                    false,
                    events::field_path(true, &c.name),
                );
                let grace = self.grace(None);
                self.spawn_stop(c, true, &id, grace);
                return;
            }
        }
    }

    fn host_network(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
    }

    /// Give the sandbox its `eth0` and address (once; idempotent across agent restarts).
    /// False while the node's pod network cannot attach it (`FailedCreatePodSandBox`).
    async fn attach_network(&mut self) -> bool {
        if self.host_network() || self.net_ip.is_some() {
            return true;
        }
        let Some(net) = self.shared.network.clone() else {
            return true;
        };
        match net.attach(&self.uid, self.shim_pid).await {
            Ok(ip) => {
                self.net_ip = Some(ip.to_string());
                true
            }
            Err(e) => {
                if self.said.insert(format!("sandbox:{e}")) {
                    self.event(
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: pod network: {e}"),
                        true,
                        None,
                    );
                }
                false
            }
        }
    }

    async fn detach_network(&self) {
        if let Some(net) = &self.shared.network {
            if let Err(e) = net.detach(&self.uid).await {
                tracing::warn!(pod = %self.name(), error = %e, "cannot remove the pod's network");
            }
        }
    }

    fn terminal_now(&self) -> bool {
        self.last_status
            .as_ref()
            .and_then(|s| s["phase"].as_str())
            .is_some_and(|p| p == "Succeeded" || p == "Failed")
            && self.runtime.iter().all(|c| !c.running)
    }

    fn pod_ip(&self) -> String {
        let host_net = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        if host_net {
            self.shared.node_ip.clone()
        } else {
            self.net_ip.clone().unwrap_or_default()
        }
    }

    /// Start whatever should run next.
    async fn advance(&mut self) {
        let Some(spec) = self.pod.spec.clone() else {
            return;
        };
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        self.backoff_msg.clear();
        let main_done = self.main_done();
        for c in spec.init_containers.iter().flatten() {
            let latest = attempts(&self.runtime, &c.name)
                .last()
                .map(|l| (*l).clone());
            if is_sidecar(c) {
                // Started in order, not waited for; restarted whatever the pod's policy.
                match latest {
                    None => {
                        self.start(c, true, 0).await;
                        return;
                    }
                    Some(l) if l.running => {
                        if !self.probes.state(&self.pod, &l).0 {
                            return; // its startup probe has not passed yet
                        }
                    }
                    Some(l) => {
                        if !main_done && !self.stopping.contains_key(&l.id) {
                            self.restart(c, true, &l).await;
                        }
                        if !status::init_done(&self.pod, &self.runtime) {
                            return;
                        }
                    }
                }
                continue;
            }
            match latest {
                None => {
                    self.start(c, true, 0).await;
                    return;
                }
                Some(l) if l.running => return,
                Some(l) if l.exit_code == Some(0) => continue,
                Some(l) => {
                    if policy != "Never" {
                        self.restart(c, true, &l).await;
                    }
                    return;
                }
            }
        }
        for c in &spec.containers {
            let latest = attempts(&self.runtime, &c.name)
                .last()
                .map(|l| (*l).clone());
            match latest {
                None => self.start(c, false, 0).await,
                Some(l) if l.running => {}
                Some(l) if self.stopping.contains_key(&l.id) => {}
                Some(l) => {
                    let again = match policy.as_str() {
                        "Always" => true,
                        "OnFailure" => l.exit_code != Some(0),
                        _ => false,
                    };
                    if again {
                        self.restart(c, false, &l).await;
                    }
                }
            }
        }
    }

    /// Restart after an exit, unless held back (then `CrashLoopBackOff`).
    async fn restart(&mut self, c: &Container, init: bool, last: &ContainerState) {
        let now = Instant::now();
        if ran_for(last) >= BACKOFF_RESET {
            self.backoff.remove(&c.name);
        }
        if let Some((delay, since)) = self.backoff.get(&c.name).copied() {
            if now.duration_since(since) < delay {
                let msg = format!(
                    "back-off {}s restarting failed container={} pod={}_{}({})",
                    delay.as_secs(),
                    c.name,
                    self.pod.metadata.name.as_deref().unwrap_or_default(),
                    self.pod.metadata.namespace.as_deref().unwrap_or_default(),
                    self.uid
                );
                if self
                    .said
                    .insert(format!("backoff:{}:{}", c.name, attempt_of(last)))
                {
                    self.event(
                        "BackOff",
                        "Back-off restarting failed container".into(),
                        true,
                        events::field_path(init, &c.name),
                    );
                }
                self.backoff_msg.insert(c.name.clone(), msg);
                return;
            }
            self.backoff
                .insert(c.name.clone(), ((delay * 2).min(BACKOFF_MAX), now));
        } else {
            self.backoff.insert(c.name.clone(), (BACKOFF_START, now));
        }
        let next = attempt_of(last) + 1;
        self.start(c, init, next).await;
        // Keep the previous attempt (for lastState and `logs --previous`), drop older ones.
        if next >= 2 {
            let old = container_spec::container_id(&c.name, next - 2);
            let _ = shim::call(&self.dir, &Request::Remove { id: old }).await;
        }
    }

    async fn start(&mut self, c: &Container, init: bool, attempt: u32) {
        let fp = events::field_path(init, &c.name);
        let image_ref = c.image.clone().unwrap_or_default();
        // Policy, pull secrets, back-off and their events: `pull.rs`.
        let image =
            match super::pull::ensure(&self.shared, &self.pod, c, init, &mut self.pulls).await {
                Ok(i) => i,
                Err(waiting) => {
                    self.waiting.insert(c.name.clone(), waiting);
                    return;
                }
            };
        self.image_ids.insert(image_ref.clone(), image.id.clone());
        let volumes = self.volumes.clone().unwrap_or_default();
        let host_ip = self.shared.node_ip.clone();
        let inputs = Inputs {
            pod: &self.pod,
            container: c,
            init,
            attempt,
            image: &image,
            store: &self.shared.store,
            pod_dir: &self.dir,
            log_dir: &self.shared.log_dir,
            cgroup_root: &self.shared.cgroup_root,
            node_name: &self.shared.node_name,
            host_ip: &host_ip,
            volumes: &volumes,
        };
        let spec = match container_spec::build(&inputs) {
            Ok(s) => s,
            Err(e) => {
                if self.said.insert(format!("config:{}:{e}", c.name)) {
                    self.event("Failed", format!("Error: {e}"), true, fp);
                }
                self.waiting
                    .insert(c.name.clone(), ("CreateContainerConfigError".into(), e));
                return;
            }
        };
        let id = container_spec::container_id(&c.name, attempt);
        match shim::call(
            &self.dir,
            &Request::Run {
                id,
                spec: Box::new(spec),
            },
        )
        .await
        {
            Ok(_) => {
                self.waiting.remove(&c.name);
                self.event(
                    "Created",
                    format!("Created container: {}", c.name),
                    false,
                    fp.clone(),
                );
                self.event(
                    "Started",
                    format!("Started container {}", c.name),
                    false,
                    fp.clone(),
                );
                self.post_start(c, init, attempt, fp).await;
            }
            Err(e) => {
                let msg = e.to_string();
                self.event("Failed", format!("Error: {msg}"), true, fp);
                self.waiting
                    .insert(c.name.clone(), ("RunContainerError".into(), msg));
                // Retried after the back-off, as a crash would be.
                self.backoff
                    .entry(c.name.clone())
                    .or_insert((BACKOFF_START, Instant::now()));
            }
        }
    }

    /// Upstream runs postStart before it calls the container started; a failure kills it
    /// (then its restart policy decides).
    async fn post_start(&mut self, c: &Container, init: bool, attempt: u32, fp: Option<String>) {
        if Hook::PostStart.handler(c).is_none() {
            return;
        }
        let _ = self.refresh().await;
        let id = container_spec::container_id(&c.name, attempt);
        let Some(target) = self.target(c, &id) else {
            return;
        };
        let grace = self.grace(None);
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let budget = grace.max(Duration::from_secs(30));
        if let Err(msg) = hooks::run(Hook::PostStart, c, &name, &target, budget).await {
            self.event(Hook::PostStart.reason(), msg, true, fp.clone());
            self.event("Killing", "FailedPostStartHook".into(), false, fp);
            let _ = init;
            stop::stop_one(&self.dir, &self.pod, Some(c), &id, Some(&target), grace).await;
        }
    }

    fn messages(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        let Some(spec) = &self.pod.spec else { return m };
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let Some(l) = attempts(&self.runtime, &c.name).last().copied() else {
                continue;
            };
            if l.running {
                continue;
            }
            let path = self.dir.join("termination").join(&l.id);
            let mut text = std::fs::read(&path)
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned())
                .unwrap_or_default();
            if text.is_empty()
                && c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
                && l.exit_code != Some(0)
            {
                text = self.log_tail(c, attempt_of(l));
            }
            if !text.is_empty() {
                m.insert(c.name.clone(), text);
            }
        }
        m
    }

    /// Last 80 lines / 2 KiB of a container's log (FallbackToLogsOnError).
    fn log_tail(&self, c: &Container, attempt: u32) -> String {
        let path = container_spec::pod_log_dir(&self.shared.log_dir, &self.pod)
            .join(&c.name)
            .join(format!("{attempt}.log"));
        let Ok(text) = std::fs::read_to_string(path) else {
            return String::new();
        };
        let lines: Vec<&str> = text
            .lines()
            .filter_map(|l| l.splitn(4, ' ').nth(3))
            .collect();
        let tail = lines[lines.len().saturating_sub(80)..].join("\n");
        let start = tail.len().saturating_sub(2048);
        tail.get(start..).unwrap_or_default().to_string()
    }

    async fn write_status(&mut self) -> Result<(), String> {
        let now = format!("{:.0}", jiff::Timestamp::now());
        let messages = self.messages();
        let backoff_msg = self.backoff_msg.clone();
        let mut probed = HashMap::new();
        for c in self.runtime.iter().filter(|c| c.running) {
            if let Some(name) = c.annotations.get(container_spec::ANN_NAME) {
                probed.insert(name.clone(), self.probes.state(&self.pod, c));
            }
        }
        let notes = Notes {
            probed: &probed,
            waiting: &self.waiting,
            backoff: &backoff_msg,
            messages: &messages,
            image_ids: &self.image_ids,
            host_ip: &self.shared.node_ip,
            pod_ip: &self.pod_ip(),
            sandbox_ready: self.sandbox,
            now: &now,
        };
        let qos = resources::qos(&self.pod).as_str();
        let mut st = status::compute(&self.pod, &self.runtime, &notes, qos);
        if let Some(m) = &self.evicted {
            st["phase"] = json!("Failed");
            st["reason"] = json!("Evicted");
            st["message"] = json!(m);
            if let Some(c) = st["conditions"].as_array_mut() {
                c.push(json!({"type": "DisruptionTarget", "status": "True",
                    "reason": "TerminationByKubelet", "message": m, "lastProbeTime": null,
                    "lastTransitionTime": now}));
            }
        }
        let cmp = status::comparable(&st);
        if self.last_status.as_ref().map(status::comparable) == Some(cmp) {
            return Ok(());
        }
        let ns = self
            .pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client(), &ns);
        let patch = json!({"status": st});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(p) => {
                if p.metadata.uid.as_deref() == Some(self.uid.as_str()) {
                    self.pod.status = p.status;
                }
                self.last_status = Some(st);
                Ok(())
            }
            Err(e) => Err(format!("cannot update the pod status: {e}")),
        }
    }

    /// Stop the containers (preStop, SIGTERM, SIGKILL after `grace`; regular containers
    /// together, then sidecars in reverse order), report, stop the shim, clean up.
    async fn teardown(&mut self, grace: Duration) {
        if self.refresh().await.is_ok() {
            for (_, t) in self.stopping.drain() {
                t.abort();
            }
            let deadline = Instant::now() + grace;
            let running: Vec<ContainerState> =
                self.runtime.iter().filter(|c| c.running).cloned().collect();
            let mut regular = Vec::new();
            let mut sidecars = Vec::new();
            for c in &running {
                let spec = probe::spec_of(&self.pod, c).map(|(s, i)| (s.clone(), i));
                let name = c
                    .annotations
                    .get(container_spec::ANN_NAME)
                    .cloned()
                    .unwrap_or_default();
                let init = c
                    .annotations
                    .get(container_spec::ANN_INIT)
                    .is_some_and(|v| v == "true");
                self.event(
                    "Killing",
                    format!("Stopping container {name}"),
                    false,
                    events::field_path(init, &name),
                );
                let target = spec.as_ref().and_then(|(s, _)| self.target(s, &c.id));
                let entry = (c.id.clone(), spec.map(|(s, _)| s), target, init, name);
                if entry.1.as_ref().is_some_and(|s| init && is_sidecar(s)) {
                    sidecars.push(entry);
                } else {
                    regular.push(entry);
                }
            }
            // Sidecars stop last, in the reverse of their order in the spec.
            if let Some(spec) = &self.pod.spec {
                let order: Vec<&str> = spec
                    .init_containers
                    .iter()
                    .flatten()
                    .map(|c| c.name.as_str())
                    .collect();
                sidecars.sort_by_key(|e| std::cmp::Reverse(order.iter().position(|n| *n == e.4)));
            }
            let (dir, pod) = (self.dir.clone(), self.pod.clone());
            let stops = regular.iter().map(|(id, spec, target, _, _)| {
                stop::stop_one(&dir, &pod, spec.as_ref(), id, target.as_ref(), grace)
            });
            let failures = futures::future::join_all(stops).await;
            let mut all_failures: Vec<(bool, String, String)> = regular
                .iter()
                .zip(failures)
                .filter_map(|(e, f)| f.map(|m| (e.3, e.4.clone(), m)))
                .collect();
            for (id, spec, target, init, name) in &sidecars {
                let left = deadline.saturating_duration_since(Instant::now());
                let left = if grace.is_zero() {
                    Duration::ZERO
                } else {
                    left.max(Duration::from_secs(2))
                };
                if let Some(m) =
                    stop::stop_one(&dir, &pod, spec.as_ref(), id, target.as_ref(), left).await
                {
                    all_failures.push((*init, name.clone(), m));
                }
            }
            for (init, name, m) in all_failures {
                self.event(
                    Hook::PreStop.reason(),
                    m,
                    true,
                    events::field_path(init, &name),
                );
            }
            let _ = self.refresh().await;
            // Final status with the containers' exits (the pod still exists if graceful).
            if !grace.is_zero() || self.pod.metadata.deletion_timestamp.is_some() {
                self.backoff_msg.clear();
                self.waiting.clear();
                let _ = self.write_status().await;
            }
            let _ = shim::call(&self.dir, &Request::Shutdown).await;
            // Wait (bounded) for the shim to go, so its cgroups and mounts are gone.
            for _ in 0..50 {
                if !shim::alive(&self.dir).await {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.detach_network().await;
        if let Err(e) = super::cleanup::remove_pod_dir(&self.dir) {
            tracing::warn!(pod = %self.name(), error = %e, "pod directory kept");
        }
        let _ =
            std::fs::remove_dir_all(container_spec::pod_log_dir(&self.shared.log_dir, &self.pod));
    }

    async fn final_delete(&self) {
        let ns = self
            .pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client(), &ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => tracing::info!(pod = %self.name(), "pod terminated and deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => tracing::warn!(pod = %self.name(), error = %e, "final delete failed"),
        }
    }
}

/// How long an exited attempt ran.
fn ran_for(c: &ContainerState) -> Duration {
    let start = c.started_at.parse::<jiff::Timestamp>();
    let end = c
        .finished_at
        .as_deref()
        .map(|f| f.parse::<jiff::Timestamp>());
    match (start, end) {
        (Ok(s), Some(Ok(e))) => Duration::from_secs_f64(e.duration_since(s).as_secs_f64().max(0.0)),
        _ => Duration::ZERO,
    }
}
