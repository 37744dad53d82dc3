//! Start-up work before the API is served: the namespaces every cluster has (`default`,
//! `kube-system`, `kube-public`, `kube-node-lease`) and the custom resources of stored CRDs.

use std::sync::Arc;

use serde_json::json;

use crate::apiserver::{storage, strategy::crd_lifecycle, strategy::service_claims, State};

pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

pub async fn run(state: &Arc<State>) -> Result<(), crate::store::Error> {
    let Some(ri) = state.registry.lookup("", "v1", "namespaces") else {
        return Ok(());
    };
    for ns in SYSTEM_NAMESPACES {
        let key = storage::key(&ri, "", ns);
        if state.store.get(&key, None).await?.is_some() {
            continue;
        }
        let obj = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": super::now_rfc3339(),
                "labels": {"kubernetes.io/metadata.name": ns},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        let bytes = serde_json::to_vec(&obj).unwrap_or_default();
        match state.store.create(&key, bytes.into()).await {
            Ok(_) | Err(crate::store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    crd_lifecycle::reload_crds(state).await;
    super::strategy::apiservice::ensure_local(state).await?;
    system_priority_classes(state).await?;
    super::strategy::apiservice::sync_crd_groups(state).await;
    kubernetes_service(state).await?;
    kube_dns_service(state).await
}

/// The cluster DNS address (k3s's `--cluster-dns` default, the tenth service IP).
pub const CLUSTER_DNS_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 43, 0, 10);

/// `kube-system/kube-dns`: reserves the cluster DNS address in the service range and shows it
/// as k3s does (`kubectl get svc -n kube-system`). Every node serves that address itself
/// (`src/dns/`), so the Service has no selector and the service proxy skips it
/// (`rampart.io/node-local`). An existing Service is left as it is.
async fn kube_dns_service(state: &Arc<State>) -> Result<(), crate::store::Error> {
    let Some(svc_ri) = state.registry.lookup("", "v1", "services") else {
        return Ok(());
    };
    let key = storage::key(&svc_ri, "kube-system", "kube-dns");
    if state.store.get(&key, None).await?.is_some() {
        return Ok(());
    }
    let mut svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "uid": uuid::Uuid::new_v4().to_string(),
                     "creationTimestamp": super::now_rfc3339(),
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS", "kubernetes.io/cluster-service": "true"},
                     "annotations": {"rampart.io/node-local": "true"}},
        "spec": {"type": "ClusterIP", "sessionAffinity": "None",
                 "clusterIP": CLUSTER_DNS_IP.to_string(), "clusterIPs": [CLUSTER_DNS_IP.to_string()],
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster",
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                           {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]},
        "status": {"loadBalancer": {}},
    });
    match service_claims::claim(state, &mut svc, None).await {
        Ok(claims) => {
            let bytes = serde_json::to_vec(&svc).unwrap_or_default();
            match state.store.create(&key, bytes.into()).await {
                Ok(_) => claims.commit().await,
                Err(crate::store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        // The address is taken by a user's Service: keep serving; say so once.
        Err(e) => {
            tracing::warn!(error = ?e, "cannot reserve the cluster DNS address for kube-system/kube-dns")
        }
    }
    Ok(())
}

/// `system-node-critical` and `system-cluster-critical`, as upstream's apiserver creates them
/// at start (existing ones are left as they are).
async fn system_priority_classes(state: &Arc<State>) -> Result<(), crate::store::Error> {
    let Some(ri) = state
        .registry
        .lookup("scheduling.k8s.io", "v1", "priorityclasses")
    else {
        return Ok(());
    };
    for (name, value, description) in super::admission::priority::SYSTEM_CLASSES {
        let key = storage::key(&ri, "", name);
        if state.store.get(&key, None).await?.is_some() {
            continue;
        }
        let obj = json!({
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name, "uid": uuid::Uuid::new_v4().to_string(),
                         "creationTimestamp": super::now_rfc3339()},
            "value": value,
            "description": description,
            "preemptionPolicy": "PreemptLowerPriority",
        });
        let bytes = serde_json::to_vec(&obj).unwrap_or_default();
        match state.store.create(&key, bytes.into()).await {
            Ok(_) | Err(crate::store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `default/kubernetes`: the in-cluster address of this API server (first service IP, port
/// 443), with its Endpoints pointing at the advertised address, as upstream keeps it.
async fn kubernetes_service(state: &Arc<State>) -> Result<(), crate::store::Error> {
    let (Some(svc_ri), Some(ep_ri)) = (
        state.registry.lookup("", "v1", "services"),
        state.registry.lookup("", "v1", "endpoints"),
    ) else {
        return Ok(());
    };
    let key = storage::key(&svc_ri, "default", "kubernetes");
    if state.store.get(&key, None).await?.is_none() {
        let mut svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "uid": uuid::Uuid::new_v4().to_string(),
                         "creationTimestamp": super::now_rfc3339(), "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "sessionAffinity": "None",
                     "clusterIP": service_claims::kubernetes_service_ip().to_string(),
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": state.advertise.port()}]},
            "status": {"loadBalancer": {}},
        });
        if let Ok(claims) = service_claims::claim(state, &mut svc, None).await {
            let bytes = serde_json::to_vec(&svc).unwrap_or_default();
            match state.store.create(&key, bytes.into()).await {
                Ok(_) => claims.commit().await,
                Err(crate::store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let ep_key = storage::key(&ep_ri, "default", "kubernetes");
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "uid": uuid::Uuid::new_v4().to_string(),
                     "creationTimestamp": super::now_rfc3339(), "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": state.advertise.ip().to_string()}],
                     "ports": [{"name": "https", "port": state.advertise.port(), "protocol": "TCP"}]}],
    });
    let bytes: bytes::Bytes = serde_json::to_vec(&endpoints).unwrap_or_default().into();
    match state.store.get(&ep_key, None).await? {
        None => match state.store.create(&ep_key, bytes).await {
            Ok(_) | Err(crate::store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        },
        Some(kv) => {
            // The advertised address may change between restarts; keep the uid.
            // One attempt, not a retry loop: a concurrent writer's Endpoints win until the
            // next start.
            let old = storage::decode_object(&kv).unwrap_or_default();
            if old["subsets"] == endpoints["subsets"] {
                return Ok(());
            }
            let mut updated = endpoints;
            updated["metadata"] = old["metadata"].clone();
            let Ok(bytes) = storage::encode(&updated) else {
                return Ok(());
            };
            match state.store.update(&ep_key, bytes, kv.mod_revision).await {
                Ok(_) | Err(crate::store::Error::Conflict { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}
