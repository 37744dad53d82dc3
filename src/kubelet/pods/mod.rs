//! Running the pods bound to this node: a watch on pods with the field selector
//! `spec.nodeName=<node>` (upstream's kubelet pod source), one worker task per pod
//! (`worker.rs`), and at start the images found in `DATA_DIR/images/` imported (as k3s
//! does with `agent/images/`) and shims of pods that no longer exist stopped.
//!
//! Invariant: the agent never forks containers itself; everything runs in per-pod shims
//! (`runtime::shim`) that survive an agent restart, and the workers re-adopt them.

pub mod atomic_writer;
pub mod cleanup;
pub mod container_spec;
pub mod dns;
pub mod events;
pub mod evict;
pub mod hooks;
pub mod host_path;
pub mod probe;
pub mod pull;
pub mod pvc;
pub mod resources;
pub mod static_pods;
pub mod status;
pub mod stop;
pub mod subpath;
pub mod token;
pub mod volume_ownership;
pub mod volumes;
pub mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::watch;

use crate::kubelet::runtime::image::{import, Store};
use crate::kubelet::runtime::{client as shim, shim::Request};

/// What every worker shares.
pub struct Shared {
    /// The node's pod network (`None`: netlink unavailable, pods get loopback only).
    pub network: Option<Arc<crate::kubelet::network::Network>>,
    pub node_name: String,
    pub node_ip: String,
    pub clients: watch::Receiver<kube::Client>,
    pub store: Store,
    /// Registry pulls into `store` (shared, so concurrent pulls of an image are one).
    pub puller: Arc<crate::kubelet::images::Puller>,
    /// Pod state directories (`<data dir>/pods/<uid>`).
    pub pods_dir: PathBuf,
    /// CRI log root (`/var/log/pods` by default).
    pub log_dir: PathBuf,
    /// cgroup parent for pods (`kubepods`).
    pub cgroup_root: String,
    /// Pod uid → `Evicted` message: pods the eviction manager chose, for their workers.
    pub evictions: std::sync::Mutex<HashMap<String, String>>,
    pub dns: dns::NodeDns,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("image store: {0}")]
    Store(#[from] crate::kubelet::runtime::image::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Import every archive in `dir` (k3s's `agent/images/`); failures are logged, not fatal.
pub fn auto_import(store: &Store, dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for f in files {
        match import::import(store, &f) {
            Ok(images) => {
                for i in images {
                    tracing::info!(image = %i.names.join(","), id = %i.id, file = %f.display(), "image imported");
                }
            }
            Err(e) => {
                tracing::warn!(file = %f.display(), error = %e, "cannot import image archive")
            }
        }
    }
}

/// Watch this node's pods and run them until `shutdown`.
pub async fn run(
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    std::fs::create_dir_all(&shared.pods_dir).map_err(|source| Error::Io {
        path: shared.pods_dir.clone(),
        source,
    })?;
    tokio::pin!(shutdown);
    let mut workers: HashMap<String, (watch::Sender<Option<Pod>>, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    let mut clients = shared.clients.clone();
    let mut orphans_checked = false;
    loop {
        let client = clients.borrow_and_update().clone();
        let api: Api<Pod> = Api::all(client);
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", shared.node_name));
        let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
        let mut init_seen: Vec<String> = Vec::new();
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                r = clients.changed() => {
                    if r.is_err() { return Ok(()) }
                    break; // a new client (renewed certificate): restart the watch with it
                }
                ev = stream.next() => {
                    let Some(ev) = ev else { break };
                    match ev {
                        Ok(Event::Apply(p)) | Ok(Event::InitApply(p)) => {
                            if let Some(uid) = p.metadata.uid.clone() {
                                init_seen.push(uid.clone());
                                dispatch(&shared, &mut workers, uid, Some(p));
                            }
                        }
                        Ok(Event::Delete(p)) => {
                            if let Some(uid) = p.metadata.uid.clone() {
                                dispatch(&shared, &mut workers, uid, None);
                            }
                        }
                        Ok(Event::Init) => init_seen.clear(),
                        Ok(Event::InitDone) => {
                            // Pods deleted while the watch was down are missing from the relist.
                            let gone: Vec<String> = workers
                                .keys()
                                .filter(|uid| !init_seen.contains(uid))
                                .cloned()
                                .collect();
                            for uid in gone {
                                dispatch(&shared, &mut workers, uid, None);
                            }
                            if !orphans_checked {
                                orphans_checked = true;
                                stop_orphans(&shared, &init_seen).await;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                    }
                }
            }
            workers.retain(|_, (_, h)| !h.is_finished());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn dispatch(
    shared: &Arc<Shared>,
    workers: &mut HashMap<String, (watch::Sender<Option<Pod>>, tokio::task::JoinHandle<()>)>,
    uid: String,
    pod: Option<Pod>,
) {
    if let Some((tx, h)) = workers.get(&uid) {
        if !h.is_finished() {
            let _ = tx.send(pod);
            return;
        }
        workers.remove(&uid);
    }
    if pod.is_none() {
        return;
    }
    let (tx, rx) = watch::channel(pod);
    let h = tokio::spawn(worker::run(shared.clone(), rx));
    workers.insert(uid, (tx, h));
}

/// Pod directories whose pod is no longer bound here: stop their shims, remove them.
async fn stop_orphans(shared: &Shared, live: &[String]) {
    let Ok(rd) = std::fs::read_dir(&shared.pods_dir) else {
        return;
    };
    for e in rd.flatten() {
        let uid = e.file_name().to_string_lossy().to_string();
        if live.contains(&uid) {
            continue;
        }
        let dir = e.path();
        if shim::alive(&dir).await {
            tracing::info!(uid = %uid, "stopping the shim of a pod that no longer exists");
            let _ = shim::call(&dir, &Request::Shutdown).await;
            for _ in 0..50 {
                if !shim::alive(&dir).await {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if let Some(net) = &shared.network {
            let _ = net.detach(&uid).await;
        }
        if let Err(e) = cleanup::remove_pod_dir(&dir) {
            tracing::warn!(uid = %uid, error = %e, "orphaned pod directory kept");
        }
    }
    // Addresses of sandboxes that went while the agent was away.
    if let Some(net) = &shared.network {
        net.release_unless(live).await;
    }
}
