//! The garbage collector, as upstream's `garbagecollector` controller: objects whose owners
//! (`metadata.ownerReferences`) are gone are deleted, and owners deleted with the `orphan` or
//! `foregroundDeletion` finalizer (kubectl `--cascade=orphan|foreground`) get their dependents
//! orphaned or deleted first.
//!
//! How it works (upstream's GraphBuilder + attemptToDelete/attemptToOrphan queues):
//! - discovery finds every resource that can be listed, watched and deleted (built-ins and
//!   custom resources; rediscovered when a CRD changes), and one watch per resource feeds an
//!   in-memory graph uid → (identity, owner uids), with the reverse index owner → dependents;
//! - an owner's deletion event, an owner entering foreground deletion, or a dependent naming an
//!   owner the graph does not know queues an *attempt to delete* of each dependent. The attempt
//!   re-reads the dependent and each owner live (the graph may lag) and then: keeps it while any
//!   owner exists and is not itself being deleted in the foreground (dropping references to
//!   owners that are gone); deletes it in the foreground when its owners wait for dependents;
//!   otherwise deletes it with the policy its own finalizers ask for (Background by default);
//! - an owner with the `orphan` finalizer has its reference removed from every dependent, then
//!   the finalizer removed; an owner with `foregroundDeletion` loses that finalizer once it has
//!   no dependents left. Upstream waits only for dependents with `blockOwnerDeletion`; we wait
//!   for all of them, so `kubectl delete --cascade=foreground --wait` returns with the whole
//!   tree gone.
//!
//! Invariants: every change goes through the API with uid preconditions, so an object recreated
//! under the same name is never touched by mistake; failed attempts are retried with back-off
//! (250 ms doubling to 30 s), never in a hot loop.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::ApiResource;
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use serde_json::json;
use tokio::sync::mpsc;

use super::Error;

const NAME: &str = "garbage-collector";
const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";

/// One watched resource: where it lives in the API.
#[derive(Clone, Debug)]
struct Kind {
    ar: ApiResource,
    namespaced: bool,
}

/// A node of the ownership graph: what is needed to find the object again.
#[derive(Clone, Debug)]
struct Node {
    kind: Arc<Kind>,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
    /// Resources (by plural and group) whose initial list has not completed yet.
    syncing: HashSet<(String, String)>,
}

