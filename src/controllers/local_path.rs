//! Local-path volumes, as k3s bundles rancher's local-path-provisioner: the `local-path`
//! StorageClass (provisioner `rancher.io/local-path`, default-annotated,
//! `WaitForFirstConsumer`, reclaim `Delete`) written at start, and a provisioner that gives a
//! claim of that class a `hostPath` PersistentVolume `pvc-<claim uid>` at
//! `<--default-local-storage-path>/pvc-<uid>_<namespace>_<name>` (`DirectoryOrCreate`, the
//! kubelet creates it) with node affinity `kubernetes.io/hostname In [node]`, pre-bound to
//! the claim, then binds the claim (upstream's PV controller's `volumeName`,
//! `pv.kubernetes.io/bind-completed`, phase `Bound`, capacity and access modes).
//!
//! The node is the claim's `volume.kubernetes.io/selected-node` annotation (what upstream's
//! scheduler writes for `WaitForFirstConsumer`); for a pod placed with `spec.nodeName`, which
//! no scheduler sees, that pod's node is written there first. Like upstream's PV controller
//! this controller also gives an unbound claim without `storageClassName` the default class
//! (retroactive default StorageClass), and deletes a released `Delete` volume it provisioned
//! once its claim is gone.
//!
//! Invariants: a claim is bound only to the volume named after its own uid, so a claim can
//! never be bound to another claim's data; the provisioner writes objects only through the
//! API (authorized and audited like any controller write); reconciles are level-based (the
//! whole state is re-read on every change), so a lost write is retried on the next event or
//! resync.
//! The scheduler writes `selected-node` for the pods it places (`scheduler::volume_binding`);
//! the kubelet mounts the volume (`kubelet::pods::pvc`).
//! Not yet: the directory of a deleted volume stays on the node (k3s runs a helper pod to
//! remove it), capacity limits (local-path does not enforce them either).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::Error;

const NAME: &str = "local-path-provisioner";
pub const CLASS: &str = "local-path";
pub const PROVISIONER: &str = "rancher.io/local-path";
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
const RESYNC: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Config {
    /// Where volumes live on every node (k3s's `--default-local-storage-path`).
    pub storage_path: PathBuf,
}

/// The StorageClass k3s ships in `local-storage.yaml`.
fn storage_class() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": CLASS, "annotations": {DEFAULT_CLASS: "true"}},
        "provisioner": PROVISIONER,
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete",
    })
}

/// The volume for `pvc` on `node` (`None` if the claim lacks a name, namespace or uid).
pub fn volume_for(
    pvc: &PersistentVolumeClaim,
    node: &str,
    storage: &std::path::Path,
) -> Option<Value> {
    let m = &pvc.metadata;
    let (ns, name, uid) = (
        m.namespace.as_deref()?,
        m.name.as_deref()?,
        m.uid.as_deref()?,
    );
    let spec = pvc.spec.as_ref()?;
    let request = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "1Gi".into());
    let modes = spec
        .access_modes
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| vec!["ReadWriteOnce".into()]);
    let pv = format!("pvc-{uid}");
    let path = storage.join(format!("{pv}_{ns}_{name}"));
    Some(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv, "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": request},
            "accessModes": modes,
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": CLASS,
            "volumeMode": "Filesystem",
            "hostPath": {"path": path.to_string_lossy(), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                         "namespace": ns, "name": name, "uid": uid},
        },
    }))
}

/// The node a claim waits for: its annotation, else a pod placed by `spec.nodeName` using it.
fn node_for(pvc: &PersistentVolumeClaim, pods: &[Arc<Pod>]) -> (Option<String>, bool) {
    if let Some(n) = pvc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SELECTED_NODE))
        .filter(|n| !n.is_empty())
    {
        return (Some(n.clone()), false);
    }
    let (ns, name) = (
        pvc.metadata.namespace.as_deref(),
        pvc.metadata.name.as_deref(),
    );
    let node = pods
        .iter()
        .filter(|p| {
            p.metadata.namespace.as_deref() == ns && p.metadata.deletion_timestamp.is_none()
        })
        .filter_map(|p| {
            let spec = p.spec.as_ref()?;
            let uses = spec.volumes.iter().flatten().any(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .map(|c| Some(c.claim_name.as_str()))
                    == Some(name)
            });
            uses.then(|| spec.node_name.clone()).flatten()
        })
        .find(|n| !n.is_empty());
    (node, true)
}

struct State {
    client: kube::Client,
    storage: PathBuf,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    pods: Store<Pod>,
}

