//! Delayed volume binding (upstream's VolumeBinding plug-in, reduced to what a
//! WaitForFirstConsumer provisioner such as k3s's local-path needs): an unbound claim whose
//! StorageClass has `volumeBindingMode: WaitForFirstConsumer` does not make its pod
//! unschedulable (any node may get a new volume), and when the pod is placed the scheduler
//! writes the chosen node into the claim's `volume.kubernetes.io/selected-node` annotation
//! before binding the pod — what the provisioner (`controllers::local_path`) follows to create
//! the volume on that node. Bound claims are filtered by their volume's node affinity in
//! `filter.rs`; unbound claims of `Immediate` classes (or of no class) keep the pod pending
//! with upstream's "pod has unbound immediate PersistentVolumeClaims".
//!
//! Not upstream's: the pod is bound without waiting for the claim to become `Bound` (the
//! kubelet waits, with `FailedMount`, until the provisioner has bound it); provisioner
//! capacity and `allowedTopologies` are not consulted.
//!
//! Invariant: the annotation is written only on claims that are still unbound, and only
//! through the API as `system:kube-scheduler` (authorized by its volume-binding policy).

use std::collections::HashMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// The cluster's StorageClasses, followed by a watch of their own.
pub struct Classes {
    store: Store<StorageClass>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Classes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Classes {
    pub fn start(client: &kube::Client) -> Classes {
        let (store, writer) = reflector::store();
        let api: Api<StorageClass> = Api::all(client.clone());
        let task = tokio::spawn(async move {
            let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
                .default_backoff();
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                if let Err(e) = ev {
                    tracing::debug!(error = %e, "storageclass watch error; re-listing");
                }
            }
        });
        Classes { store, task }
    }

    /// Whether claims of `class` wait for their first consumer.
    pub fn delayed(&self, class: &str) -> bool {
        self.store.state().iter().any(|c| {
            c.metadata.name.as_deref() == Some(class)
                && c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
        })
    }
}

/// Whether the claim is unbound and its class binds on first consumer.
pub fn waits_for_consumer(pvc: &PersistentVolumeClaim, classes: &Classes) -> bool {
    let Some(spec) = pvc.spec.as_ref() else {
        return false;
    };
    spec.volume_name.as_deref().is_none_or(str::is_empty)
        && spec
            .storage_class_name
            .as_deref()
            .is_some_and(|c| !c.is_empty() && classes.delayed(c))
}

/// The pod's unbound WaitForFirstConsumer claims that do not name `node` yet.
pub fn to_select(
    pod: &Pod,
    namespace: &str,
    pvcs: &HashMap<String, PersistentVolumeClaim>,
    classes: &Classes,
    node: &str,
) -> Vec<String> {
    let mut out: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .filter_map(|c| pvcs.get(&format!("{namespace}/{}", c.claim_name)))
        .filter(|pvc| waits_for_consumer(pvc, classes))
        .filter(|pvc| {
            pvc.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SELECTED_NODE))
                .map(String::as_str)
                != Some(node)
        })
        .filter_map(|pvc| pvc.metadata.name.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Write `node` into each claim's `selected-node` annotation (upstream's PreBind).
pub async fn select_node(
    client: &kube::Client,
    namespace: &str,
    claims: &[String],
    node: &str,
) -> Result<(), kube::Error> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let patch = json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
    for name in claims {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}