impl Graph {
    fn remove(&mut self, uid: &str) -> Option<Node> {
        let node = self.nodes.remove(uid)?;
        for o in &node.owners {
            if let Some(set) = self.dependents.get_mut(&o.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
        }
        Some(node)
    }

    fn insert(&mut self, uid: String, node: Node) {
        self.remove(&uid);
        for o in &node.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        self.nodes.insert(uid, node);
    }

    fn dependents_of(&self, uid: &str) -> Vec<String> {
        self.dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// What the watches report to the graph.
enum Change {
    Upsert(Arc<Kind>, Box<DynamicObject>),
    Delete(String),
    /// A (re)list finished: these uids are all that exist of this resource.
    Synced(Arc<Kind>, HashSet<String>),
    /// The resource is no longer served (its CRD went away).
    Gone(Arc<Kind>),
}

/// Work for the workers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Work {
    AttemptToDelete(String),
    Orphan(String),
    Foreground(String),
}

struct Shared {
    client: kube::Client,
    graph: Mutex<Graph>,
    /// (group, kind) → resource, to resolve ownerReferences.
    kinds: Mutex<HashMap<(String, String), Arc<Kind>>>,
    work: mpsc::UnboundedSender<Work>,
    /// Failed attempts per item, for the back-off.
    failures: Mutex<HashMap<Work, u32>>,
}

type Graphed<T> = Result<T, kube::Error>;

pub async fn run(client: kube::Client) -> Result<(), Error> {
    let (work_tx, mut work_rx) = mpsc::unbounded_channel::<Work>();
    let (change_tx, mut change_rx) = mpsc::channel::<Change>(1024);
    let shared = Arc::new(Shared {
        client: client.clone(),
        graph: Mutex::new(Graph::default()),
        kinds: Mutex::new(HashMap::new()),
        work: work_tx,
        failures: Mutex::new(HashMap::new()),
    });

    // Resource watches, restarted whenever CRDs change the served set.
    let rediscover = {
        let client = client.clone();
        let shared = shared.clone();
        let change_tx = change_tx.clone();
        async move {
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            let mut crd_events = watcher(crds, watcher::Config::default())
                .default_backoff()
                .boxed();
            // Owned by this task: aborting it (controller restart) aborts every watch.
            let mut watches = tokio::task::JoinSet::new();
            let mut running: HashMap<(String, String), (Arc<Kind>, tokio::task::AbortHandle)> =
                HashMap::new();
            loop {
                match discover(&client).await {
                    Ok(found) => {
                        let mut map = HashMap::new();
                        let mut keep = HashSet::new();
                        for kind in found {
                            let key = (kind.ar.group.clone(), kind.ar.plural.clone());
                            map.insert((kind.ar.group.clone(), kind.ar.kind.clone()), kind.clone());
                            keep.insert(key.clone());
                            if let std::collections::hash_map::Entry::Vacant(slot) =
                                running.entry(key.clone())
                            {
                                if let Ok(mut g) = shared.graph.lock() {
                                    g.syncing.insert(key);
                                }
                                let task = watches.spawn(watch_resource(
                                    client.clone(),
                                    kind.clone(),
                                    change_tx.clone(),
                                ));
                                slot.insert((kind, task));
                            }
                        }
                        if let Ok(mut k) = shared.kinds.lock() {
                            *k = map;
                        }
                        let gone: Vec<_> = running
                            .keys()
                            .filter(|k| !keep.contains(*k))
                            .cloned()
                            .collect();
                        for key in gone {
                            if let Some((kind, task)) = running.remove(&key) {
                                task.abort();
                                if let Ok(mut g) = shared.graph.lock() {
                                    g.syncing.remove(&key);
                                }
                                let _ = change_tx.send(Change::Gone(kind)).await;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(controller = NAME, error = %e, "discovery failed");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        continue;
                    }
                }
                // Wait for a CRD change, then let a burst of them settle before rediscovering.
                loop {
                    match crd_events.next().await {
                        Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))) => break,
                        Some(_) => continue,
                        None => return,
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // The helper tasks live exactly as long as this one (a JoinSet aborts its tasks on drop).
    let mut helpers = tokio::task::JoinSet::new();
    helpers.spawn(rediscover);

    // The graph: applies changes and queues work.
    let graph_task = {
        let shared = shared.clone();
        async move {
            while let Some(change) = change_rx.recv().await {
                apply_change(&shared, change);
            }
        }
    };
    helpers.spawn(graph_task);

    // Workers: each item is handled by one task at a time (a set of items in flight).
    let in_flight: Arc<Mutex<HashSet<Work>>> = Arc::default();
    let limit = Arc::new(tokio::sync::Semaphore::new(8));
    while let Some(item) = work_rx.recv().await {
        let fresh = in_flight
            .lock()
            .map(|mut s| s.insert(item.clone()))
            .unwrap_or(false);
        if !fresh {
            // Already being handled: handle it again afterwards, as upstream's queue does.
            let shared = shared.clone();
            let item = item.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = shared.work.send(item);
            });
            continue;
        }
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let shared = shared.clone();
        let in_flight = in_flight.clone();
        tokio::spawn(async move {
            let result = handle(&shared, &item).await;
            if let Ok(mut s) = in_flight.lock() {
                s.remove(&item);
            }
            drop(permit);
            match result {
                Ok(()) => {
                    if let Ok(mut f) = shared.failures.lock() {
                        f.remove(&item);
                    }
                }
                Err(e) => {
                    let n = shared
                        .failures
                        .lock()
                        .map(|mut f| {
                            let n = f.entry(item.clone()).or_insert(0);
                            *n += 1;
                            *n
                        })
                        .unwrap_or(1);
                    let delay =
                        Duration::from_millis(250u64 << n.min(7)).min(Duration::from_secs(30));
                    tracing::debug!(controller = NAME, ?item, error = %e, ?delay, "retrying");
                    tokio::time::sleep(delay).await;
                    let _ = shared.work.send(item);
                }
            }
        });
    }
    Err(Error::Controller {
        name: NAME,
        detail: "the work queue ended".into(),
    })
}

/// Every resource the collector can track: list, watch and delete (Events excluded, as
/// upstream ignores them).
async fn discover(client: &kube::Client) -> Result<Vec<Arc<Kind>>, kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST)
                || !caps.supports_operation(verbs::WATCH)
                || !caps.supports_operation(verbs::DELETE)
                || ar.plural == "events"
            {
                continue;
            }
            out.push(Arc::new(Kind {
                namespaced: caps.scope == Scope::Namespaced,
                ar,
            }));
        }
    }
    Ok(out)
}

