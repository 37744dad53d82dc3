//! The scheduler's view of the cluster, fed by its watches: every node with the sum of what
//! the pods on it request, their host ports and their images, and every pod bound (or
//! *assumed*: chosen here, binding in flight) to a node — upstream's scheduler cache and
//! `NodeInfo`.
//!
//! Invariants: a node's `requested` is always the sum over the pods in `pods` on it; a pod is
//! counted on at most one node; terminated pods (Succeeded/Failed) count nowhere, as upstream's
//! informer filters them out; an assumed pod stays counted until its binding fails or the
//! watch confirms it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Taint};

use crate::api::matching::Labels;
use crate::api::quantity::Milli;

use super::score::ZONE_LABEL;

/// Upstream's defaults for containers without requests, used only for scoring
/// (`schedutil.DefaultMilliCPURequest`, `DefaultMemoryRequest`).
const DEFAULT_MILLI_CPU: i64 = 100;
const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// Amounts of resources: cpu in millicores, everything else in whole units (bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Extended resources (`example.com/gpu`, hugepages-*), whole units.
    pub scalar: BTreeMap<String, i64>,
}

fn parse(q: &str, milli: bool) -> i64 {
    let m = Milli::parse(q).map(|m| m.0).unwrap_or(0);
    let v = if milli { m } else { (m + 999) / 1000 };
    v.clamp(0, i64::MAX as i128) as i64
}

impl Resources {
    pub fn from_list(
        list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    ) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            match name.as_str() {
                "cpu" => r.milli_cpu = parse(&q.0, true),
                "memory" => r.memory = parse(&q.0, false),
                "ephemeral-storage" => r.ephemeral_storage = parse(&q.0, false),
                "pods" => {}
                other => {
                    r.scalar.insert(other.to_string(), parse(&q.0, false));
                }
            }
        }
        r
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(o.milli_cpu);
        self.memory = self.memory.saturating_add(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_add(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = e.saturating_add(*v);
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(o.milli_cpu);
        self.memory = self.memory.saturating_sub(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_sub(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            if let Some(e) = self.scalar.get_mut(k) {
                *e = e.saturating_sub(*v);
            }
        }
    }

    /// Component-wise maximum (init containers run one at a time).
    fn max(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }
}

/// What the scheduler needs of a pod, computed once per object version.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub node_name: String,
    pub priority: i32,
    pub requests: Resources,
    /// cpu and memory with upstream's non-zero defaults, for scoring.
    pub nonzero: (i64, i64),
    /// (protocol, hostIP, hostPort) of every container port with a hostPort.
    pub host_ports: Vec<(String, String, i32)>,
    /// The controller owner's uid (replicas of one owner are spread apart).
    pub owner: Option<String>,
    pub deleting: bool,
    pub has_required_anti_affinity: bool,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let meta = &pod.metadata;
        let spec = pod.spec.clone().unwrap_or_default();
        let mut requests = Resources::default();
        let (mut cpu, mut mem) = (0i64, 0i64);
        let mut host_ports = Vec::new();
        for c in &spec.containers {
            let r = Resources::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
            cpu += if r.milli_cpu == 0 {
                DEFAULT_MILLI_CPU
            } else {
                r.milli_cpu
            };
            mem += if r.memory == 0 {
                DEFAULT_MEMORY
            } else {
                r.memory
            };
            requests.add(&r);
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                    host_ports.push((
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                        hp,
                    ));
                }
            }
        }
        for c in spec.init_containers.iter().flatten() {
            let r = Resources::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
            requests.max(&r);
        }
        if let Some(o) = &spec.overhead {
            requests.add(&Resources::from_list(Some(o)));
        }
        let has_required_anti_affinity = spec
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .is_some_and(|t| !t.is_empty());
        PodInfo {
            uid: meta.uid.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            node_name: spec.node_name.clone().unwrap_or_default(),
            priority: spec.priority.unwrap_or(0),
            requests,
            nonzero: (cpu, mem),
            host_ports,
            owner: meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
            deleting: meta.deletion_timestamp.is_some(),
            has_required_anti_affinity,
            pod,
        }
    }

    pub fn terminated(&self) -> bool {
        self.pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed")
    }
}