impl State {
    async fn patch_claim(&self, pvc: &PersistentVolumeClaim, patch: Value, status: bool) {
        let (Some(ns), Some(name)) = (&pvc.metadata.namespace, &pvc.metadata.name) else {
            return;
        };
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let pp = PatchParams::default();
        let r = if status {
            api.patch_status(name, &pp, &Patch::Merge(patch)).await
        } else {
            api.patch(name, &pp, &Patch::Merge(patch)).await
        };
        if let Err(e) = r {
            tracing::debug!(controller = NAME, %ns, %name, error = %e, "cannot update the claim");
        }
    }

    async fn sync(&self) {
        let default_class = self
            .classes
            .state()
            .iter()
            .find(|c| {
                c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_CLASS))
                    .map(String::as_str)
                    == Some("true")
            })
            .and_then(|c| c.metadata.name.clone());
        let ours: Vec<String> = self
            .classes
            .state()
            .iter()
            .filter(|c| c.provisioner == PROVISIONER)
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        // Cloned lazily, for a claim that waits for its first consumer: cloning every pod
        // on each event made every pod write cost O(pods) (issue 13 item 8's profile).
        let mut pods = None;
        let volumes: BTreeMap<String, Arc<PersistentVolume>> = self
            .volumes
            .state()
            .into_iter()
            .filter_map(|v| Some((v.metadata.name.clone()?, v)))
            .collect();
        let claims = self.claims.state();
        for pvc in &claims {
            let Some(spec) = pvc.spec.as_ref() else {
                continue;
            };
            let bound_to = spec.volume_name.clone().filter(|v| !v.is_empty());
            let class = spec.storage_class_name.clone();
            if bound_to.is_none() && class.is_none() {
                // Retroactive default StorageClass (upstream's PV controller).
                if let Some(d) = &default_class {
                    self.patch_claim(pvc, json!({"spec": {"storageClassName": d}}), false)
                        .await;
                }
                continue;
            }
            if !class.as_ref().is_some_and(|c| ours.contains(c)) {
                continue;
            }
            let Some(uid) = pvc.metadata.uid.as_deref() else {
                continue;
            };
            let want = format!("pvc-{uid}");
            if bound_to.as_deref().is_some_and(|b| b != want) {
                continue; // pre-bound by its author to some other volume: not ours.
            }
            let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
            if bound_to.is_some() && phase == Some("Bound") {
                continue;
            }
            let pods = pods.get_or_insert_with(|| self.pods.state());
            let (node, from_pod) = node_for(pvc, pods);
            let Some(node) = node else { continue }; // waiting for its first consumer
            if from_pod {
                self.patch_claim(
                    pvc,
                    json!({"metadata": {"annotations": {SELECTED_NODE: node}}}),
                    false,
                )
                .await;
            }
            let pv = match volumes.get(&want) {
                Some(pv) => Some(pv.clone()),
                None => {
                    let Some(body) = volume_for(pvc, &node, &self.storage) else {
                        continue;
                    };
                    let Ok(pv) = serde_json::from_value::<PersistentVolume>(body) else {
                        continue;
                    };
                    let api: Api<PersistentVolume> = Api::all(self.client.clone());
                    match api.create(&PostParams::default(), &pv).await {
                        Ok(created) => Some(Arc::new(created)),
                        Err(e) => {
                            tracing::debug!(controller = NAME, error = %e, "cannot create the volume");
                            None
                        }
                    }
                }
            };
            let Some(pv) = pv else { continue };
            // The claim: volumeName and the bind annotations, then Bound with the volume's
            // capacity and modes (the PV controller's two writes).
            if bound_to.is_none() {
                self.patch_claim(
                    pvc,
                    json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes",
                                                         "pv.kubernetes.io/bound-by-controller": "yes"}},
                           "spec": {"volumeName": want}}),
                    false,
                )
                .await;
            }
            let pv_spec = pv.spec.clone().unwrap_or_default();
            self.patch_claim(
                pvc,
                json!({"status": {"phase": "Bound", "accessModes": pv_spec.access_modes,
                                  "capacity": pv_spec.capacity}}),
                true,
            )
            .await;
            let api: Api<PersistentVolume> = Api::all(self.client.clone());
            if let Err(e) = api
                .patch_status(
                    &want,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": "Bound"}})),
                )
                .await
            {
                tracing::debug!(controller = NAME, error = %e, "cannot mark the volume bound");
            }
        }
        // Released volumes we provisioned: their claim (by uid) is gone.
        for (name, pv) in &volumes {
            let provisioned = pv
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(PROVISIONED_BY))
                .map(String::as_str)
                == Some(PROVISIONER);
            let spec = pv.spec.clone().unwrap_or_default();
            let Some(claim_uid) = spec.claim_ref.as_ref().and_then(|c| c.uid.clone()) else {
                continue;
            };
            let claimed = claims
                .iter()
                .any(|c| c.metadata.uid.as_deref() == Some(claim_uid.as_str()));
            if !provisioned
                || claimed
                || pv.metadata.deletion_timestamp.is_some()
                || spec.persistent_volume_reclaim_policy.as_deref() != Some("Delete")
            {
                continue;
            }
            let api: Api<PersistentVolume> = Api::all(self.client.clone());
            if let Err(e) = api.delete(name, &Default::default()).await {
                tracing::debug!(controller = NAME, error = %e, "cannot delete a released volume");
            }
        }
    }
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