async fn watch_resource(client: kube::Client, kind: Arc<Kind>, tx: mpsc::Sender<Change>) {
    let api: Api<DynamicObject> = Api::all_with(client, &kind.ar);
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: HashSet<String> = HashSet::new();
    while let Some(ev) = stream.next().await {
        let change = match ev {
            Ok(watcher::Event::Apply(obj)) => Change::Upsert(kind.clone(), Box::new(obj)),
            Ok(watcher::Event::Delete(obj)) => match obj.metadata.uid {
                Some(uid) => Change::Delete(uid),
                None => continue,
            },
            Ok(watcher::Event::Init) => {
                listing.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(obj)) => {
                if let Some(uid) = &obj.metadata.uid {
                    listing.insert(uid.clone());
                }
                Change::Upsert(kind.clone(), Box::new(obj))
            }
            Ok(watcher::Event::InitDone) => {
                Change::Synced(kind.clone(), std::mem::take(&mut listing))
            }
            Err(e) => {
                tracing::debug!(controller = NAME, resource = %kind.ar.plural, error = %e, "watch error");
                continue;
            }
        };
        if tx.send(change).await.is_err() {
            return;
        }
    }
}

fn apply_change(shared: &Shared, change: Change) {
    let Ok(mut g) = shared.graph.lock() else {
        return;
    };
    let mut queue = Vec::new();
    match change {
        Change::Upsert(kind, obj) => {
            let Some(uid) = obj.metadata.uid.clone() else {
                return;
            };
            let node = Node {
                kind,
                namespace: obj.metadata.namespace.clone(),
                name: obj.metadata.name.clone().unwrap_or_default(),
                owners: obj.metadata.owner_references.clone().unwrap_or_default(),
                deleting: obj.metadata.deletion_timestamp.is_some(),
                finalizers: obj.metadata.finalizers.clone().unwrap_or_default(),
            };
            let was_deleting = g.nodes.get(&uid).is_some_and(|n| n.deleting);
            if node.deleting {
                if node.finalizers.iter().any(|f| f == ORPHAN) {
                    queue.push(Work::Orphan(uid.clone()));
                }
                if node.finalizers.iter().any(|f| f == FOREGROUND) {
                    queue.push(Work::Foreground(uid.clone()));
                    if !was_deleting {
                        for d in g.dependents_of(&uid) {
                            queue.push(Work::AttemptToDelete(d));
                        }
                    }
                }
            }
            // A dependent naming an owner the graph has never seen (after the initial lists)
            // may be dangling: verify it.
            let synced = g.syncing.is_empty();
            if node
                .owners
                .iter()
                .any(|o| synced && !g.nodes.contains_key(&o.uid))
                || node.owners.iter().any(|o| {
                    g.nodes
                        .get(&o.uid)
                        .is_some_and(|n| n.deleting && n.finalizers.iter().any(|f| f == FOREGROUND))
                })
            {
                queue.push(Work::AttemptToDelete(uid.clone()));
            }
            g.insert(uid, node);
        }
        Change::Delete(uid) => {
            if let Some(node) = g.remove(&uid) {
                for d in g.dependents_of(&uid) {
                    queue.push(Work::AttemptToDelete(d));
                }
                // An owner in foreground deletion may be waiting for this one.
                for o in node.owners {
                    queue.push(Work::Foreground(o.uid));
                }
            }
        }
        Change::Synced(kind, present) => {
            let stale: Vec<String> = g
                .nodes
                .iter()
                .filter(|(uid, n)| Arc::ptr_eq(&n.kind, &kind) && !present.contains(*uid))
                .map(|(uid, _)| uid.clone())
                .collect();
            for uid in stale {
                g.remove(&uid);
                for d in g.dependents_of(&uid) {
                    queue.push(Work::AttemptToDelete(d));
                }
            }
            let key = (kind.ar.group.clone(), kind.ar.plural.clone());
            let was_syncing = g.syncing.remove(&key);
            if was_syncing && g.syncing.is_empty() {
                // Everything is listed: now dangling references can be told from late ones.
                let known: HashSet<&String> = g.nodes.keys().collect();
                for (uid, n) in &g.nodes {
                    if n.owners.iter().any(|o| !known.contains(&o.uid)) {
                        queue.push(Work::AttemptToDelete(uid.clone()));
                    }
                }
            }
        }
        Change::Gone(kind) => {
            let gone: Vec<String> = g
                .nodes
                .iter()
                .filter(|(_, n)| {
                    n.kind.ar.group == kind.ar.group && n.kind.ar.plural == kind.ar.plural
                })
                .map(|(uid, _)| uid.clone())
                .collect();
            for uid in gone {
                g.remove(&uid);
                for d in g.dependents_of(&uid) {
                    queue.push(Work::AttemptToDelete(d));
                }
            }
        }
    }
    drop(g);
    for w in queue {
        let _ = shared.work.send(w);
    }
}

