//! The scheduler (upstream's kube-scheduler with its default plugins), run in the server
//! process as `system:kube-scheduler` over loopback mTLS.
//!
//! Watches (kube-runtime watchers with back-off, feeding one cache — no polling) follow pods,
//! nodes, PersistentVolumes and claims. Pending pods (`spec.nodeName` empty, `schedulerName`
//! `default-scheduler` or empty, not being deleted) go through [`queue`]; each is filtered
//! ([`filter`]) over the nodes, the feasible ones scored ([`score`]), the pod *assumed* on the
//! best node in the cache and bound through `pods/binding` in the background
//! ([`binder`]), so the next pod is scheduled while the binding is in flight. A pod that fits
//! nowhere gets a `FailedScheduling` Event and `PodScheduled=False` with upstream's message,
//! may preempt lower-priority pods ([`preemption`]), and waits in the unschedulable set until
//! the cluster changes.
//!
//! Invariants: one task owns the cache and the queue (no locks); scheduling starts only after
//! every watch has listed once (no decision on a partial view); a failed binding un-assumes
//! the pod and retries it after a back-off.

pub mod binder;
pub mod cache;
pub mod filter;
pub mod preemption;
pub mod queue;
pub mod score;
mod volume_binding;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{
    Node, NodeSelector, PersistentVolume, PersistentVolumeClaim, Pod,
};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use tokio::sync::{mpsc, Semaphore};

use cache::{Cache, PodInfo};
use filter::{fit_error, Failure, Prepared, Volumes};
use queue::Queue;

#[derive(Debug, Clone)]
pub struct Config {
    /// API writes (bindings, status, events) in flight at once.
    pub parallelism: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { parallelism: 128 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the scheduler's {0} watch ended")]
    WatchEnded(&'static str),
}

// Boxed: the kinds differ a lot in size and the channel holds thousands.
enum Msg {
    Pod(Box<watcher::Event<Pod>>),
    Node(Box<watcher::Event<Node>>),
    Pv(Box<watcher::Event<PersistentVolume>>),
    Pvc(Box<watcher::Event<PersistentVolumeClaim>>),
    Ended(&'static str),
}

/// The outcome of a binding.
struct Bound {
    uid: String,
    result: Result<(), kube::Error>,
}

fn forward<K>(
    name: &'static str,
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    tx: mpsc::Sender<Msg>,
    wrap: fn(watcher::Event<K>) -> Msg,
) -> tokio::task::JoinHandle<()>
where
    K: Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    if tx.send(wrap(ev)).await.is_err() {
                        return;
                    }
                }
                // The watcher re-lists with back-off by itself.
                Err(e) => tracing::debug!(watch = name, error = %e, "scheduler watch error"),
            }
        }
        let _ = tx.send(Msg::Ended(name)).await;
    })
}

fn watch<K>(client: &kube::Client) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    watcher(Api::<K>::all(client.clone()), watcher::Config::default()).default_backoff()
}

/// Run until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let (tx, rx) = mpsc::channel(4096);
    let tasks = [
        forward("pods", watch::<Pod>(&client), tx.clone(), |e| {
            Msg::Pod(Box::new(e))
        }),
        forward("nodes", watch::<Node>(&client), tx.clone(), |e| {
            Msg::Node(Box::new(e))
        }),
        forward(
            "persistentvolumes",
            watch::<PersistentVolume>(&client),
            tx.clone(),
            |e| Msg::Pv(Box::new(e)),
        ),
        forward(
            "persistentvolumeclaims",
            watch::<PersistentVolumeClaim>(&client),
            tx,
            |e| Msg::Pvc(Box::new(e)),
        ),
    ];
    let (recorder, recorder_task) = binder::Recorder::start(client.clone());
    let mut tasks = Vec::from(tasks);
    tasks.push(recorder_task);
    let _watches = Watches(tasks);
    let (bound_tx, bound_rx) = mpsc::unbounded_channel();
    let events = crate::client::events::Sink::start(client.clone());
    let classes = volume_binding::Classes::start(&client);
    let mut s = Scheduler {
        client,
        recorder,
        events,
        writes: Arc::new(Semaphore::new(cfg.parallelism.max(1))),
        bound_tx,
        cache: Cache::default(),
        queue: Queue::default(),
        pending: HashMap::new(),
        nominated: HashMap::new(),
        pvs: HashMap::new(),
        pvcs: HashMap::new(),
        classes,
        seen: Default::default(),
        synced: [false; 4],
        next_start: 0,
        last_message: HashMap::new(),
    };
    s.run(rx, bound_rx, shutdown).await
}

