//! Image garbage collection and the Node's `status.images` (upstream's `image_gc_manager.go`
//! and `setNodeStatusImages`).
//!
//! Every `interval` the filesystem holding the image store is measured; when its use reaches
//! `high` percent (`imageGCHighThresholdPercent`, 85), images are removed, least recently
//! used first, until the estimate is down to `low` percent (`imageGCLowThresholdPercent`,
//! 80). Never removed: an image a non-terminal pod bound to this node names, and an image
//! first seen less than `min_age` ago (`imageMinimumGCAge`, 2 min; it may be about to start).
//! As upstream, "last used" is kept in memory: at start every image counts as used now.
//!
//! `status.images`: names (digests first, then tags) and `sizeBytes`, largest first, at most
//! 50 (upstream's `nodeStatusMaxImages`).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::Api;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::kubelet::runtime::image::{Image, Store};

/// Upstream's `nodeStatusMaxImages`.
pub const MAX_STATUS_IMAGES: usize = 50;

#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub high_percent: u8,
    pub low_percent: u8,
    pub min_age: Duration,
    pub interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot measure {path}: {detail}")]
    Statfs { path: String, detail: String },
    #[error("cannot list this node's pods: {0}")]
    Pods(String),
    #[error("image store: {0}")]
    Store(#[from] crate::kubelet::runtime::image::Error),
}

/// `status.images` from the store.
pub fn node_images(store: &Store) -> Value {
    let mut images = store.list().unwrap_or_default();
    images.sort_by(|a, b| b.size.cmp(&a.size).then(a.id.cmp(&b.id)));
    let list: Vec<Value> = images
        .iter()
        .take(MAX_STATUS_IMAGES)
        .map(|i| {
            let mut names: Vec<&String> = i.names.iter().filter(|n| n.contains('@')).collect();
            names.extend(i.names.iter().filter(|n| !n.contains('@')));
            let names: Vec<String> = if names.is_empty() {
                vec![i.id.clone()]
            } else {
                names.into_iter().cloned().collect()
            };
            json!({"names": names, "sizeBytes": i.size})
        })
        .collect();
    Value::Array(list)
}

/// (capacity, used) bytes of the filesystem holding `path`.
pub fn usage(path: &Path) -> Result<(u64, u64), Error> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| Error::Statfs {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    let frsize = st.fragment_size() as u64;
    let capacity = st.blocks() as u64 * frsize;
    let available = st.blocks_available() as u64 * frsize;
    Ok((capacity, capacity.saturating_sub(available)))
}

/// Ids of the images pods on this node still need (non-terminal pods).
async fn in_use(
    client: &kube::Client,
    node: &str,
    store: &Store,
) -> Result<HashSet<String>, Error> {
    let api: Api<Pod> = Api::all(client.clone());
    let pods = api
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .map_err(|e| Error::Pods(e.to_string()))?;
    let images = store.list()?;
    let mut used = HashSet::new();
    for p in pods.items {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded") | Some("Failed")) {
            continue;
        }
        let Some(spec) = p.spec else { continue };
        let refs = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .filter_map(|c| c.image.clone());
        for r in refs {
            if let Some(i) = find(&images, &r) {
                used.insert(i.id.clone());
            }
        }
    }
    Ok(used)
}

fn find<'a>(images: &'a [Image], reference: &str) -> Option<&'a Image> {
    let norm = crate::kubelet::runtime::image::reference::normalize(reference).ok()?;
    images.iter().find(|i| i.names.contains(&norm))
}

/// The collector's memory: when each image was last seen in use (or first seen).
#[derive(Default)]
pub struct State {
    last_used: HashMap<String, Instant>,
    first_seen: HashMap<String, Instant>,
}

/// One pass: returns the ids removed.
pub async fn collect(
    cfg: &Config,
    store: &Store,
    client: &kube::Client,
    state: &mut State,
) -> Result<Vec<String>, Error> {
    let now = Instant::now();
    let used = in_use(client, &cfg.node_name, store).await?;
    let images = store.list()?;
    for i in &images {
        state.first_seen.entry(i.id.clone()).or_insert(now);
        let last = state.last_used.entry(i.id.clone()).or_insert(now);
        if used.contains(&i.id) {
            *last = now;
        }
    }
    let ids: HashSet<&String> = images.iter().map(|i| &i.id).collect();
    state.last_used.retain(|k, _| ids.contains(k));
    state.first_seen.retain(|k, _| ids.contains(k));

    let (capacity, used_bytes) = usage(store.root())?;
    if capacity == 0 || used_bytes * 100 < capacity * u64::from(cfg.high_percent) {
        return Ok(Vec::new());
    }
    let target = capacity * u64::from(cfg.low_percent) / 100;
    let mut to_free = used_bytes.saturating_sub(target);
    tracing::info!(
        used_bytes,
        capacity,
        to_free,
        "image filesystem above the GC high threshold; removing unused images"
    );
    let mut candidates: Vec<&Image> = images
        .iter()
        .filter(|i| !used.contains(&i.id))
        .filter(|i| {
            state
                .first_seen
                .get(&i.id)
                .is_some_and(|t| now.duration_since(*t) >= cfg.min_age)
        })
        .collect();
    candidates.sort_by_key(|i| state.last_used.get(&i.id).copied().unwrap_or(now));
    let mut removed = Vec::new();
    for i in candidates {
        if to_free == 0 {
            break;
        }
        let s = store.clone();
        let id = i.id.clone();
        let r = tokio::task::spawn_blocking(move || s.remove(&id)).await;
        match r {
            Ok(Ok(_)) => {
                tracing::info!(image = %i.names.join(","), id = %i.id, bytes = i.size, "image garbage-collected");
                to_free = to_free.saturating_sub(i.size);
                removed.push(i.id.clone());
            }
            Ok(Err(e)) => tracing::warn!(id = %i.id, error = %e, "cannot remove image"),
            Err(e) => tracing::warn!(id = %i.id, error = %e, "image removal task failed"),
        }
    }
    if to_free > 0 {
        tracing::warn!(
            to_free,
            "image GC could not free enough space: the remaining images are in use or too new"
        );
    }
    Ok(removed)
}

/// Collect every `interval` until the process ends.
pub async fn run(cfg: Config, store: Store, clients: watch::Receiver<kube::Client>) {
    let mut state = State::default();
    let mut tick = tokio::time::interval(cfg.interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let client = clients.borrow().clone();
        if let Err(e) = collect(&cfg, &store, &client, &mut state).await {
            tracing::warn!(error = %e, "image garbage collection failed");
        }
    }
}
