//! ServiceLB: the built-in load balancer for `type: LoadBalancer` Services, with k3s's
//! ServiceLB (klipper-lb) semantics but without its DaemonSet — the service proxy on every
//! node already answers a Service's ingress IPs (they are in its `service-ips` map), so all
//! this controller does is decide *which* node addresses a Service is published on and write
//! them to `status.loadBalancer.ingress`.
//!
//! Rules (k3s `pkg/cloudprovider/servicelb.go`):
//! - only Services of type LoadBalancer whose `spec.loadBalancerClass` is unset or
//!   [`LOAD_BALANCER_CLASS`]; another class belongs to another controller and is never touched;
//! - eligible nodes: Ready and not being deleted; if any node carries the label
//!   [`ENABLE_LB_LABEL`], only the nodes where it is `"true"` (k3s's opt-in pools);
//! - `externalTrafficPolicy: Local`: only the eligible nodes with a ready endpoint of the
//!   Service (k3s publishes only the nodes whose svclb pod forwards to a local pod);
//! - a node publishes its ExternalIP addresses if it has any, else its InternalIP ones;
//! - one Service per node and port (k3s's svclb pods claim hostPorts: a later Service whose
//!   port is already taken on a node is not published there). "Earlier" is creation time,
//!   then namespace/name, so the answer does not depend on event order;
//! - a Service that is not ours is never written (a stale ingress on a Service that stopped
//!   being a LoadBalancer is harmless: the proxy reads ingress only of LoadBalancer Services;
//!   clearing it could erase what another controller or a user wrote).
//!
//! Invariant: the decision is a pure function of the three caches ([`plan`]); the loop writes
//! a status only when it differs, so it converges and never patches in a hot loop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;
use tokio::sync::Notify;

use super::Error;

const NAME: &str = "servicelb";
/// The `spec.loadBalancerClass` this controller answers for (besides none).
pub const LOAD_BALANCER_CLASS: &str = "rampart.io/servicelb";
/// k3s's node label: when any node has it, only nodes with `"true"` carry load balancers.
pub const ENABLE_LB_LABEL: &str = "svccontroller.k3s.cattle.io/enablelb";
/// Re-check every Service this often even without events (a failed write is retried).
const RESYNC: Duration = Duration::from_secs(30);

/// Whether this controller owns `svc`'s load balancer.
pub fn is_ours(svc: &Service) -> bool {
    let Some(spec) = svc.spec.as_ref() else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer")
        && spec
            .load_balancer_class
            .as_deref()
            .is_none_or(|c| c == LOAD_BALANCER_CLASS)
}

fn node_ready(n: &Node) -> bool {
    n.metadata.deletion_timestamp.is_none()
        && n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// ExternalIP addresses if the node has any, else InternalIP ones (k3s's choice).
fn node_addresses(n: &Node) -> Vec<String> {
    let addrs: Vec<(&str, &str)> = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .map(|a| (a.type_.as_str(), a.address.as_str()))
        .collect();
    let pick = |t: &str| -> Vec<String> {
        addrs
            .iter()
            .filter(|(ty, a)| *ty == t && a.parse::<std::net::IpAddr>().is_ok())
            .map(|(_, a)| a.to_string())
            .collect()
    };
    let external = pick("ExternalIP");
    if external.is_empty() {
        pick("InternalIP")
    } else {
        external
    }
}

fn key(svc: &Service) -> (String, String) {
    (
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// Nodes with a ready endpoint of the Service `ns/name`.
fn nodes_with_endpoints(ns: &str, name: &str, slices: &[Arc<EndpointSlice>]) -> BTreeSet<String> {
    slices
        .iter()
        .filter(|s| {
            s.metadata.namespace.as_deref() == Some(ns)
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    .is_some_and(|n| n == name)
        })
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| e.node_name.clone())
        .collect()
}

/// The ingress each Service should have: `Some(list)` for Services of ours (possibly empty:
/// no eligible node), `None` for Services we leave alone. Pure.
pub fn plan(
    services: &[Arc<Service>],
    nodes: &[Arc<Node>],
    slices: &[Arc<EndpointSlice>],
) -> BTreeMap<(String, String), Option<Vec<LoadBalancerIngress>>> {
    let pool_labelled = nodes.iter().any(|n| {
        n.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(ENABLE_LB_LABEL))
    });
    let eligible: Vec<&Node> = nodes
        .iter()
        .map(|n| n.as_ref())
        .filter(|n| node_ready(n))
        .filter(|n| {
            !pool_labelled
                || n.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(ENABLE_LB_LABEL))
                    .is_some_and(|v| v == "true")
        })
        .collect();
    let mut ordered: Vec<&Service> = services.iter().map(|s| s.as_ref()).collect();
    ordered.sort_by(|a, b| {
        let ta = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let tb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
        ta.cmp(&tb).then_with(|| key(a).cmp(&key(b)))
    });
    // Ports already carried by an earlier Service, per node.
    let mut taken: BTreeMap<String, BTreeSet<(String, i32)>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for svc in ordered {
        if !is_ours(svc) {
            out.insert(key(svc), None);
            continue;
        }
        let spec = svc.spec.as_ref();
        let ports: Vec<(String, i32)> = spec
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .map(|p| (p.protocol.clone().unwrap_or_else(|| "TCP".into()), p.port))
            .collect();
        let local = spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local");
        let (ns, name) = key(svc);
        let with_eps = if local {
            nodes_with_endpoints(&ns, &name, slices)
        } else {
            BTreeSet::new()
        };
        let mut ips: BTreeSet<String> = BTreeSet::new();
        for n in &eligible {
            let node_name = n.metadata.name.clone().unwrap_or_default();
            if local && !with_eps.contains(&node_name) {
                continue;
            }
            let used = taken.entry(node_name).or_default();
            if ports.iter().any(|p| used.contains(p)) {
                continue;
            }
            used.extend(ports.iter().cloned());
            ips.extend(node_addresses(n));
        }
        let ingress = ips
            .into_iter()
            .map(|ip| LoadBalancerIngress {
                ip: Some(ip),
                ip_mode: Some("VIP".into()),
                ..Default::default()
            })
            .collect();
        out.insert((ns, name), Some(ingress));
    }
    out
}

