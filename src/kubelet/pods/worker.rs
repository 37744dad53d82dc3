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
use super::status::{self, attempt_of, attempts, Notes};
use super::{resources, Shared};
use crate::kubelet::runtime::client as shim;
use crate::kubelet::runtime::shim::{ContainerState, Request};

const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const SYNC: Duration = Duration::from_secs(1);

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
    said: HashSet<String>,
    last_status: Option<Value>,
    finished: bool,
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
        said: HashSet::new(),
        last_status: None,
        finished: false,
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
        if let Err(e) = w.sync().await {
            tracing::warn!(pod = %w.name(), error = %e, "pod sync failed; retrying");
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { w.teardown(Duration::ZERO).await; return },
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
        if !self.terminal() {
            self.advance().await;
            self.refresh().await?;
        }
        self.write_status().await?;
        if self.terminal_now() {
            // Like upstream: once terminal, the sandbox goes; logs and status stay.
            let _ = shim::call(&self.dir, &Request::Shutdown).await;
            self.finished = true;
        }
        Ok(())
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
            String::new()
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
        for c in spec.init_containers.iter().flatten() {
            let latest = attempts(&self.runtime, &c.name)
                .last()
                .map(|l| (*l).clone());
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
        let image = match self.shared.store.resolve(&image_ref) {
            Ok(i) => i,
            Err(e) => {
                let msg = format!(
                    "Failed to pull image \"{image_ref}\": {e}; registry pulls are not supported yet (import it with `rampart images import`)"
                );
                if self.said.insert(format!("pull:{}", c.name)) {
                    self.event("Failed", msg.clone(), true, fp.clone());
                    self.event("Failed", "Error: ErrImagePull".into(), true, fp);
                }
                self.waiting
                    .insert(c.name.clone(), ("ErrImagePull".into(), msg));
                return;
            }
        };
        self.image_ids.insert(image_ref.clone(), image.id.clone());
        self.event(
            "Pulled",
            format!("Container image \"{image_ref}\" already present on machine"),
            false,
            fp.clone(),
        );
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
                    fp,
                );
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
        let notes = Notes {
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
        let st = status::compute(&self.pod, &self.runtime, &notes, qos);
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

    /// Stop the containers (SIGTERM, SIGKILL after `grace`), report, stop the shim, clean up.
    async fn teardown(&mut self, grace: Duration) {
        if self.refresh().await.is_ok() {
            let running: Vec<ContainerState> =
                self.runtime.iter().filter(|c| c.running).cloned().collect();
            if !running.is_empty() {
                for c in &running {
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
                    let sig = if grace.is_zero() {
                        libc::SIGKILL
                    } else {
                        libc::SIGTERM
                    };
                    let _ = shim::call(
                        &self.dir,
                        &Request::Kill {
                            id: c.id.clone(),
                            signal: sig,
                        },
                    )
                    .await;
                }
                let deadline = Instant::now() + grace;
                let mut killed = grace.is_zero();
                let hard_deadline = deadline + Duration::from_secs(10);
                loop {
                    if self.refresh().await.is_err() || self.runtime.iter().all(|c| !c.running) {
                        break;
                    }
                    if !killed && Instant::now() >= deadline {
                        for c in self.runtime.iter().filter(|c| c.running) {
                            let _ = shim::call(
                                &self.dir,
                                &Request::Kill {
                                    id: c.id.clone(),
                                    signal: libc::SIGKILL,
                                },
                            )
                            .await;
                        }
                        killed = true;
                    }
                    if Instant::now() >= hard_deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
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
        super::volumes::unmount_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
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
