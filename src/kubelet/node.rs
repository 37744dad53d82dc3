//! The Node object: registration and status, as upstream's `kubelet_node_status.go`. The
//! kubelet creates its Node with labels, then writes `status` (capacity and allocatable,
//! addresses, nodeInfo, conditions) through `/status`; an existing Node (a restart) keeps its
//! other fields and gets our labels back.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use kube::api::PostParams;
use kube::Api;
use serde_json::{json, Value};

use super::eviction::{Signal, Signals};
use super::Config;

/// Upstream's default `--max-pods`.
const MAX_PODS: &str = "110";

pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

fn labels(cfg: &Config) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("kubernetes.io/hostname".to_string(), cfg.hostname.clone());
    l.insert("kubernetes.io/os".into(), "linux".into());
    l.insert("kubernetes.io/arch".into(), arch().into());
    l.insert("beta.kubernetes.io/os".into(), "linux".into());
    l.insert("beta.kubernetes.io/arch".into(), arch().into());
    for (k, v) in &cfg.extra_labels {
        l.insert(k.clone(), v.clone());
    }
    l
}

/// Create the Node if needed and write its status; returns its uid.
pub async fn register(client: &kube::Client, cfg: &Config) -> Result<String, kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let node = match api.get_opt(&cfg.node_name).await? {
        Some(mut n) => {
            let want = labels(cfg);
            let have = n.metadata.labels.get_or_insert_with(BTreeMap::new);
            if want.iter().any(|(k, v)| have.get(k) != Some(v)) {
                have.extend(want);
                api.replace(&cfg.node_name, &PostParams::default(), &n)
                    .await?
            } else {
                n
            }
        }
        None => {
            let n: Node = serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": cfg.node_name, "labels": labels(cfg)},
                "spec": {},
            }))
            .map_err(kube::Error::SerdeError)?;
            match api.create(&PostParams::default(), &n).await {
                Ok(n) => n,
                Err(kube::Error::Api(e)) if e.code == 409 => api.get(&cfg.node_name).await?,
                Err(e) => return Err(e),
            }
        }
    };
    let signals = Signals::read(&cfg.data_dir);
    update_status(client, cfg, status(cfg, &signals, &[])).await?;
    Ok(node.metadata.uid.unwrap_or_default())
}

/// Write `status`, keeping each condition's lastTransitionTime while its status is unchanged.
pub async fn update_status(
    client: &kube::Client,
    cfg: &Config,
    mut status: Value,
) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let mut node = api.get(&cfg.node_name).await?;
    let old = serde_json::to_value(&node.status).unwrap_or(Value::Null);
    if let Some(conds) = status["conditions"].as_array_mut() {
        for c in conds.iter_mut() {
            let prev = old["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["type"] == c["type"]);
            if let Some(p) = prev.filter(|p| p["status"] == c["status"]) {
                c["lastTransitionTime"] = p["lastTransitionTime"].clone();
            }
        }
    }
    node.status = Some(serde_json::from_value(status).map_err(kube::Error::SerdeError)?);
    api.replace_status(&cfg.node_name, &PostParams::default(), &node)
        .await?;
    Ok(())
}

/// The status minus heartbeat times: what decides whether a write is due before the minute.
pub fn comparable(status: &Value) -> Value {
    let mut s = status.clone();
    if let Some(conds) = s["conditions"].as_array_mut() {
        for c in conds.iter_mut() {
            if let Some(o) = c.as_object_mut() {
                o.remove("lastHeartbeatTime");
                o.remove("lastTransitionTime");
            }
        }
    }
    s
}

fn now() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// The node's status now, from this machine: capacity, allocatable (capacity minus the
/// reservations and hard-eviction thresholds), nodeInfo and the pressure conditions.
pub fn status(cfg: &Config, signals: &Signals, crossed: &[Signal]) -> Value {
    let cpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as u64;
    let mem = signals.memory_capacity;
    let disk = signals.fs_capacity;
    let now = now();
    let condition = |ty: &str, status: &str, reason: &str, message: &str| {
        json!({"type": ty, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let reserved = cfg.system_reserved.plus(cfg.kube_reserved);
    let hard = |sig: Signal, cap: u64| cfg.eviction_hard.get(sig).map(|a| a.of(cap)).unwrap_or(0);
    let capacity = json!({
        "cpu": cpu.to_string(),
        "memory": format!("{}Ki", mem / 1024),
        "pods": MAX_PODS,
        "ephemeral-storage": format!("{}Ki", disk / 1024),
    });
    let cpu_alloc = (cpu * 1000).saturating_sub(reserved.cpu_milli);
    let mem_alloc = mem
        .saturating_sub(reserved.memory)
        .saturating_sub(hard(Signal::MemoryAvailable, mem));
    let disk_alloc = disk
        .saturating_sub(reserved.ephemeral)
        .saturating_sub(hard(Signal::NodefsAvailable, disk));
    let allocatable = json!({
        "cpu": if cpu_alloc.is_multiple_of(1000) { (cpu_alloc / 1000).to_string() } else { format!("{cpu_alloc}m") },
        "memory": format!("{}Ki", mem_alloc / 1024),
        "pods": MAX_PODS,
        "ephemeral-storage": disk_alloc.to_string(),
    });
    let under = |c: &str| crossed.iter().any(|s| s.condition() == c);
    let conditions = vec![
        if under("MemoryPressure") {
            condition(
                "MemoryPressure",
                "True",
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            )
        } else {
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            )
        },
        if under("DiskPressure") {
            condition(
                "DiskPressure",
                "True",
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
            )
        } else {
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            )
        },
        if under("PIDPressure") {
            condition(
                "PIDPressure",
                "True",
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            )
        } else {
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            )
        },
        condition(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ];
    json!({
        "capacity": capacity,
        "allocatable": allocatable,
        "addresses": [
            {"type": "InternalIP", "address": cfg.node_ip.to_string()},
            {"type": "Hostname", "address": cfg.hostname},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.kubelet_port}},
        "nodeInfo": {
            "machineID": read_trim("/etc/machine-id"),
            "systemUUID": read_trim("/sys/class/dmi/id/product_uuid"),
            "bootID": read_trim("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": read_trim("/proc/sys/kernel/osrelease"),
            "osImage": os_image(),
            "containerRuntimeVersion": format!("rampart://{}", env!("CARGO_PKG_VERSION")),
            // The Kubernetes form the apiserver's /version reports, as kubectl expects.
            "kubeletVersion": crate::api::version::git_version(),
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": arch(),
        },
        "conditions": conditions,
    })
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `PRETTY_NAME` from /etc/os-release, as upstream.
fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}