fn current(svc: &Service) -> Vec<LoadBalancerIngress> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default()
}

fn watch_into<K>(api: Api<K>, notify: Arc<Notify>) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let task = tokio::spawn(async move {
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff();
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                tracing::debug!(controller = NAME, error = %e, "watch error; re-listing");
            }
            notify.notify_one();
        }
    });
    (store, task)
}

/// Write the planned ingress of every Service whose status differs.
async fn sync(
    client: &kube::Client,
    services: &Store<Service>,
    nodes: &Store<Node>,
    slices: &Store<EndpointSlice>,
) {
    let svcs = services.state();
    let wanted = plan(&svcs, &nodes.state(), &slices.state());
    for svc in &svcs {
        let (ns, name) = key(svc);
        let Some(Some(ingress)) = wanted.get(&(ns.clone(), name.clone())) else {
            continue;
        };
        if current(svc) == *ingress {
            continue;
        }
        let api: Api<Service> = Api::namespaced(client.clone(), &ns);
        let body = if ingress.is_empty() {
            json!({"status": {"loadBalancer": {"ingress": null}}})
        } else {
            json!({"status": {"loadBalancer": {"ingress": ingress}}})
        };
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => tracing::info!(
                controller = NAME,
                service = %format!("{ns}/{name}"),
                ingress = ingress.len(),
                "load balancer status updated"
            ),
            Err(e) => tracing::debug!(
                controller = NAME,
                service = %format!("{ns}/{name}"),
                error = %e,
                "cannot update load balancer status; retrying at the next event or resync"
            ),
        }
    }
}