/// Write the StorageClass, then provision and bind until the task is aborted.
pub async fn run(client: kube::Client, cfg: Config) -> Result<(), Error> {
    let classes_api: Api<StorageClass> = Api::all(client.clone());
    loop {
        let sc = serde_json::from_value::<StorageClass>(storage_class()).map_err(|e| {
            Error::Controller {
                name: NAME,
                detail: e.to_string(),
            }
        })?;
        match classes_api.create(&PostParams::default(), &sc).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 => break,
            Err(e) => {
                tracing::debug!(controller = NAME, error = %e, "cannot write the local-path StorageClass; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
    let notify = Arc::new(Notify::new());
    let (claims, t1) = watch_into(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        notify.clone(),
    );
    let (volumes, t2) = watch_into(Api::<PersistentVolume>::all(client.clone()), notify.clone());
    let (classes, t3) = watch_into(Api::<StorageClass>::all(client.clone()), notify.clone());
    let (pods, t4) = watch_into(Api::<Pod>::all(client.clone()), notify.clone());
    let ready = tokio::join!(
        claims.wait_until_ready(),
        volumes.wait_until_ready(),
        classes.wait_until_ready(),
        pods.wait_until_ready()
    );
    if ready.0.is_err() || ready.1.is_err() || ready.2.is_err() || ready.3.is_err() {
        for t in [t1, t2, t3, t4] {
            t.abort();
        }
        return Err(Error::Controller {
            name: NAME,
            detail: "a watch stopped before its first list".into(),
        });
    }
    let state = State {
        client,
        storage: cfg.storage_path,
        claims,
        volumes,
        classes,
        pods,
    };
    loop {
        state.sync().await;
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "ns", "uid": "u-1"},
            "spec": {"storageClassName": "local-path", "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "2Gi"}}}
        }))
        .unwrap()
    }

    #[test]
    fn volume_named_for_the_claim_on_its_node() {
        let v = volume_for(
            &claim(),
            "n1",
            std::path::Path::new("/var/lib/rampart/storage"),
        )
        .unwrap();
        assert_eq!(v["metadata"]["name"], "pvc-u-1");
        assert_eq!(
            v["spec"]["hostPath"]["path"],
            "/var/lib/rampart/storage/pvc-u-1_ns_data"
        );
        assert_eq!(v["spec"]["capacity"]["storage"], "2Gi");
        assert_eq!(v["spec"]["claimRef"]["uid"], "u-1");
        assert_eq!(
            v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
                ["values"][0],
            "n1"
        );
        assert!(serde_json::from_value::<PersistentVolume>(v).is_ok());
        assert!(serde_json::from_value::<StorageClass>(storage_class()).is_ok());
    }

    #[test]
    fn the_first_consumer_picks_the_node() {
        let pod = |ns: &str, node: Option<&str>, claim: &str| {
            Arc::new(serde_json::from_value::<Pod>(json!({
                "metadata": {"name": "p", "namespace": ns},
                "spec": {"nodeName": node, "containers": [],
                         "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}
            })).unwrap())
        };
        let c = claim();
        assert_eq!(node_for(&c, &[]), (None, true));
        assert_eq!(node_for(&c, &[pod("ns", None, "data")]), (None, true));
        assert_eq!(
            node_for(&c, &[pod("other", Some("n2"), "data")]),
            (None, true)
        );
        assert_eq!(
            node_for(&c, &[pod("ns", Some("n1"), "data")]),
            (Some("n1".into()), true)
        );
        let mut c = claim();
        c.metadata.annotations = Some([(SELECTED_NODE.to_string(), "n3".to_string())].into());
        assert_eq!(
            node_for(&c, &[pod("ns", Some("n1"), "data")]),
            (Some("n3".into()), false)
        );
    }
}
