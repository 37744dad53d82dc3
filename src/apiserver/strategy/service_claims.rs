//! Service ClusterIP and NodePort claims, as upstream's allocators: a ClusterIP from the service
//! CIDR (10.43.0.0/16 by default, like k3s) for every Service that is not headless or
//! ExternalName, and node ports from 30000–32767 for NodePort and LoadBalancer Services.
//!
//! Invariants:
//! - Uniqueness comes from the store, never from memory: a ClusterIP is claimed by creating its
//!   `networking.k8s.io/v1` IPAddress object, a node port by creating the key
//!   `/registry/ranges/servicenodeports/<port>` (upstream keeps its port bitmap under
//!   `/registry/ranges/servicenodeports`); the store's create-if-absent makes two concurrent
//!   Services unable to get the same IP or port.
//! - Claims are made only after validation and admission (the Service strategy calls
//!   [`claim`] just before the store write) and are held by a [`Claims`] guard: unless the
//!   write commits, dropping the guard gives them back (a 409, a 404 namespace, a quota
//!   refusal, a cancelled request). Each claim records the Service's namespace, name and uid,
//!   and is released only by its owner (a later Service that got the same IP keeps it).
//! - While a guard lives its keys are "in flight", so the repair loop (`strategy::repair`)
//!   never mistakes a claim whose Service is being written for an orphan.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::{storage, State};
use crate::store::Backend;

pub const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

/// The service CIDR (`--service-cidr`): set once by the server before the API server starts
/// (one API server per process); k3s's 10.43.0.0/16 until then (and in unit tests).
static SERVICE_CIDR: std::sync::OnceLock<(Ipv4Addr, u8)> = std::sync::OnceLock::new();

/// Use `base/prefix` as the service CIDR for this process (ignored if already set). The
/// caller has validated it (IPv4, host bits clear, prefix 12..=30 as kube-apiserver).
pub fn set_service_cidr(base: Ipv4Addr, prefix: u8) {
    let _ = SERVICE_CIDR.set((base, prefix));
}

fn cidr() -> (Ipv4Addr, u32, u8) {
    let (base, prefix) = SERVICE_CIDR
        .get()
        .copied()
        .unwrap_or((Ipv4Addr::new(10, 43, 0, 0), 16));
    (base, 1u32 << (32 - u32::from(prefix.clamp(12, 30))), prefix)
}

/// The first usable address of the service CIDR belongs to the `kubernetes` Service.
pub fn kubernetes_service_ip() -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr().0) + 1)
}
/// Random picks before a full range is reported (upstream walks its bitmap instead).
const RANDOM_TRIES: usize = 64;

/// The label upstream's allocator puts on the IPAddress objects it manages; only those are
/// ever released or repaired.
pub const MANAGED_BY: (&str, &str) = ("ipaddress.kubernetes.io/managed-by", "ipallocator.k8s.io");
/// The owning Service's uid on an IPAddress (upstream's parentRef has no uid).
const OWNER_UID: &str = "rampart.io/service-uid";

/// Who holds a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Owner {
    pub fn of(svc: &Value) -> Owner {
        let s = |f: &str| svc["metadata"][f].as_str().unwrap_or_default().to_string();
        Owner {
            namespace: s("namespace"),
            name: s("name"),
            uid: s("uid"),
        }
    }

    /// Whether a claim recorded for `other` belongs to this Service (a claim without a uid,
    /// made before uids were recorded, matches by name).
    fn holds(&self, other: &Owner) -> bool {
        self.namespace == other.namespace
            && self.name == other.name
            && (other.uid.is_empty() || self.uid.is_empty() || self.uid == other.uid)
    }
}

/// The IPs and node ports a Service object says it has.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Held {
    pub ips: BTreeSet<String>,
    pub ports: BTreeSet<i64>,
}

pub fn held_by(svc: &Value) -> Held {
    let mut held = Held::default();
    if wants_cluster_ip(svc) {
        let ips = svc["spec"]["clusterIPs"].as_array().cloned();
        let single = svc["spec"]["clusterIP"].clone();
        for ip in ips.unwrap_or_default().iter().chain([&single]) {
            if let Some(ip) = ip.as_str().filter(|ip| !ip.is_empty() && *ip != "None") {
                held.ips.insert(ip.to_string());
            }
        }
    }
    if needs_node_ports(svc) {
        for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(n) = p["nodePort"].as_i64().filter(|n| *n != 0) {
                held.ports.insert(n);
            }
        }
    }
    if needs_health_check_port(svc) {
        if let Some(n) = svc["spec"]["healthCheckNodePort"]
            .as_i64()
            .filter(|n| *n != 0)
        {
            held.ports.insert(n);
        }
    }
    held
}