/// The watch tasks, stopped with the scheduler (also when its task is aborted).
struct Watches(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Watches {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

struct Scheduler {
    client: kube::Client,
    recorder: binder::Recorder,
    /// Correlated Events (repeated `FailedScheduling` bumps one Event's count).
    events: crate::client::events::Sink,
    writes: Arc<Semaphore>,
    bound_tx: mpsc::UnboundedSender<Bound>,
    cache: Cache,
    queue: Queue,
    /// Pending pods this scheduler is responsible for, by uid.
    pending: HashMap<String, PodInfo>,
    /// Preemptors → the node their victims are leaving.
    nominated: HashMap<String, String>,
    pvs: HashMap<String, PersistentVolume>,
    pvcs: HashMap<String, PersistentVolumeClaim>,
    classes: volume_binding::Classes,
    /// Keys seen since each watch's last `Init` (pods, nodes, pvs, pvcs).
    seen: [HashSet<String>; 4],
    synced: [bool; 4],
    next_start: usize,
    /// The last `PodScheduled` message written per pod (unchanged ones are not rewritten).
    last_message: HashMap<String, String>,
}

struct VolumeView<'a> {
    pvs: &'a HashMap<String, PersistentVolume>,
    pvcs: &'a HashMap<String, PersistentVolumeClaim>,
    classes: &'a volume_binding::Classes,
}

impl Volumes for VolumeView<'_> {
    fn claim(&self, namespace: &str, claim: &str) -> Result<Option<NodeSelector>, String> {
        let Some(pvc) = self.pvcs.get(&format!("{namespace}/{claim}")) else {
            return Err(format!("persistentvolumeclaim \"{claim}\" not found"));
        };
        let Some(pv_name) = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .filter(|v| !v.is_empty())
        else {
            if volume_binding::waits_for_consumer(pvc, self.classes) {
                return Ok(None); // provisioned on whichever node the pod lands
            }
            return Err("pod has unbound immediate PersistentVolumeClaims".into());
        };
        let Some(pv) = self.pvs.get(pv_name) else {
            return Err("pvc(s) bound to non-existent pv(s)".into());
        };
        Ok(pv
            .spec
            .as_ref()
            .and_then(|s| s.node_affinity.as_ref())
            .and_then(|a| a.required.clone()))
    }
}

fn responsible(pod: &Pod) -> bool {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or_default();
    name.is_empty() || name == binder::SCHEDULER_NAME
}

fn key_of<K: Resource>(o: &K) -> String {
    let m = o.meta();
    match &m.namespace {
        Some(ns) => format!("{ns}/{}", m.name.as_deref().unwrap_or_default()),
        None => m.name.clone().unwrap_or_default(),
    }
}