fn api_for(shared: &Shared, kind: &Kind, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace.filter(|_| kind.namespaced) {
        Some(ns) => Api::namespaced_with(shared.client.clone(), ns, &kind.ar),
        None => Api::all_with(shared.client.clone(), &kind.ar),
    }
}

fn node(shared: &Shared, uid: &str) -> Option<Node> {
    shared.graph.lock().ok()?.nodes.get(uid).cloned()
}

async fn handle(shared: &Shared, item: &Work) -> Graphed<()> {
    match item {
        Work::AttemptToDelete(uid) => attempt_to_delete(shared, uid).await,
        Work::Orphan(uid) => orphan_dependents(shared, uid).await,
        Work::Foreground(uid) => finish_foreground(shared, uid).await,
    }
}

/// The state of one owner, read live.
enum OwnerState {
    /// Exists and is not waiting for its dependents.
    Solid,
    /// Exists, being deleted in the foreground.
    WaitingForDependents,
    /// Gone (or replaced by another object of the same name).
    Absent,
}

async fn owner_state(
    shared: &Shared,
    dependent_ns: Option<&str>,
    owner: &OwnerReference,
) -> Graphed<OwnerState> {
    let group = owner
        .api_version
        .rsplit_once('/')
        .map(|(g, _)| g.to_string())
        .unwrap_or_default();
    let kind = shared
        .kinds
        .lock()
        .ok()
        .and_then(|k| k.get(&(group, owner.kind.clone())).cloned());
    let Some(kind) = kind else {
        // A kind the API does not serve: upstream treats it as absent only when the API says
        // so; an unknown kind cannot be verified, so the reference is kept.
        return Ok(OwnerState::Solid);
    };
    // Cluster-scoped dependents can only have cluster-scoped owners.
    if kind.namespaced && dependent_ns.is_none() {
        return Ok(OwnerState::Absent);
    }
    let api = api_for(shared, &kind, dependent_ns);
    match api.get_opt(&owner.name).await? {
        Some(o) if o.metadata.uid.as_deref() == Some(owner.uid.as_str()) => {
            let waiting = o.metadata.deletion_timestamp.is_some()
                && o.metadata
                    .finalizers
                    .as_ref()
                    .is_some_and(|f| f.iter().any(|f| f == FOREGROUND));
            Ok(if waiting {
                OwnerState::WaitingForDependents
            } else {
                OwnerState::Solid
            })
        }
        _ => Ok(OwnerState::Absent),
    }
}

