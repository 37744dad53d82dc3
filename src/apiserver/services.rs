//! Service IP and node-port allocation, as upstream's allocators: a ClusterIP from the service
//! CIDR (10.43.0.0/16 by default, like k3s) for every Service that is not headless or
//! ExternalName, and node ports from 30000–32767 for NodePort and LoadBalancer Services.
//!
//! Uniqueness comes from the store, not from memory: each ClusterIP is claimed by creating its
//! `networking.k8s.io/v1` IPAddress object (create fails if it exists), the way upstream's
//! IPAddress-based allocator works; node ports are checked against the stored Services. The
//! claim is released when the Service is deleted.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::status::{ApiError, ApiResult};
use super::{storage, State};
use crate::store::RangeRequest;

const CIDR_BASE: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 0);
const CIDR_SIZE: u32 = 1 << 16;
const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;
/// The first usable address belongs to the `kubernetes` Service.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 1);

fn ip_key(state: &State, ip: &str) -> Option<String> {
    let ri = state
        .registry
        .lookup("networking.k8s.io", "v1", "ipaddresses")?;
    Some(storage::key(&ri, "", ip))
}

/// Claim `ip` for the Service `ns/name`; false if already taken.
async fn claim(state: &State, ip: &str, ns: &str, name: &str) -> ApiResult<bool> {
    let Some(key) = ip_key(state, ip) else {
        return Ok(true);
    };
    let obj = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {
            "name": ip,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": super::now_rfc3339(),
            "labels": {"ipaddress.kubernetes.io/ip-family": "IPv4", "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io"},
        },
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": ns, "name": name}},
    });
    let bytes = storage::encode(&obj)?;
    match state.store.create(&key, bytes).await {
        Ok(_) => Ok(true),
        Err(crate::store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(ApiError::internal(format!(
            "cannot allocate a service IP: {e}"
        ))),
    }
}

fn wants_cluster_ip(svc: &Value) -> bool {
    svc["spec"]["type"] != "ExternalName" && svc["spec"]["clusterIP"] != "None"
}

/// Fill in `clusterIP(s)`, IP family fields and node ports of a new Service.
pub async fn allocate(state: &State, svc: &mut Value) -> ApiResult<()> {
    let ns = svc["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = svc["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if wants_cluster_ip(svc) {
        let requested = svc["spec"]["clusterIP"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let ip = match requested {
            Some(ip) => {
                let parsed: Ipv4Addr = ip
                    .parse()
                    .map_err(|_| invalid_ip(&ip, "must be a valid IPv4 address"))?;
                let offset = u32::from(parsed).wrapping_sub(u32::from(CIDR_BASE));
                if offset == 0 || offset >= CIDR_SIZE - 1 {
                    return Err(invalid_ip(&ip, "provided IP is not in the valid range. The range of valid IPs is 10.43.0.0/16"));
                }
                if !claim(state, &ip, &ns, &name).await? {
                    return Err(invalid_ip(&ip, "provided IP is already allocated"));
                }
                ip
            }
            None => {
                let mut found = None;
                for _ in 0..64 {
                    let offset = rand::random_range(2..CIDR_SIZE - 1);
                    let ip = Ipv4Addr::from(u32::from(CIDR_BASE) + offset).to_string();
                    if claim(state, &ip, &ns, &name).await? {
                        found = Some(ip);
                        break;
                    }
                }
                found.ok_or_else(|| {
                    ApiError::internal("failed to allocate a serviceIP: range is full")
                })?
            }
        };
        svc["spec"]["clusterIP"] = json!(ip);
        svc["spec"]["clusterIPs"] = json!([ip]);
        svc["spec"]["ipFamilies"] = json!(["IPv4"]);
        svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
        if svc["spec"].get("internalTrafficPolicy").is_none() {
            svc["spec"]["internalTrafficPolicy"] = json!("Cluster");
        }
    }
    if matches!(
        svc["spec"]["type"].as_str(),
        Some("NodePort" | "LoadBalancer")
    ) {
        let mut used = used_node_ports(state).await;
        for port in svc["spec"]["ports"].as_array_mut().into_iter().flatten() {
            if port["nodePort"].as_i64().is_some_and(|p| p != 0) {
                continue;
            }
            let free = (0..200)
                .map(|_| rand::random_range(NODE_PORTS))
                .find(|p| !used.contains(p))
                .ok_or_else(|| {
                    ApiError::internal("failed to allocate a nodePort: range is full")
                })?;
            used.push(free);
            port["nodePort"] = json!(free);
        }
        if svc["spec"].get("externalTrafficPolicy").is_none() {
            svc["spec"]["externalTrafficPolicy"] = json!("Cluster");
        }
    }
    Ok(())
}

fn invalid_ip(ip: &str, why: &str) -> ApiError {
    ApiError::new(
        422,
        "Invalid",
        format!("Service is invalid: spec.clusterIPs: Invalid value: [\"{ip}\"]: {why}"),
    )
}

async fn used_node_ports(state: &State) -> Vec<i64> {
    let Some(ri) = state.registry.lookup("", "v1", "services") else {
        return Vec::new();
    };
    let Ok(resp) = state
        .store
        .range(RangeRequest {
            prefix: storage::prefix(&ri, None),
            ..Default::default()
        })
        .await
    else {
        return Vec::new();
    };
    resp.items
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .flat_map(|s| {
            s["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["nodePort"].as_i64())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Give back the ClusterIP of a deleted Service.
pub async fn release(state: &State, svc: &Value) {
    let Some(ip) = svc["spec"]["clusterIP"]
        .as_str()
        .filter(|ip| *ip != "None" && !ip.is_empty())
    else {
        return;
    };
    let Some(key) = ip_key(state, ip) else { return };
    if let Ok(Some(kv)) = state.store.get(&key, None).await {
        let _ = state.store.delete(&key, kv.mod_revision).await;
    }
}
