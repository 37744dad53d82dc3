//! Resource usage of the node, its pods and their containers, served by the kubelet API as
//! upstream's `/stats/summary` (the `stats/v1alpha1` Summary, `summary.rs`) and
//! `/metrics/resource` (Prometheus text, `resource.rs`) — what metrics-server and
//! `kubectl top` read.
//!
//! Figures come from cgroup v1 (`cgroup.rs`): the node is the root group, a pod is
//! `<cgroup root>[/burstable|/besteffort]/pod<uid>`, a container the newest attempt
//! `<name>-<attempt>` below it (the runtime's layout). Which pods exist and their names come
//! from the API (pods bound to this node), so a group with no pod (a leftover) is not shown.
//!
//! CPU rate (`usageNanoCores`): the difference of `cpuacct.usage` between this reading and an
//! earlier one at least `MIN_WINDOW` old, kept per group (cadvisor keeps its housekeeping
//! samples the same way). The first reading of a group has no rate, and upstream omits
//! the field then too. The kept readings are bounded by the groups that exist.

pub mod cgroup;
pub mod resource;
pub mod summary;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;

use crate::kubelet::pods::resources;

/// The shortest interval a CPU rate is computed over (shorter ones are noise).
const MIN_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot list the pods of node {node}: {source}")]
    Pods { node: String, source: kube::Error },
    #[error("reading cgroups failed: {0}")]
    Task(String),
}

/// One group's figures at one time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub usage: cgroup::Usage,
    /// CPU rate over the window since the kept earlier reading, in nanocores.
    pub nano_cores: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct ContainerStats {
    pub name: String,
    pub start_time: Option<String>,
    pub sample: Sample,
}

#[derive(Debug, Clone)]
pub struct PodStats {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub start_time: Option<String>,
    pub sample: Sample,
    pub containers: Vec<ContainerStats>,
}

/// Everything one request reports.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub node_name: String,
    pub time: jiff::Timestamp,
    pub node: Sample,
    pub pods: Vec<PodStats>,
}

/// Kept readings per cgroup: the newest two, so a rate always spans at least `MIN_WINDOW`
/// even when requests come closer together.
#[derive(Debug, Default, Clone, Copy)]
struct Kept {
    older: Option<(Instant, u64)>,
    newer: Option<(Instant, u64)>,
}

pub struct Collector {
    node_name: String,
    cgroup_root: String,
    clients: watch::Receiver<kube::Client>,
    kept: Mutex<HashMap<String, Kept>>,
}

impl Collector {
    pub fn new(
        node_name: String,
        cgroup_root: String,
        clients: watch::Receiver<kube::Client>,
    ) -> Collector {
        Collector {
            node_name,
            cgroup_root,
            clients,
            kept: Mutex::new(HashMap::new()),
        }
    }

    /// Read the node's, pods' and containers' figures now.
    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        let client = self.clients.borrow().clone();
        let api: kube::Api<Pod> = kube::Api::all(client);
        let lp =
            kube::api::ListParams::default().fields(&format!("spec.nodeName={}", self.node_name));
        let pods = api.list(&lp).await.map_err(|source| Error::Pods {
            node: self.node_name.clone(),
            source,
        })?;
        let root = self.cgroup_root.clone();
        // Many small file reads: off the async workers.
        let (node, read) = tokio::task::spawn_blocking(move || read_groups(&root, pods.items))
            .await
            .map_err(|e| Error::Task(e.to_string()))?;
        let now = Instant::now();
        let time = jiff::Timestamp::now();
        let mut kept = self
            .kept
            .lock()
            .map_err(|_| Error::Task("stats state poisoned".into()))?;
        let mut seen = HashMap::with_capacity(kept.len());
        let mut sample = |key: &str, usage: cgroup::Usage| {
            let nano_cores = usage.cpu_ns.and_then(|cpu| {
                let entry = kept.entry(key.to_string()).or_default();
                let rate = rate(entry, now, cpu);
                seen.insert(key.to_string(), ());
                rate
            });
            Sample { usage, nano_cores }
        };
        let node = sample("", node);
        let pods = read
            .into_iter()
            .map(|p| PodStats {
                sample: sample(&p.group, p.usage),
                containers: p
                    .containers
                    .into_iter()
                    .map(|c| ContainerStats {
                        sample: sample(&c.group, c.usage),
                        name: c.name,
                        start_time: c.start_time,
                    })
                    .collect(),
                namespace: p.namespace,
                name: p.name,
                uid: p.uid,
                start_time: p.start_time,
            })
            .collect();
        // Forget groups that are gone (bounded by what exists).
        kept.retain(|k, _| seen.contains_key(k));
        Ok(Snapshot {
            node_name: self.node_name.clone(),
            time,
            node,
            pods,
        })
    }
}