async fn attempt_to_delete(shared: &Shared, uid: &str) -> Graphed<()> {
    let Some(n) = node(shared, uid) else {
        return Ok(());
    };
    let api = api_for(shared, &n.kind, n.namespace.as_deref());
    // The graph may lag: decide on the live object.
    let Some(live) = api.get_opt(&n.name).await? else {
        return Ok(());
    };
    if live.metadata.uid.as_deref() != Some(uid) {
        return Ok(());
    }
    let finalizers = live.metadata.finalizers.clone().unwrap_or_default();
    if live.metadata.deletion_timestamp.is_some() {
        if finalizers.iter().any(|f| f == FOREGROUND) {
            let _ = shared.work.send(Work::Foreground(uid.to_string()));
        }
        return Ok(());
    }
    let owners = live.metadata.owner_references.clone().unwrap_or_default();
    if owners.is_empty() {
        return Ok(());
    }
    let mut solid = Vec::new();
    let mut dangling = Vec::new();
    let mut waiting = Vec::new();
    for o in &owners {
        match owner_state(shared, n.namespace.as_deref(), o).await? {
            OwnerState::Solid => solid.push(o.uid.clone()),
            OwnerState::Absent => dangling.push(o.uid.clone()),
            OwnerState::WaitingForDependents => waiting.push(o.uid.clone()),
        }
    }
    if !solid.is_empty() {
        if dangling.is_empty() && waiting.is_empty() {
            return Ok(());
        }
        // Keep the object for its live owners; drop the references that hold nothing.
        let keep: Vec<&OwnerReference> = owners.iter().filter(|o| solid.contains(&o.uid)).collect();
        let patch = json!({"metadata": {
            "ownerReferences": keep,
            "uid": uid,
            "resourceVersion": live.metadata.resource_version,
        }});
        api.patch(&n.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        return Ok(());
    }
    // Foreground only matters for a dependent that has dependents itself (upstream).
    let has_dependents = shared
        .graph
        .lock()
        .map(|g| !g.dependents_of(uid).is_empty())
        .unwrap_or(false);
    let policy =
        if (!waiting.is_empty() && has_dependents) || finalizers.iter().any(|f| f == FOREGROUND) {
            "Foreground"
        } else if finalizers.iter().any(|f| f == ORPHAN) {
            "Orphan"
        } else {
            "Background"
        };
    tracing::debug!(controller = NAME, name = %n.name, resource = %n.kind.ar.plural, policy, "deleting a dependent");
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        propagation_policy: Some(match policy {
            "Foreground" => kube::api::PropagationPolicy::Foreground,
            "Orphan" => kube::api::PropagationPolicy::Orphan,
            _ => kube::api::PropagationPolicy::Background,
        }),
        ..Default::default()
    };
    match api.delete(&n.name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Remove `finalizer` from the owner (which the API then deletes when none remain).
async fn drop_finalizer(shared: &Shared, n: &Node, uid: &str, finalizer: &str) -> Graphed<()> {
    let api = api_for(shared, &n.kind, n.namespace.as_deref());
    let Some(live) = api.get_opt(&n.name).await? else {
        return Ok(());
    };
    if live.metadata.uid.as_deref() != Some(uid) {
        return Ok(());
    }
    let finalizers = live.metadata.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let rest: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
    let patch = json!({"metadata": {
        "finalizers": rest,
        "resourceVersion": live.metadata.resource_version,
    }});
    match api
        .patch(&n.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn orphan_dependents(shared: &Shared, uid: &str) -> Graphed<()> {
    let Some(n) = node(shared, uid) else {
        return Ok(());
    };
    let deps: Vec<(String, Node)> = shared
        .graph
        .lock()
        .map(|g| {
            g.dependents_of(uid)
                .into_iter()
                .filter_map(|d| g.nodes.get(&d).cloned().map(|n| (d, n)))
                .collect()
        })
        .unwrap_or_default();
    for (duid, d) in deps {
        let api = api_for(shared, &d.kind, d.namespace.as_deref());
        let Some(live) = api.get_opt(&d.name).await? else {
            continue;
        };
        if live.metadata.uid.as_deref() != Some(duid.as_str()) {
            continue;
        }
        let refs = live.metadata.owner_references.clone().unwrap_or_default();
        if !refs.iter().any(|r| r.uid == uid) {
            continue;
        }
        let keep: Vec<&OwnerReference> = refs.iter().filter(|r| r.uid != uid).collect();
        let patch = json!({"metadata": {
            "ownerReferences": keep,
            "resourceVersion": live.metadata.resource_version,
        }});
        match api
            .patch(&d.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    drop_finalizer(shared, &n, uid, ORPHAN).await
}

async fn finish_foreground(shared: &Shared, uid: &str) -> Graphed<()> {
    let Some(n) = node(shared, uid) else {
        return Ok(());
    };
    if !n.deleting || !n.finalizers.iter().any(|f| f == FOREGROUND) {
        return Ok(());
    }
    let remaining = shared
        .graph
        .lock()
        .map(|g| g.dependents_of(uid).len())
        .unwrap_or(1);
    if remaining > 0 {
        // Their deletion events bring this owner back (Change::Delete queues it).
        return Ok(());
    }
    drop_finalizer(shared, &n, uid, FOREGROUND).await
}
