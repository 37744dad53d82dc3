//! `GET /stats/summary`: upstream's `stats/v1alpha1` Summary (`node` with its `cpu` and
//! `memory`, `pods[]` with `podRef`, `cpu`, `memory` and `containers[]`), the fields
//! metrics-server and `kubectl get --raw .../proxy/stats/summary` users read. Fields we do
//! not measure (network, fs, swap) are left out, as upstream leaves out what cadvisor
//! lacks; a CPU rate not yet known omits `usageNanoCores`.

use serde_json::{json, Map, Value};

use super::{Sample, Snapshot};

/// The Summary for a snapshot; `memory_capacity` (bytes) gives the node's `availableBytes`.
pub fn render(s: &Snapshot, memory_capacity: Option<u64>) -> Value {
    let time = s.time.to_string();
    let mut node = Map::new();
    node.insert("nodeName".into(), json!(s.node_name));
    node.insert("systemContainers".into(), json!([]));
    insert_usage(&mut node, &s.node, &time, memory_capacity);
    let pods: Vec<Value> = s
        .pods
        .iter()
        .map(|p| {
            let mut pod = Map::new();
            pod.insert(
                "podRef".into(),
                json!({"name": p.name, "namespace": p.namespace, "uid": p.uid}),
            );
            if let Some(t) = &p.start_time {
                pod.insert("startTime".into(), json!(t));
            }
            let containers: Vec<Value> = p
                .containers
                .iter()
                .map(|c| {
                    let mut ctr = Map::new();
                    ctr.insert("name".into(), json!(c.name));
                    if let Some(t) = &c.start_time {
                        ctr.insert("startTime".into(), json!(t));
                    }
                    insert_usage(&mut ctr, &c.sample, &time, None);
                    Value::Object(ctr)
                })
                .collect();
            pod.insert("containers".into(), Value::Array(containers));
            insert_usage(&mut pod, &p.sample, &time, None);
            Value::Object(pod)
        })
        .collect();
    json!({"node": Value::Object(node), "pods": pods})
}

fn insert_usage(into: &mut Map<String, Value>, s: &Sample, time: &str, capacity: Option<u64>) {
    if let Some(cpu_ns) = s.usage.cpu_ns {
        let mut cpu = Map::new();
        cpu.insert("time".into(), json!(time));
        if let Some(n) = s.nano_cores {
            cpu.insert("usageNanoCores".into(), json!(n));
        }
        cpu.insert("usageCoreNanoSeconds".into(), json!(cpu_ns));
        into.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(m) = s.usage.memory {
        let mut mem = Map::new();
        mem.insert("time".into(), json!(time));
        if let Some(c) = capacity {
            mem.insert(
                "availableBytes".into(),
                json!(c.saturating_sub(m.working_set)),
            );
        }
        mem.insert("usageBytes".into(), json!(m.usage));
        mem.insert("workingSetBytes".into(), json!(m.working_set));
        mem.insert("rssBytes".into(), json!(m.rss));
        mem.insert("pageFaults".into(), json!(m.page_faults));
        mem.insert("majorPageFaults".into(), json!(m.major_page_faults));
        into.insert("memory".into(), Value::Object(mem));
    }
}

/// Total memory of the machine (`/proc/meminfo` MemTotal), for `availableBytes`.
pub fn memory_capacity() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::super::{cgroup, ContainerStats, PodStats, Sample, Snapshot};

    #[test]
    fn shape_as_upstream() {
        let usage = cgroup::Usage {
            cpu_ns: Some(5_000),
            memory: Some(cgroup::Memory {
                usage: 300,
                working_set: 200,
                rss: 100,
                page_faults: 1,
                major_page_faults: 0,
            }),
        };
        let s = Snapshot {
            node_name: "n1".into(),
            time: "2026-01-02T03:04:05Z".parse().unwrap(),
            node: Sample {
                usage,
                nano_cores: Some(42),
            },
            pods: vec![PodStats {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u".into(),
                start_time: None,
                sample: Sample {
                    usage,
                    nano_cores: None,
                },
                containers: vec![ContainerStats {
                    name: "c".into(),
                    start_time: Some("2026-01-02T03:00:00Z".into()),
                    sample: Sample {
                        usage,
                        nano_cores: Some(7),
                    },
                }],
            }],
        };
        let v = super::render(&s, Some(1000));
        assert_eq!(v["node"]["nodeName"], "n1");
        assert_eq!(v["node"]["cpu"]["usageNanoCores"], 42);
        assert_eq!(v["node"]["cpu"]["usageCoreNanoSeconds"], 5000);
        assert_eq!(v["node"]["memory"]["workingSetBytes"], 200);
        assert_eq!(v["node"]["memory"]["availableBytes"], 800);
        assert_eq!(v["node"]["cpu"]["time"], "2026-01-02T03:04:05Z");
        assert_eq!(v["pods"][0]["podRef"]["namespace"], "ns");
        assert!(v["pods"][0]["cpu"].get("usageNanoCores").is_none());
        assert_eq!(v["pods"][0]["containers"][0]["cpu"]["usageNanoCores"], 7);
        assert_eq!(v["pods"][0]["containers"][0]["memory"]["rssBytes"], 100);
    }
}