/// Rate against the newest kept reading at least `MIN_WINDOW` old; then keep this one.
fn rate(kept: &mut Kept, now: Instant, cpu: u64) -> Option<u64> {
    let base = [kept.newer, kept.older]
        .into_iter()
        .flatten()
        .find(|(t, _)| now.duration_since(*t) >= MIN_WINDOW);
    let rate = base.and_then(|(t, c)| {
        let dt = now.duration_since(t).as_nanos();
        // A counter that went back is a new group under the same name: no rate.
        let used = u128::from(cpu.checked_sub(c)?);
        u64::try_from(used.checked_mul(1_000_000_000)? / dt.max(1)).ok()
    });
    match kept.newer {
        Some((t, _)) if now.duration_since(t) < MIN_WINDOW => {
            // Too close to the newer one: keep the older base, refresh nothing.
        }
        _ => {
            kept.older = kept.newer;
            kept.newer = Some((now, cpu));
        }
    }
    rate
}

struct ReadContainer {
    name: String,
    group: String,
    start_time: Option<String>,
    usage: cgroup::Usage,
}

struct ReadPod {
    namespace: String,
    name: String,
    uid: String,
    start_time: Option<String>,
    group: String,
    usage: cgroup::Usage,
    containers: Vec<ReadContainer>,
}

fn read_groups(root: &str, pods: Vec<Pod>) -> (cgroup::Usage, Vec<ReadPod>) {
    let node = cgroup::read("");
    let mut out = Vec::new();
    for pod in pods {
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        let group = resources::pod_cgroup(root, resources::qos(&pod), &uid);
        let usage = cgroup::read(&group);
        if usage == cgroup::Usage::default() {
            // Not (or no longer) running here.
            continue;
        }
        let status = pod.status.clone().unwrap_or_default();
        let started = |name: &str| {
            status
                .container_statuses
                .iter()
                .flatten()
                .find(|s| s.name == name)
                .and_then(|s| s.state.as_ref()?.running.as_ref()?.started_at.as_ref())
                .map(|t| t.0.to_string())
        };
        // The newest attempt of each container that has a group.
        let mut newest: HashMap<String, u32> = HashMap::new();
        for child in cgroup::children(&group) {
            if let Some((name, attempt)) = child.rsplit_once('-') {
                if let Ok(a) = attempt.parse::<u32>() {
                    let e = newest.entry(name.to_string()).or_insert(a);
                    *e = (*e).max(a);
                }
            }
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let containers = spec
            .containers
            .iter()
            .filter_map(|c| {
                let attempt = newest.get(&c.name)?;
                let cgroup = format!("{group}/{}-{attempt}", c.name);
                Some(ReadContainer {
                    usage: cgroup::read(&cgroup),
                    group: cgroup,
                    name: c.name.clone(),
                    start_time: started(&c.name),
                })
            })
            .collect();
        out.push(ReadPod {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid,
            start_time: status.start_time.as_ref().map(|t| t.0.to_string()),
            group,
            usage,
            containers,
        });
    }
    (node, out)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn cpu_rate_spans_at_least_the_minimum_window() {
        let mut k = super::Kept::default();
        let t0 = Instant::now();
        assert_eq!(
            super::rate(&mut k, t0, 1_000),
            None,
            "first reading has no rate"
        );
        // 100 ms later: too close, no base yet, and the first reading stays the base.
        assert_eq!(
            super::rate(&mut k, t0 + Duration::from_millis(100), 2_000),
            None
        );
        // 2 s after the first: 0.5 CPU-seconds used → 250 millicores.
        let r = super::rate(&mut k, t0 + Duration::from_secs(2), 500_001_000);
        assert_eq!(r, Some(250_000_000));
        // A second request right after still uses a base ≥ 1 s old (the first reading).
        let r = super::rate(&mut k, t0 + Duration::from_millis(2100), 500_001_000);
        assert_eq!(r, Some(238_095_238));
        // A counter that went back (a new group) gives no rate.
        assert_eq!(super::rate(&mut k, t0 + Duration::from_secs(5), 10), None);
    }
}