/// A node and what is placed on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub name: String,
    pub labels: Labels,
    /// Spec taints plus, for a node whose Ready condition is not True and that does not
    /// carry the matching taint yet, the NoSchedule taint the node lifecycle controller
    /// will add (`not-ready` / `unreachable`): a node is only usable when Ready.
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    pub allowed_pods: i64,
    pub requested: Resources,
    pub nonzero_requested: (i64, i64),
    /// uids of the pods on this node.
    pub pods: HashSet<String>,
    pub used_ports: Vec<(String, String, i32)>,
    /// image name → size in bytes.
    pub images: HashMap<String, i64>,
    /// `topology.kubernetes.io/zone`, read once (scoring asks for it per node per pod).
    pub zone: Option<String>,
    /// controller owner uid → placed pods of that owner here (for spreading replicas; empty
    /// on most nodes, and an empty map answers a lookup without hashing).
    pub owners: HashMap<String, i64>,
}

pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";

impl NodeInfo {
    fn new(node: Arc<Node>) -> NodeInfo {
        let name = node.metadata.name.clone().unwrap_or_default();
        let spec = node.spec.clone().unwrap_or_default();
        let status = node.status.clone().unwrap_or_default();
        let mut taints = spec.taints.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.clone());
        let implied = match ready.as_deref() {
            Some("True") => None,
            Some("Unknown") => Some(TAINT_UNREACHABLE),
            _ => Some(TAINT_NOT_READY),
        };
        if let Some(key) = implied {
            if !taints.iter().any(|t| {
                (t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE) && t.effect == "NoSchedule"
            }) {
                taints.push(Taint {
                    key: key.into(),
                    effect: "NoSchedule".into(),
                    value: None,
                    time_added: None,
                });
            }
        }
        let alloc_list = status.allocatable.as_ref().or(status.capacity.as_ref());
        let allowed_pods = alloc_list
            .and_then(|l| l.get("pods"))
            .map(|q| parse(&q.0, false))
            .unwrap_or(110);
        let mut images = HashMap::new();
        for img in status.images.iter().flatten() {
            for n in img.names.iter().flatten() {
                images.insert(n.clone(), img.size_bytes.unwrap_or(0));
            }
        }
        let labels = node.metadata.labels.clone().unwrap_or_default();
        NodeInfo {
            name,
            zone: labels.get(ZONE_LABEL).cloned(),
            owners: HashMap::new(),
            labels,
            taints,
            unschedulable: spec.unschedulable.unwrap_or(false),
            allocatable: Resources::from_list(alloc_list),
            allowed_pods,
            requested: Resources::default(),
            nonzero_requested: (0, 0),
            pods: HashSet::new(),
            used_ports: Vec::new(),
            images,
            node,
        }
    }

    /// Count `p` here; false if it already was.
    pub fn add_pod(&mut self, p: &PodInfo) -> bool {
        if self.pods.insert(p.uid.clone()) {
            if let Some(o) = &p.owner {
                *self.owners.entry(o.clone()).or_default() += 1;
            }
            self.requested.add(&p.requests);
            self.nonzero_requested.0 += p.nonzero.0;
            self.nonzero_requested.1 += p.nonzero.1;
            self.used_ports.extend(p.host_ports.iter().cloned());
            return true;
        }
        false
    }

    /// Stop counting `p` here; false if it was not.
    pub fn remove_pod(&mut self, p: &PodInfo) -> bool {
        if self.pods.remove(&p.uid) {
            if let Some(o) = &p.owner {
                if let Some(c) = self.owners.get_mut(o) {
                    *c -= 1;
                    if *c <= 0 {
                        self.owners.remove(o);
                    }
                }
            }
            self.requested.sub(&p.requests);
            self.nonzero_requested.0 -= p.nonzero.0;
            self.nonzero_requested.1 -= p.nonzero.1;
            for hp in &p.host_ports {
                if let Some(i) = self.used_ports.iter().position(|u| u == hp) {
                    self.used_ports.swap_remove(i);
                }
            }
            return true;
        }
        false
    }
}

/// Nodes and placed pods.
#[derive(Debug, Default)]
pub struct Cache {
    /// By name. A hash map: the filter loop looks up hundreds of nodes per pod, and a
    /// B-tree's string comparisons were the scheduler's largest single cost at 5,000 nodes.
    pub nodes: HashMap<String, NodeInfo>,
    /// Node names in a fixed order, for round-robin search starts.
    pub node_order: Vec<String>,
    /// Every pod placed on a node (bound or assumed), by uid.
    pub pods: HashMap<String, PodInfo>,
    pub assumed: HashSet<String>,
    /// Placed pods with required anti-affinity terms (checked against every incoming pod).
    pub anti_affinity_pods: HashSet<String>,
    /// controller owner uid → zone → pods of that owner placed on nodes of the zone (for
    /// spreading replicas across zones), kept as pods and nodes come and go, so scoring
    /// never walks an owner's pods.
    pub owner_zones: HashMap<String, HashMap<String, i64>>,
}