/// Run until the process stops.
pub async fn run(client: kube::Client) -> Result<(), Error> {
    let notify = Arc::new(Notify::new());
    let (services, t1) = watch_into(Api::<Service>::all(client.clone()), notify.clone());
    let (nodes, t2) = watch_into(Api::<Node>::all(client.clone()), notify.clone());
    let (slices, t3) = watch_into(Api::<EndpointSlice>::all(client.clone()), notify.clone());
    let ready = tokio::join!(
        services.wait_until_ready(),
        nodes.wait_until_ready(),
        slices.wait_until_ready()
    );
    if ready.0.is_err() || ready.1.is_err() || ready.2.is_err() {
        t1.abort();
        t2.abort();
        t3.abort();
        return Err(Error::Controller {
            name: NAME,
            detail: "a watch stopped before its first list".into(),
        });
    }
    loop {
        sync(&client, &services, &nodes, &slices).await;
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(
        name: &str,
        ready: bool,
        labels: serde_json::Value,
        addrs: &[(&str, &str)],
    ) -> Arc<Node> {
        let addresses: Vec<_> = addrs
            .iter()
            .map(|(t, a)| json!({"type": t, "address": a}))
            .collect();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "status": {
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                    "addresses": addresses,
                }
            }))
            .unwrap(),
        )
    }

    fn svc(name: &str, created: &str, spec: serde_json::Value) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": "default", "name": name, "creationTimestamp": created},
                "spec": spec,
            }))
            .unwrap(),
        )
    }

    fn ips(
        p: &BTreeMap<(String, String), Option<Vec<LoadBalancerIngress>>>,
        name: &str,
    ) -> Option<Vec<String>> {
        p.get(&("default".to_string(), name.to_string()))
            .cloned()
            .unwrap()
            .map(|v| v.into_iter().filter_map(|i| i.ip).collect())
    }

    #[test]
    fn publishes_ready_nodes_external_ip_first() {
        let nodes = vec![
            node("a", true, json!({}), &[("InternalIP", "10.0.0.1")]),
            node(
                "b",
                true,
                json!({}),
                &[("InternalIP", "10.0.0.2"), ("ExternalIP", "203.0.113.2")],
            ),
            node("c", false, json!({}), &[("InternalIP", "10.0.0.3")]),
        ];
        let s = svc(
            "web",
            "2026-01-01T00:00:00Z",
            json!({"type": "LoadBalancer", "ports": [{"port": 80}]}),
        );
        let p = plan(&[s], &nodes, &[]);
        assert_eq!(ips(&p, "web").unwrap(), ["10.0.0.1", "203.0.113.2"]);
    }

    #[test]
    fn class_pool_label_and_port_conflicts() {
        let nodes = vec![
            node(
                "a",
                true,
                json!({ENABLE_LB_LABEL: "true"}),
                &[("InternalIP", "10.0.0.1")],
            ),
            node("b", true, json!({}), &[("InternalIP", "10.0.0.2")]),
            node(
                "c",
                true,
                json!({ENABLE_LB_LABEL: "false"}),
                &[("InternalIP", "10.0.0.3")],
            ),
        ];
        let first = svc(
            "first",
            "2026-01-01T00:00:00Z",
            json!({"type": "LoadBalancer", "ports": [{"port": 80}]}),
        );
        let second = svc(
            "second",
            "2026-01-02T00:00:00Z",
            json!({"type": "LoadBalancer", "ports": [{"port": 80}]}),
        );
        let udp = svc(
            "udp",
            "2026-01-03T00:00:00Z",
            json!({"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "UDP"}]}),
        );
        let other = svc(
            "other",
            "2026-01-01T00:00:00Z",
            json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/lb", "ports": [{"port": 81}]}),
        );
        let mine = svc(
            "mine",
            "2026-01-01T00:00:00Z",
            json!({"type": "LoadBalancer", "loadBalancerClass": LOAD_BALANCER_CLASS, "ports": [{"port": 82}]}),
        );
        let plain = svc(
            "plain",
            "2026-01-01T00:00:00Z",
            json!({"type": "ClusterIP", "ports": [{"port": 80}]}),
        );
        // Listed in reverse creation order: the answer must not depend on it.
        let p = plan(&[udp, second, first, other, mine, plain], &nodes, &[]);
        assert_eq!(
            ips(&p, "first").unwrap(),
            ["10.0.0.1"],
            "only the labelled pool"
        );
        assert_eq!(
            ips(&p, "second").unwrap(),
            Vec::<String>::new(),
            "port 80/TCP taken"
        );
        assert_eq!(
            ips(&p, "udp").unwrap(),
            ["10.0.0.1"],
            "another protocol is another port"
        );
        assert_eq!(ips(&p, "mine").unwrap(), ["10.0.0.1"]);
        assert_eq!(ips(&p, "other"), None, "another class is never touched");
        assert_eq!(ips(&p, "plain"), None, "not a LoadBalancer: left alone");
    }

    #[test]
    fn local_policy_only_nodes_with_ready_endpoints() {
        let nodes = vec![
            node("a", true, json!({}), &[("InternalIP", "10.0.0.1")]),
            node("b", true, json!({}), &[("InternalIP", "10.0.0.2")]),
        ];
        let s = svc(
            "web",
            "2026-01-01T00:00:00Z",
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
        );
        let slice: Arc<EndpointSlice> = Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": "default", "name": "web-x", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": ["10.42.1.5"], "nodeName": "b", "conditions": {"ready": true}},
                    {"addresses": ["10.42.0.5"], "nodeName": "a", "conditions": {"ready": false}},
                ],
            }))
            .unwrap(),
        );
        let p = plan(&[s], &nodes, &[slice]);
        assert_eq!(ips(&p, "web").unwrap(), ["10.0.0.2"]);
    }
}