/// A LoadBalancer Service with `externalTrafficPolicy: Local` gets a health check node port
/// (upstream's `needsHCNodePort`): load balancers probe it to find the nodes with local
/// endpoints.
pub fn needs_health_check_port(svc: &Value) -> bool {
    svc["spec"]["type"] == "LoadBalancer" && svc["spec"]["externalTrafficPolicy"] == "Local"
}

/// Whether ports of `svc` without a node port get one: always for NodePort; for
/// LoadBalancer unless `allocateLoadBalancerNodePorts: false` (a load balancer that sends
/// traffic straight to the pods needs none).
fn allocates_node_ports(svc: &Value) -> bool {
    svc["spec"]["type"] != "LoadBalancer" || svc["spec"]["allocateLoadBalancerNodePorts"] != false
}

pub fn wants_cluster_ip(svc: &Value) -> bool {
    svc["spec"]["type"] != "ExternalName" && svc["spec"]["clusterIP"] != "None"
}

pub fn needs_node_ports(svc: &Value) -> bool {
    matches!(
        svc["spec"]["type"].as_str(),
        Some("NodePort" | "LoadBalancer")
    )
}

/// Whether `ip` may be asked for: an IPv4 address inside the service range, not its network
/// or broadcast address.
pub fn ip_in_range(ip: &str) -> Result<(), String> {
    let parsed: Ipv4Addr = ip
        .parse()
        .map_err(|_| "must be a valid IPv4 address".to_string())?;
    let (base, size, prefix) = cidr();
    let offset = u32::from(parsed).wrapping_sub(u32::from(base));
    if offset == 0 || offset >= size - 1 {
        return Err(format!(
            "provided IP is not in the valid range. The range of valid IPs is {base}/{prefix}"
        ));
    }
    Ok(())
}

/// Keys whose claims are being written right now (their Service is not stored yet).
#[derive(Default)]
pub struct InFlight(Mutex<HashMap<String, usize>>);

impl InFlight {
    fn add(&self, key: &str) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(key.to_string()).or_default() += 1;
        }
    }

    fn remove(&self, key: &str) {
        if let Ok(mut m) = self.0.lock() {
            if let Some(n) = m.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    m.remove(key);
                }
            }
        }
    }

    /// A copy of the keys in flight now.
    pub fn snapshot(&self) -> BTreeSet<String> {
        self.0
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// Claims made for one write. Dropped without [`Claims::commit`], it gives them back.
pub struct Claims {
    store: Arc<dyn Backend>,
    state: Arc<State>,
    /// (key, revision that created the claim)
    held: Vec<(String, u64)>,
    committed: bool,
    /// What the stored version held and this write gives up (released once it commits).
    given_up: Option<(Owner, Held)>,
}

impl Claims {
    fn new(state: &Arc<State>) -> Claims {
        Claims {
            store: state.store.clone(),
            state: state.clone(),
            held: Vec::new(),
            committed: false,
            given_up: None,
        }
    }

    /// Claim `key`; false if someone holds it. The key is in flight *before* the store
    /// write, so a repair pass can never see the claim without seeing it in flight.
    async fn try_claim(&mut self, key: String, value: &Value) -> ApiResult<bool> {
        self.state.claims_in_flight.add(&key);
        match create_claim(&self.store, &key, value).await {
            Ok(Some(rev)) => {
                self.held.push((key, rev));
                Ok(true)
            }
            Ok(None) => {
                self.state.claims_in_flight.remove(&key);
                Ok(false)
            }
            Err(e) => {
                self.state.claims_in_flight.remove(&key);
                Err(e)
            }
        }
    }

    async fn ip(&mut self, ip: &str, owner: &Owner) -> ApiResult<bool> {
        let Some(key) = ip_key(&self.state, ip) else {
            return Err(ApiError::internal("IPAddress is not a served resource"));
        };
        self.try_claim(key, &ip_object(ip, owner)).await
    }

    async fn port(&mut self, port: i64, owner: &Owner) -> ApiResult<bool> {
        self.try_claim(storage::node_port_claim_key(port), &port_value(port, owner))
            .await
    }

    /// The write that needed these claims is stored: keep them, and give back what the
    /// previous version held and this one no longer does.
    pub async fn commit(mut self) {
        self.committed = true;
        if let Some((owner, held)) = self.given_up.take() {
            release_held(&self.state, &owner, &held).await;
        }
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        let held = std::mem::take(&mut self.held);
        if !self.committed && !held.is_empty() {
            let store = self.store.clone();
            let state = self.state.clone();
            // Give the claims back; the keys stay "in flight" until they are gone, so the
            // repair loop cannot race this. Without a runtime (process exit) the repair loop
            // releases them at the next start.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    for (key, rev) in &held {
                        if let Err(e) = store.delete(key, *rev).await {
                            tracing::debug!(key, error = %e, "claim already gone");
                        }
                        state.claims_in_flight.remove(key);
                    }
                });
                return;
            }
        }
        for (key, _) in &held {
            self.state.claims_in_flight.remove(key);
        }
    }
}