/// Add `delta` pods of `owner` to `zone`'s count.
fn count_zone(
    owner_zones: &mut HashMap<String, HashMap<String, i64>>,
    owner: &str,
    zone: &str,
    delta: i64,
) {
    let per_zone = owner_zones.entry(owner.to_string()).or_default();
    let c = per_zone.entry(zone.to_string()).or_default();
    *c += delta;
    if *c <= 0 {
        per_zone.remove(zone);
    }
    if per_zone.is_empty() {
        owner_zones.remove(owner);
    }
}

/// What changed, so the queue knows whether unschedulable pods may now fit.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    None,
    /// Room or eligibility may have grown (node added/relabelled, pod removed, ...).
    MayHelp,
}

impl Cache {
    /// A node added or updated. Its placed pods stay counted.
    pub fn upsert_node(&mut self, node: Arc<Node>) -> Change {
        let mut info = NodeInfo::new(node);
        let change = match self.nodes.get(&info.name) {
            Some(old) => {
                let same = old.labels == info.labels
                    && old.taints == info.taints
                    && old.unschedulable == info.unschedulable
                    && old.allocatable == info.allocatable
                    && old.allowed_pods == info.allowed_pods
                    && old.images.len() == info.images.len();
                info.requested = old.requested.clone();
                info.nonzero_requested = old.nonzero_requested;
                info.pods = old.pods.clone();
                info.used_ports = old.used_ports.clone();
                info.owners = old.owners.clone();
                if old.zone != info.zone {
                    // Relabelled: its owners' pods move to the new zone.
                    for (owner, c) in &old.owners {
                        if let Some(z) = &old.zone {
                            count_zone(&mut self.owner_zones, owner, z, -c);
                        }
                        if let Some(z) = &info.zone {
                            count_zone(&mut self.owner_zones, owner, z, *c);
                        }
                    }
                }
                if same {
                    Change::None
                } else {
                    Change::MayHelp
                }
            }
            None => {
                self.node_order.push(info.name.clone());
                // Pods seen before their node (watch order) are counted now.
                let name = info.name.clone();
                for p in self.pods.values().filter(|p| p.node_name == name) {
                    if info.add_pod(p) {
                        if let (Some(o), Some(z)) = (&p.owner, &info.zone) {
                            count_zone(&mut self.owner_zones, o, z, 1);
                        }
                    }
                }
                Change::MayHelp
            }
        };
        self.nodes.insert(info.name.clone(), info);
        change
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(old) = self.nodes.remove(name) {
            self.node_order.retain(|n| n != name);
            if let Some(z) = &old.zone {
                for (owner, c) in &old.owners {
                    count_zone(&mut self.owner_zones, owner, z, -c);
                }
            }
        }
    }

    /// Place (or move, or update) a pod that has a node. Returns whether a pod left a node.
    pub fn place(&mut self, p: PodInfo) -> Change {
        let change = self.remove_pod(&p.uid);
        if p.terminated() {
            return Change::MayHelp;
        }
        if let Some(n) = self.nodes.get_mut(&p.node_name) {
            if n.add_pod(&p) {
                if let (Some(o), Some(z)) = (&p.owner, &n.zone) {
                    count_zone(&mut self.owner_zones, o, z, 1);
                }
            }
        }
        if p.has_required_anti_affinity {
            self.anti_affinity_pods.insert(p.uid.clone());
        }
        self.pods.insert(p.uid.clone(), p);
        change
    }

    pub fn remove_pod(&mut self, uid: &str) -> Change {
        self.assumed.remove(uid);
        self.anti_affinity_pods.remove(uid);
        match self.pods.remove(uid) {
            Some(old) => {
                if let Some(n) = self.nodes.get_mut(&old.node_name) {
                    if n.remove_pod(&old) {
                        if let (Some(o), Some(z)) = (&old.owner, &n.zone) {
                            count_zone(&mut self.owner_zones, o, z, -1);
                        }
                    }
                }
                Change::MayHelp
            }
            None => Change::None,
        }
    }

    /// Count a pod on `node` before the API confirms the binding.
    pub fn assume(&mut self, mut p: PodInfo, node: &str) {
        p.node_name = node.to_string();
        let uid = p.uid.clone();
        self.place(p);
        self.assumed.insert(uid);
    }
}
