//! The EndpointSlice controller, as upstream's `endpointslice` controller: for every Service
//! with a selector, EndpointSlices labelled `kubernetes.io/service-name` and
//! `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`, owned by the
//! Service (so the garbage collector removes them with it), at most 100 endpoints each.
//!
//! Each selected pod with an IP is one endpoint with upstream's conditions: `ready` (Ready and
//! not terminating, or `publishNotReadyAddresses`), `serving` (Ready, even while terminating)
//! and `terminating`; with `nodeName`, `targetRef` and the hostname of pods whose subdomain is
//! the Service. Endpoints are grouped by address family and by their resolved ports (named
//! ports may resolve differently per pod); the slices of a group are refilled in place,
//! surplus slices deleted and missing ones created (`generateName: <service>-`), and only
//! slices whose content changed are written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;

use super::endpoints::{finished, pod_ip, pod_ref, resolve_port, selected, selector, services_for};
use super::informers::Informer;
use super::replicaset::ready_since;
use super::Error;

const NAME: &str = "endpointslice-controller";
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGER: &str = "endpointslice-controller.k8s.io";
/// Upstream's default `--max-endpoints-per-slice`.
pub const MAX_PER_SLICE: usize = 100;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(String);

impl From<kube::Error> for ReconcileError {
    fn from(e: kube::Error) -> Self {
        Self(e.to_string())
    }
}

struct Ctx {
    client: kube::Client,
    pods: Store<Pod>,
}

pub fn run(
    client: kube::Client,
    services: &Informer<Service>,
    pods: &Informer<Pod>,
) -> impl std::future::Future<Output = Result<(), Error>> {
    // kube-runtime's applier waits for its store with a wait that wakes one waiter only;
    // waiting here first makes that wait return at once.
    let main_ready = services.ready();
    let pods_ready = pods.ready();
    let store = services.store();
    let svc_store = store.clone();
    let ctx = Arc::new(Ctx {
        client,
        pods: pods.store(),
    });
    let controller = Controller::for_stream(services.triggers(), store)
        .reconcile_on(pods.related(move |pod: &Pod| services_for(pod, &svc_store)));
    async move {
        pods_ready.await;
        main_ready.await;
        tracing::info!(controller = NAME, "caches synced, controller started");
        controller
            .run(reconcile, error_policy, ctx)
            .for_each(|res| async move {
                if let Err(e) = res {
                    tracing::debug!(controller = NAME, error = %e, "reconcile failed");
                }
            })
            .await;
        Err(Error::Controller {
            name: NAME,
            detail: "the controller stream ended".into(),
        })
    }
}

fn error_policy(_: Arc<Service>, e: &ReconcileError, _: Arc<Ctx>) -> Action {
    tracing::debug!(controller = NAME, error = %e, "retrying");
    Action::requeue(Duration::from_secs(1))
}

/// (address type, ports) → endpoints, for a Service and its pods.
pub fn desired(
    svc: &Service,
    pods: &[Arc<Pod>],
) -> BTreeMap<(String, String), (Vec<EndpointPort>, Vec<Endpoint>)> {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish = spec.publish_not_ready_addresses.unwrap_or(false);
    let svc_name = svc.metadata.name.clone().unwrap_or_default();
    let mut groups: BTreeMap<(String, String), (Vec<EndpointPort>, Vec<Endpoint>)> =
        BTreeMap::new();
    for p in pods {
        let Some(ip) = pod_ip(p) else { continue };
        if finished(p) {
            continue;
        }
        let mut ports = Vec::new();
        for sp in spec.ports.iter().flatten() {
            let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
            if let Some(port) = resolve_port(p, sp.target_port.as_ref(), sp.port, &protocol) {
                ports.push(EndpointPort {
                    name: Some(sp.name.clone().unwrap_or_default()),
                    port: Some(port),
                    protocol: Some(protocol),
                    app_protocol: sp.app_protocol.clone(),
                });
            }
        }
        ports.sort_by_key(|p| (p.name.clone(), p.port));
        let terminating = p.metadata.deletion_timestamp.is_some();
        let serving = ready_since(p).is_some();
        let pspec = p.spec.clone().unwrap_or_default();
        let endpoint = Endpoint {
            addresses: vec![ip.clone()],
            conditions: Some(EndpointConditions {
                ready: Some(publish || (serving && !terminating)),
                serving: Some(publish || serving),
                terminating: Some(terminating),
            }),
            hostname: pspec
                .hostname
                .clone()
                .filter(|_| pspec.subdomain.as_deref() == Some(svc_name.as_str())),
            node_name: pspec.node_name.clone().filter(|n| !n.is_empty()),
            target_ref: Some(pod_ref(p)),
            ..Default::default()
        };
        let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
        let key = (
            family.to_string(),
            serde_json::to_string(&ports).unwrap_or_default(),
        );
        groups
            .entry(key)
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(endpoint);
    }
    for (_, eps) in groups.values_mut() {
        eps.sort_by(|a, b| a.addresses.cmp(&b.addresses));
    }
    groups
}