pub fn ip_key(state: &State, ip: &str) -> Option<String> {
    let ri = state
        .registry
        .lookup("networking.k8s.io", "v1", "ipaddresses")?;
    Some(storage::key(&ri, "", ip))
}

fn ip_object(ip: &str, owner: &Owner) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {
            "name": ip,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": crate::apiserver::now_rfc3339(),
            "labels": {"ipaddress.kubernetes.io/ip-family": "IPv4", MANAGED_BY.0: MANAGED_BY.1},
            "annotations": {OWNER_UID: owner.uid},
        },
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": owner.namespace, "name": owner.name}},
    })
}

fn port_value(port: i64, owner: &Owner) -> Value {
    json!({"port": port, "namespace": owner.namespace, "name": owner.name, "uid": owner.uid})
}

/// The owner recorded in a stored claim (an IPAddress object or a node-port record).
pub fn owner_of_claim(v: &Value) -> Option<Owner> {
    if v["kind"] == "IPAddress" || v.get("spec").is_some() {
        if v["metadata"]["labels"][MANAGED_BY.0] != MANAGED_BY.1 {
            return None;
        }
        let p = &v["spec"]["parentRef"];
        if p["resource"] != "services" || p["group"].as_str().is_some_and(|g| !g.is_empty()) {
            return None;
        }
        return Some(Owner {
            namespace: p["namespace"].as_str()?.to_string(),
            name: p["name"].as_str()?.to_string(),
            uid: v["metadata"]["annotations"][OWNER_UID]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        });
    }
    Some(Owner {
        namespace: v["namespace"].as_str()?.to_string(),
        name: v["name"].as_str()?.to_string(),
        uid: v["uid"].as_str().unwrap_or_default().to_string(),
    })
}

/// Create the claim at `key`; `Ok(None)` if someone holds it already.
async fn create_claim(
    store: &Arc<dyn Backend>,
    key: &str,
    value: &Value,
) -> ApiResult<Option<u64>> {
    let bytes = storage::encode(value)?;
    match store.create(key, bytes).await {
        Ok(rev) => Ok(Some(rev)),
        Err(crate::store::Error::AlreadyExists { .. }) => Ok(None),
        Err(e) => Err(ApiError::internal(format!(
            "cannot record a service allocation: {e}"
        ))),
    }
}

/// Re-create the claim of `ip` or `port` for `owner` (the repair loop); false if held.
pub(crate) async fn reclaim(
    state: &State,
    ip: Option<&str>,
    port: Option<i64>,
    owner: &Owner,
) -> ApiResult<bool> {
    let (key, value) = match (ip, port) {
        (Some(ip), _) => match ip_key(state, ip) {
            Some(key) => (key, ip_object(ip, owner)),
            None => return Ok(false),
        },
        (None, Some(p)) => (storage::node_port_claim_key(p), port_value(p, owner)),
        (None, None) => return Ok(false),
    };
    Ok(create_claim(&state.store, &key, &value).await?.is_some())
}

fn invalid(svc: &Value, field: &str, why: String) -> ApiError {
    let name = svc["metadata"]["name"].as_str().unwrap_or_default();
    ApiError::new(
        422,
        "Invalid",
        format!("Service \"{name}\" is invalid: {field}: {why}"),
    )
    .with_details(json!({
        "name": name, "kind": "Service",
        "causes": [{"reason": "FieldValueInvalid", "message": why, "field": field}],
    }))
}