impl Scheduler {
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Msg>,
        mut bound_rx: mpsc::UnboundedReceiver<Bound>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        tokio::pin!(shutdown);
        let mut last_flush = Instant::now();
        loop {
            // Apply everything the watches delivered before deciding anything.
            while let Ok(m) = rx.try_recv() {
                self.handle(m)?;
            }
            while let Ok(b) = bound_rx.try_recv() {
                self.bound(b);
            }
            let now = Instant::now();
            if now.duration_since(last_flush) > Duration::from_secs(30) {
                self.queue.flush_stale(now);
                last_flush = now;
            }
            if self.synced.iter().all(|s| *s) {
                if let Some(uid) = self.queue.pop(now) {
                    self.schedule_one(&uid).await;
                    continue;
                }
            }
            let wake = self
                .queue
                .next_backoff()
                .unwrap_or(now + Duration::from_secs(30))
                .min(now + Duration::from_secs(30));
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => self.handle(m)?,
                    None => return Err(Error::WatchEnded("all")),
                },
                Some(b) = bound_rx.recv() => self.bound(b),
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = &mut shutdown => return Ok(()),
            }
        }
    }

    fn handle(&mut self, m: Msg) -> Result<(), Error> {
        use watcher::Event as E;
        match m {
            Msg::Ended(name) => return Err(Error::WatchEnded(name)),
            Msg::Pod(e) => match *e {
                E::Init => self.seen[0].clear(),
                E::InitApply(p) => {
                    self.seen[0].insert(p.metadata.uid.clone().unwrap_or_default());
                    self.on_pod(p);
                }
                E::Apply(p) => self.on_pod(p),
                E::Delete(p) => self.on_pod_deleted(p.metadata.uid.as_deref().unwrap_or_default()),
                E::InitDone => {
                    let gone: Vec<String> = self
                        .cache
                        .pods
                        .keys()
                        .chain(self.pending.keys())
                        .filter(|u| !self.seen[0].contains(*u) && !self.cache.assumed.contains(*u))
                        .cloned()
                        .collect();
                    for uid in gone {
                        self.on_pod_deleted(&uid);
                    }
                    self.synced[0] = true;
                }
            },
            Msg::Node(e) => match *e {
                E::Init => self.seen[1].clear(),
                E::InitApply(n) | E::Apply(n) => {
                    self.seen[1].insert(key_of(&n));
                    if self.cache.upsert_node(Arc::new(n)) == cache::Change::MayHelp {
                        self.queue.cluster_changed(Instant::now());
                    }
                }
                E::Delete(n) => self.cache.remove_node(&key_of(&n)),
                E::InitDone => {
                    let gone: Vec<String> = self
                        .cache
                        .nodes
                        .keys()
                        .filter(|n| !self.seen[1].contains(*n))
                        .cloned()
                        .collect();
                    for n in gone {
                        self.cache.remove_node(&n);
                    }
                    self.synced[1] = true;
                }
            },
            Msg::Pv(e) => {
                Self::follow(&mut self.pvs, &mut self.seen[2], &mut self.synced[2], *e);
                self.queue.cluster_changed(Instant::now());
            }
            Msg::Pvc(e) => {
                Self::follow(&mut self.pvcs, &mut self.seen[3], &mut self.synced[3], *e);
                self.queue.cluster_changed(Instant::now());
            }
        }
        Ok(())
    }

    /// Keep a plain map of a watched kind.
    fn follow<K: Resource>(
        map: &mut HashMap<String, K>,
        seen: &mut HashSet<String>,
        synced: &mut bool,
        e: watcher::Event<K>,
    ) {
        use watcher::Event as E;
        match e {
            E::Init => seen.clear(),
            E::InitApply(o) | E::Apply(o) => {
                let k = key_of(&o);
                seen.insert(k.clone());
                map.insert(k, o);
            }
            E::Delete(o) => {
                map.remove(&key_of(&o));
            }
            E::InitDone => {
                map.retain(|k, _| seen.contains(k));
                *synced = true;
            }
        }
    }

    fn on_pod(&mut self, pod: Pod) {
        let info = PodInfo::new(Arc::new(pod));
        let uid = info.uid.clone();
        if !info.node_name.is_empty() {
            if self.pending.remove(&uid).is_some() {
                self.queue.remove(&uid);
                self.last_message.remove(&uid);
            }
            self.nominated.remove(&uid);
            let freed = info.terminated();
            self.cache.place(info);
            if freed {
                self.queue.cluster_changed(Instant::now());
            }
            return;
        }
        if info.deleting || !responsible(&info.pod) {
            self.forget_pending(&uid);
            return;
        }
        if self.cache.assumed.contains(&uid) {
            // Our binding is in flight; the watch has not caught up yet.
            return;
        }
        let priority = info.priority;
        self.pending.insert(uid.clone(), info);
        self.queue.add(&uid, priority);
    }

    fn forget_pending(&mut self, uid: &str) {
        self.pending.remove(uid);
        self.queue.remove(uid);
        self.nominated.remove(uid);
        self.last_message.remove(uid);
    }

    fn on_pod_deleted(&mut self, uid: &str) {
        self.forget_pending(uid);
        if self.cache.remove_pod(uid) == cache::Change::MayHelp {
            self.queue.cluster_changed(Instant::now());
        }
    }

    fn bound(&mut self, b: Bound) {
        match b.result {
            Ok(()) => {
                // Stays assumed until the watch shows it bound.
                self.pending.remove(&b.uid);
                self.queue.remove(&b.uid);
                self.last_message.remove(&b.uid);
                self.nominated.remove(&b.uid);
            }
            Err(e) => {
                if self.cache.assumed.contains(&b.uid) {
                    self.cache.remove_pod(&b.uid);
                }
                match e {
                    // Gone, bound by someone else, being deleted or replaced: the watch tells
                    // the rest.
                    kube::Error::Api(s)
                        if s.code == 404
                            || (s.code == 409
                                && [
                                    "already assigned",
                                    "being deleted",
                                    "Precondition failed",
                                ]
                                .iter()
                                .any(|m| s.message.contains(m))) =>
                    {
                        self.forget_pending(&b.uid);
                    }
                    e => {
                        tracing::warn!(error = %e, "binding failed; retrying");
                        self.queue.retry(&b.uid, Instant::now());
                    }
                }
            }
        }
    }

    async fn schedule_one(&mut self, uid: &str) {
        let Some(info) = self.pending.get(uid).cloned() else {
            self.queue.remove(uid);
            return;
        };
        let nominated: Vec<(String, PodInfo)> = self
            .nominated
            .iter()
            .filter_map(|(u, n)| self.pending.get(u).map(|p| (n.clone(), p.clone())))
            .collect();
        let vols = VolumeView {
            pvs: &self.pvs,
            pvcs: &self.pvcs,
            classes: &self.classes,
        };
        let prep = Prepared::new(&info, &self.cache, &vols, &nominated);
        let total = self.cache.nodes.len();
        let mut failures: HashMap<String, Failure> = HashMap::new();
        let mut feasible = Vec::new();
        if prep.pre_filter.is_none() && total > 0 {
            let want = filter::nodes_to_find(total);
            let start = self.next_start % total;
            let mut looked = 0;
            // Round-robin over the map's own order (stable while no node is added or
            // removed): walking the values costs no hashing and no key comparison, where a
            // lookup by name per candidate — 500 per pod at 5,000 nodes — was a cache miss
            // each and the scheduler's largest cost.
            for node in self.cache.nodes.values().cycle().skip(start).take(total) {
                looked += 1;
                match prep.filter(node) {
                    Ok(()) => feasible.push(node),
                    Err(f) => {
                        failures.insert(node.name.clone(), f);
                    }
                }
                if feasible.len() >= want {
                    break;
                }
            }
            self.next_start = (start + looked) % total;
        }
        if feasible.is_empty() {
            let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
            for f in failures.values() {
                for r in &f.reasons {
                    *reasons.entry(r.clone()).or_default() += 1;
                }
            }
            let mut message = fit_error(total, prep.pre_filter.as_deref(), &reasons);
            let preempt = preemption::eligible(&info, &self.cache)
                .and_then(|()| preemption::find(&prep, &self.cache, &failures));
            drop(prep);
            let candidate = match preempt {
                Ok(c) => Some(c),
                Err(tail) => {
                    message.push_str(&format!(" preemption: {tail}"));
                    None
                }
            };
            self.unschedulable(&info, message, candidate).await;
            return;
        }
        let scores = score::score(&prep, &self.cache, &feasible);
        let best = scores.iter().copied().max().unwrap_or(0);
        let top: Vec<usize> = (0..scores.len()).filter(|i| scores[*i] == best).collect();
        let pick = top[rand::random_range(0..top.len())];
        let node = feasible[pick].name.clone();
        drop(prep);
        let select =
            volume_binding::to_select(&info.pod, &info.namespace, &self.pvcs, &self.classes, &node);
        self.cache.assume(info.clone(), &node);
        let permit = self.writes.clone().acquire_owned().await;
        let client = self.client.clone();
        let tx = self.bound_tx.clone();
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            let result =
                match volume_binding::select_node(&client, &info.namespace, &select, &node).await {
                    Ok(()) => {
                        binder::bind(&client, &info.namespace, &info.name, &info.uid, &node).await
                    }
                    Err(e) => Err(e),
                };
            drop(permit);
            if result.is_ok() {
                recorder.record(binder::PodEvent {
                    message: format!(
                        "Successfully assigned {}/{} to {node}",
                        info.namespace, info.name
                    ),
                    namespace: info.namespace.clone(),
                    name: info.name.clone(),
                    uid: info.uid.clone(),
                    type_: "Normal",
                    reason: "Scheduled",
                });
            }
            let _ = tx.send(Bound {
                uid: info.uid.clone(),
                result,
            });
        });
    }

    async fn unschedulable(
        &mut self,
        info: &PodInfo,
        message: String,
        candidate: Option<preemption::Candidate>,
    ) {
        let now = Instant::now();
        self.queue.unschedulable(&info.uid, now);
        let nominated = candidate.as_ref().map(|c| c.node.clone());
        if let Some(n) = &nominated {
            self.nominated.insert(info.uid.clone(), n.clone());
        }
        let rewrite = nominated.is_some() || self.last_message.get(&info.uid) != Some(&message);
        self.last_message.insert(info.uid.clone(), message.clone());
        tracing::debug!(pod = %format!("{}/{}", info.namespace, info.name), %message, "unschedulable");
        binder::correlated_event(
            &self.events,
            &binder::PodEvent {
                namespace: info.namespace.clone(),
                name: info.name.clone(),
                uid: info.uid.clone(),
                type_: "Warning",
                reason: "FailedScheduling",
                message: message.clone(),
            },
        );
        let permit = self.writes.clone().acquire_owned().await;
        let client = self.client.clone();
        let info = info.clone();
        tokio::spawn(async move {
            let (ns, name, uid) = (&info.namespace, &info.name, &info.uid);
            if rewrite {
                if let Err(e) =
                    binder::mark_unschedulable(&client, ns, name, &message, nominated.as_deref())
                        .await
                {
                    tracing::debug!(error = %e, pod = %name, "cannot update PodScheduled");
                }
            }
            if let Some(c) = candidate {
                for (vns, vname, vuid) in &c.victims {
                    if let Err(e) =
                        binder::evict_victim(&client, vns, vname, vuid, uid, &c.node).await
                    {
                        tracing::warn!(error = %e, victim = %vname, "cannot preempt");
                    }
                }
            }
            drop(permit);
        });
    }
}