fn owner(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let (Some(ns), Some(name)) = (svc.metadata.namespace.clone(), svc.metadata.name.clone()) else {
        return Ok(Action::await_change());
    };
    if selector(&svc).is_none() || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let pods = selected(&svc, &ctx.pods);
    let groups = desired(&svc, &pods);
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let lp = ListParams::default().labels(&format!("{SERVICE_NAME}={name},{MANAGED_BY}={MANAGER}"));
    let mut existing = api.list(&lp).await?.items;
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME.into(), name.clone());
    labels.insert(MANAGED_BY.into(), MANAGER.into());
    // What should exist: one slice per chunk of each group. A Service selecting nothing keeps
    // one empty slice, as upstream.
    let mut wanted: Vec<(String, Vec<EndpointPort>, Vec<Endpoint>)> = Vec::new();
    for ((family, _), (ports, eps)) in groups {
        for chunk in eps.chunks(MAX_PER_SLICE) {
            wanted.push((family.clone(), ports.clone(), chunk.to_vec()));
        }
    }
    if wanted.is_empty() {
        wanted.push(("IPv4".into(), Vec::new(), Vec::new()));
    }
    // Reuse slices of the same address type and ports first, then any of the same type.
    let mut slots: Vec<Option<EndpointSlice>> = existing.into_iter().map(Some).collect();
    let mut plan: Vec<(Option<EndpointSlice>, EndpointSlice)> = Vec::new();
    for (family, ports, eps) in wanted {
        let same_ports = |s: &EndpointSlice| {
            s.address_type == family && s.ports.clone().unwrap_or_default() == ports
        };
        let pick = slots
            .iter()
            .position(|s| s.as_ref().is_some_and(same_ports))
            .or_else(|| {
                slots
                    .iter()
                    .position(|s| s.as_ref().is_some_and(|s| s.address_type == family))
            });
        let current = pick.and_then(|i| slots[i].take());
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                name: current.as_ref().and_then(|c| c.metadata.name.clone()),
                generate_name: Some(format!("{name}-")),
                namespace: Some(ns.clone()),
                labels: Some(labels.clone()),
                owner_references: Some(vec![owner(&svc)]),
                resource_version: current
                    .as_ref()
                    .and_then(|c| c.metadata.resource_version.clone()),
                ..Default::default()
            },
            address_type: family,
            endpoints: Some(eps),
            ports: Some(ports),
        };
        plan.push((current, slice));
    }
    for (current, slice) in plan {
        match current {
            None => {
                api.create(&PostParams::default(), &slice).await?;
            }
            Some(cur) => {
                let same = cur.endpoints == slice.endpoints
                    && cur.ports.clone().unwrap_or_default()
                        == slice.ports.clone().unwrap_or_default()
                    && cur.metadata.labels == slice.metadata.labels;
                if !same {
                    let slice_name = cur.metadata.name.clone().unwrap_or_default();
                    api.replace(&slice_name, &PostParams::default(), &slice)
                        .await?;
                }
            }
        }
    }
    for leftover in slots.into_iter().flatten() {
        if let Some(n) = leftover.metadata.name.as_deref() {
            match api.delete(n, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_and_chunking() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "n"},
            "spec": {"selector": {"app": "a"}, "ports": [{"name": "web", "port": 80}]},
        }))
        .unwrap_or_default();
        let pods: Vec<Arc<Pod>> = (0..250)
            .map(|i| {
                let mut meta = json!({"name": format!("p{i}"), "namespace": "n", "labels": {"app": "a"}});
                if i == 0 {
                    meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                }
                Arc::new(
                    serde_json::from_value(json!({
                        "metadata": meta,
                        "spec": {"containers": [{"name": "c"}]},
                        "status": {"podIP": format!("10.0.{}.{}", i / 200, i % 200), "phase": "Running",
                            "conditions": [{"type": "Ready", "status": if i % 2 == 0 {"True"} else {"False"}}]},
                    }))
                    .unwrap_or_default(),
                )
            })
            .collect();
        let groups = desired(&svc, &pods);
        assert_eq!(groups.len(), 1);
        let (_, eps) = groups.values().next().cloned().unwrap_or_default();
        assert_eq!(eps.len(), 250);
        assert_eq!(eps.chunks(MAX_PER_SLICE).count(), 3);
        let terminating = eps
            .iter()
            .find(|e| e.addresses[0] == "10.0.0.0")
            .cloned()
            .unwrap_or_default();
        let c = terminating.conditions.unwrap_or_default();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(true), Some(true))
        );
    }
}
