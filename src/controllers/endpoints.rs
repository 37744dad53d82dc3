//! The Endpoints controller, as upstream's `endpoint` controller: for every Service with a
//! selector, an Endpoints object of the same name listing the selected pods' IPs — ready ones in
//! `addresses`, the others in `notReadyAddresses` (all ready with
//! `publishNotReadyAddresses`) — with `nodeName`, `targetRef`, the hostname of pods whose
//! subdomain is the Service, and the Service's ports resolved per pod (`targetPort` by number,
//! or by container port name and protocol). Subsets group addresses with identical ports, as
//! upstream's `RepackSubsets`.
//!
//! Pods without an IP, finished pods and terminating pods are left out (terminating ones stay
//! with `publishNotReadyAddresses`). Services without a selector (such as `default/kubernetes`,
//! which the API server maintains) are not touched; a deleted Service's Endpoints are deleted.
//! Endpoints carry `endpointslice.kubernetes.io/skip-mirror: "true"` as upstream's do.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};

use super::informers::{Change, Informer};
use super::replicaset::ready_since;
use super::Error;

const NAME: &str = "endpoints-controller";
const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";

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

/// The Services in a pod's namespace that have a selector: any of them may gain or lose it.
pub fn services_for(pod: &Pod, services: &Store<Service>) -> Vec<ObjectRef<Service>> {
    let ns = pod.metadata.namespace.as_deref();
    services
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == ns)
        .filter(|s| selector(s).is_some())
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// A Service's selector, if it manages endpoints.
pub fn selector(svc: &Service) -> Option<BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.clone().filter(|s| !s.is_empty())
}

/// The pods a Service selects, in its namespace.
pub fn selected(svc: &Service, pods: &Store<Pod>) -> Vec<Arc<Pod>> {
    let Some(sel) = selector(svc) else {
        return Vec::new();
    };
    let ns = svc.metadata.namespace.as_deref();
    let mut out: Vec<Arc<Pod>> = pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == ns)
        .filter(|p| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            sel.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .collect();
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out
}

pub fn pod_ip(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .pod_ip
        .clone()
        .filter(|ip| !ip.is_empty())
}

pub fn finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The container port a Service port reaches on this pod (upstream's `FindPort`).
pub fn resolve_port(
    pod: &Pod,
    target: Option<&IntOrString>,
    port: i32,
    protocol: &str,
) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|cp| {
                cp.name.as_deref() == Some(name.as_str())
                    && cp.protocol.as_deref().unwrap_or("TCP") == protocol
            })
            .map(|cp| cp.container_port)
            .or_else(|| name.parse().ok()),
    }
}

pub fn pod_ref(p: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: p.metadata.namespace.clone(),
        name: p.metadata.name.clone(),
        uid: p.metadata.uid.clone(),
        ..Default::default()
    }
}

/// One subset in the making: ports, ready and not-ready addresses.
type Group = (
    Vec<EndpointPort>,
    Vec<EndpointAddress>,
    Vec<EndpointAddress>,
);