/// Refuse explicitly requested values that are taken before claiming anything, so such a
/// write leaves the store untouched (a race with another writer is still caught by the
/// claim itself, and the guard gives back what was claimed).
async fn precheck(state: &State, svc: &Value, had: &Held) -> ApiResult<()> {
    let exists = |key: String| async move {
        state
            .store
            .get(&key, None)
            .await
            .map(|kv| kv.is_some())
            .map_err(|e| ApiError::internal(format!("cannot read service allocations: {e}")))
    };
    if wants_cluster_ip(svc) {
        if let Some(ip) = svc["spec"]["clusterIP"].as_str().filter(|s| !s.is_empty()) {
            if !had.ips.contains(ip) {
                if let Some(key) = ip_key(state, ip) {
                    if exists(key).await? {
                        return Err(invalid(svc, "spec.clusterIPs", format!("Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: provided IP is already allocated")));
                    }
                }
            }
        }
    }
    if needs_node_ports(svc) {
        for (i, p) in svc["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(n) = p["nodePort"]
                .as_i64()
                .filter(|n| *n != 0 && !had.ports.contains(n))
            {
                if exists(storage::node_port_claim_key(n)).await? {
                    return Err(invalid(
                        svc,
                        &format!("spec.ports[{i}].nodePort"),
                        format!("Invalid value: {n}: provided port is already allocated"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Claim what `svc` needs and `old` (the stored version, on updates) does not already hold:
/// the ClusterIP (picked at random unless asked for) and the node ports (likewise), filling
/// the picked values into `svc`. On any error nothing stays claimed.
pub async fn claim(state: &Arc<State>, svc: &mut Value, old: Option<&Value>) -> ApiResult<Claims> {
    let owner = Owner::of(svc);
    let had = old.map(held_by).unwrap_or_default();
    precheck(state, svc, &had).await?;
    let mut claims = Claims::new(state);
    if wants_cluster_ip(svc) {
        let requested = svc["spec"]["clusterIP"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let ip = match requested {
            Some(ip) if had.ips.contains(&ip) => ip,
            Some(ip) => {
                ip_in_range(&ip).map_err(|why| {
                    invalid(
                        svc,
                        "spec.clusterIPs",
                        format!("Invalid value: [\"{ip}\"]: {why}"),
                    )
                })?;
                if !claims.ip(&ip, &owner).await? {
                    return Err(invalid(
                        svc,
                        "spec.clusterIPs",
                        format!("Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: provided IP is already allocated"),
                    ));
                }
                ip
            }
            None => {
                let mut found = None;
                let (base, size, _) = cidr();
                for _ in 0..RANDOM_TRIES {
                    let offset = rand::random_range(2..size - 1);
                    let ip = Ipv4Addr::from(u32::from(base) + offset).to_string();
                    if claims.ip(&ip, &owner).await? {
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
    if needs_node_ports(svc) {
        // Ports claimed by this write: one Service may use a node port for several protocols.
        let mut mine: BTreeSet<i64> = had.ports.clone();
        let count = svc["spec"]["ports"].as_array().map_or(0, Vec::len);
        for i in 0..count {
            let asked = svc["spec"]["ports"][i]["nodePort"]
                .as_i64()
                .filter(|p| *p != 0);
            if asked.is_none() && !allocates_node_ports(svc) {
                continue;
            }
            let port = match asked {
                Some(p) if mine.contains(&p) => p,
                Some(p) => {
                    if !NODE_PORTS.contains(&p) {
                        return Err(invalid(svc, &format!("spec.ports[{i}].nodePort"), format!("Invalid value: {p}: provided port is not in the valid range. The range of valid ports is 30000-32767")));
                    }
                    if !claims.port(p, &owner).await? {
                        return Err(invalid(
                            svc,
                            &format!("spec.ports[{i}].nodePort"),
                            format!("Invalid value: {p}: provided port is already allocated"),
                        ));
                    }
                    p
                }
                None => {
                    let mut found = None;
                    for _ in 0..RANDOM_TRIES {
                        let p = rand::random_range(NODE_PORTS);
                        if mine.contains(&p) {
                            continue;
                        }
                        if claims.port(p, &owner).await? {
                            found = Some(p);
                            break;
                        }
                    }
                    found.ok_or_else(|| {
                        ApiError::internal("failed to allocate a nodePort: range is full")
                    })?
                }
            };
            mine.insert(port);
            svc["spec"]["ports"][i]["nodePort"] = json!(port);
        }
        if svc["spec"].get("externalTrafficPolicy").is_none() {
            svc["spec"]["externalTrafficPolicy"] = json!("Cluster");
        }
        if svc["spec"]["type"] == "LoadBalancer"
            && svc["spec"].get("allocateLoadBalancerNodePorts").is_none()
        {
            svc["spec"]["allocateLoadBalancerNodePorts"] = json!(true);
        }
        if needs_health_check_port(svc) {
            let asked = svc["spec"]["healthCheckNodePort"]
                .as_i64()
                .filter(|p| *p != 0);
            let port = match asked {
                Some(p) if had.ports.contains(&p) => p,
                Some(p) => {
                    if !claims.port(p, &owner).await? {
                        return Err(invalid(
                            svc,
                            "spec.healthCheckNodePort",
                            format!("Invalid value: {p}: provided port is already allocated"),
                        ));
                    }
                    p
                }
                None => {
                    let mut found = None;
                    for _ in 0..RANDOM_TRIES {
                        let p = rand::random_range(NODE_PORTS);
                        if mine.contains(&p) {
                            continue;
                        }
                        if claims.port(p, &owner).await? {
                            found = Some(p);
                            break;
                        }
                    }
                    found.ok_or_else(|| {
                        ApiError::internal("failed to allocate a nodePort: range is full")
                    })?
                }
            };
            svc["spec"]["healthCheckNodePort"] = json!(port);
        }
    }
    let now = held_by(svc);
    let given_up = Held {
        ips: had.ips.difference(&now.ips).cloned().collect(),
        ports: had.ports.difference(&now.ports).cloned().collect(),
    };
    if given_up != Held::default() {
        claims.given_up = Some((owner, given_up));
    }
    Ok(claims)
}

/// Delete the claim at `key` if `owner` holds it.
async fn release_key(state: &State, key: &str, owner: &Owner) {
    let Ok(Some(kv)) = state.store.get(key, None).await else {
        return;
    };
    let Ok(v) = storage::decode_object(&kv) else {
        return;
    };
    if owner_of_claim(&v).is_some_and(|o| owner.holds(&o)) {
        if let Err(e) = state.store.delete(key, kv.mod_revision).await {
            tracing::debug!(key, error = %e, "claim changed meanwhile; the repair loop decides");
        }
    }
}

/// Give back what `held` lists and `svc`'s owner holds.
pub async fn release_held(state: &State, owner: &Owner, held: &Held) {
    for ip in &held.ips {
        if let Some(key) = ip_key(state, ip) {
            release_key(state, &key, owner).await;
        }
    }
    for port in &held.ports {
        release_key(state, &storage::node_port_claim_key(*port), owner).await;
    }
}

/// Give back the ClusterIP and node ports of a deleted Service.
pub async fn release(state: &State, svc: &Value) {
    release_held(state, &Owner::of(svc), &held_by(svc)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_values() {
        let svc = json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.9", "clusterIPs": ["10.43.0.9"],
            "ports": [{"port": 53, "protocol": "UDP", "nodePort": 30053}, {"port": 53, "protocol": "TCP", "nodePort": 30053}, {"port": 80}]}});
        let h = held_by(&svc);
        assert_eq!(h.ips.into_iter().collect::<Vec<_>>(), ["10.43.0.9"]);
        assert_eq!(h.ports.into_iter().collect::<Vec<_>>(), [30053]);
        let lb_local = json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "healthCheckNodePort": 31000, "ports": [{"port": 80, "nodePort": 30080}]}});
        assert_eq!(
            held_by(&lb_local).ports.into_iter().collect::<Vec<_>>(),
            [30080, 31000]
        );
        let mut lb_cluster = lb_local.clone();
        lb_cluster["spec"]["externalTrafficPolicy"] = json!("Cluster");
        assert_eq!(
            held_by(&lb_cluster).ports.into_iter().collect::<Vec<_>>(),
            [30080],
            "a Cluster policy holds no health check port"
        );
        assert!(!allocates_node_ports(
            &json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false}})
        ));
        assert!(allocates_node_ports(
            &json!({"spec": {"type": "LoadBalancer"}})
        ));
        let headless =
            json!({"spec": {"clusterIP": "None", "ports": [{"port": 1, "nodePort": 30001}]}});
        assert_eq!(held_by(&headless), Held::default());
    }

    #[test]
    fn ranges() {
        assert!(ip_in_range("10.43.1.2").is_ok());
        assert!(ip_in_range("10.43.0.0").is_err());
        assert!(ip_in_range("10.43.255.255").is_err());
        assert!(ip_in_range("10.44.0.1").is_err());
        assert!(ip_in_range("nope").is_err());
    }

    #[test]
    fn owners_match_by_uid() {
        let a = Owner {
            namespace: "n".into(),
            name: "s".into(),
            uid: "1".into(),
        };
        let b = Owner {
            uid: "2".into(),
            ..a.clone()
        };
        assert!(a.holds(&a));
        assert!(
            !a.holds(&b),
            "a recreated Service must not free its predecessor's claim"
        );
        let claim = ip_object("10.43.0.5", &a);
        assert_eq!(owner_of_claim(&claim), Some(a.clone()));
        assert_eq!(owner_of_claim(&port_value(30001, &a)), Some(a));
        let mut foreign = claim.clone();
        foreign["metadata"]["labels"][MANAGED_BY.0] = json!("someone-else");
        assert_eq!(owner_of_claim(&foreign), None);
    }
}