/// The Endpoints subsets for a Service and its pods.
pub fn subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish = spec.publish_not_ready_addresses.unwrap_or(false);
    let svc_name = svc.metadata.name.clone().unwrap_or_default();
    // Key: the pod's resolved ports (sorted) → (ready, not ready) addresses.
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for p in pods {
        let Some(ip) = pod_ip(p) else { continue };
        if finished(p) || (p.metadata.deletion_timestamp.is_some() && !publish) {
            continue;
        }
        let mut ports = Vec::new();
        for sp in spec.ports.iter().flatten() {
            let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
            if let Some(port) = resolve_port(p, sp.target_port.as_ref(), sp.port, &protocol) {
                ports.push(EndpointPort {
                    name: sp.name.clone(),
                    port,
                    protocol: Some(protocol),
                    app_protocol: sp.app_protocol.clone(),
                });
            }
        }
        if ports.is_empty() && spec.ports.as_ref().is_some_and(|p| !p.is_empty()) {
            // No Service port reaches this pod (upstream skips it).
            continue;
        }
        ports.sort_by_key(|p| (p.name.clone(), p.port));
        let pspec = p.spec.clone().unwrap_or_default();
        let addr = EndpointAddress {
            ip,
            hostname: pspec
                .hostname
                .clone()
                .filter(|_| pspec.subdomain.as_deref() == Some(svc_name.as_str())),
            node_name: pspec.node_name.clone().filter(|n| !n.is_empty()),
            target_ref: Some(pod_ref(p)),
        };
        let key = serde_json::to_string(&ports).unwrap_or_default();
        let entry = groups
            .entry(key)
            .or_insert_with(|| (ports, Vec::new(), Vec::new()));
        if publish || (ready_since(p).is_some() && p.metadata.deletion_timestamp.is_none()) {
            entry.1.push(addr);
        } else {
            entry.2.push(addr);
        }
    }
    groups
        .into_values()
        .map(|(ports, mut ready, mut not_ready)| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect()
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
        client: client.clone(),
        pods: pods.store(),
    });
    // A deleted Service takes its Endpoints with it (no reconcile runs for a deleted object).
    let deletions = services.subscribe().for_each(move |change| {
        let client = client.clone();
        async move {
            if let Change::Deleted(svc) = change {
                if let (Some(ns), Some(name)) = (
                    svc.metadata.namespace.as_deref(),
                    svc.metadata.name.as_deref(),
                ) {
                    if selector(&svc).is_some() {
                        let api: Api<Endpoints> = Api::namespaced(client, ns);
                        let _ = api.delete(name, &DeleteParams::default()).await;
                    }
                }
            }
        }
    });
    let controller = Controller::for_stream(services.triggers(), store)
        .reconcile_on(pods.related(move |pod: &Pod| services_for(pod, &svc_store)));
    async move {
        pods_ready.await;
        main_ready.await;
        tracing::info!(controller = NAME, "caches synced, controller started");
        let reconciles = controller
            .run(reconcile, error_policy, ctx)
            .for_each(|res| async move {
                if let Err(e) = res {
                    tracing::debug!(controller = NAME, error = %e, "reconcile failed");
                }
            });
        // Both end only with the process (or when this task is aborted).
        tokio::select! {
            _ = deletions => {}
            _ = reconciles => {}
        }
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

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let (Some(ns), Some(name)) = (svc.metadata.namespace.clone(), svc.metadata.name.clone()) else {
        return Ok(Action::await_change());
    };
    if selector(&svc).is_none() || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let pods = selected(&svc, &ctx.pods);
    let want_subsets = subsets(&svc, &pods);
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SKIP_MIRROR.into(), "true".into());
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let current = api.get_opt(&name).await?;
    let want = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: Some(labels),
            resource_version: current
                .as_ref()
                .and_then(|c| c.metadata.resource_version.clone()),
            ..Default::default()
        },
        subsets: (!want_subsets.is_empty()).then_some(want_subsets),
    };
    match current {
        None => match api.create(&PostParams::default(), &want).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        },
        Some(cur) => {
            let same = cur.subsets.clone().unwrap_or_default()
                == want.subsets.clone().unwrap_or_default()
                && cur.metadata.labels == want.metadata.labels;
            if !same {
                let mut next = cur.clone();
                next.subsets = want.subsets;
                next.metadata.labels = want.metadata.labels;
                api.replace(&name, &PostParams::default(), &next).await?;
            }
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "n", "uid": name, "labels": {"app": "a"}},
                "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"name": port_name, "containerPort": 8080}]}]},
                "status": {"podIP": ip, "phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
            }))
            .unwrap_or_default(),
        )
    }

    #[test]
    fn subsets_split_ready_and_resolve_named_ports() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "n"},
            "spec": {"selector": {"app": "a"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]},
        }))
        .unwrap_or_default();
        let pods = vec![
            pod("p1", "10.0.0.1", true, "http"),
            pod("p2", "10.0.0.2", false, "http"),
            pod("p3", "10.0.0.3", true, "other"),
        ];
        let subsets = subsets(&svc, &pods);
        let with_8080 = subsets
            .iter()
            .find(|s| s.ports.as_ref().is_some_and(|p| p[0].port == 8080))
            .cloned()
            .unwrap_or_default();
        assert_eq!(with_8080.addresses.unwrap_or_default()[0].ip, "10.0.0.1");
        assert_eq!(
            with_8080.not_ready_addresses.unwrap_or_default()[0].ip,
            "10.0.0.2"
        );
        assert_eq!(
            with_8080.ports.unwrap_or_default()[0].name.as_deref(),
            Some("web")
        );
        // p3 has no port named http: it is left out.
        assert_eq!(subsets.len(), 1);
    }
}
