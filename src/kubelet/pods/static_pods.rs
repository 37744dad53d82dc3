//! Static pods from `--pod-manifest-path DIR` (upstream's file pod source) and their mirror
//! pods: every `*.yaml`/`*.yml`/`*.json` manifest in DIR (hidden files ignored, as upstream)
//! becomes a mirror pod `<name>-<node>` in its namespace (default `default`), bound to this
//! node, annotated `kubernetes.io/config.mirror` and `kubernetes.io/config.hash` (a hash of
//! the manifest) and `kubernetes.io/config.source: file`, owned by the Node object — what
//! NodeRestriction admits from a node. The pod workers then run it like any pod bound here.
//!
//! The directory is re-read every few seconds (upstream re-lists every 20 s besides
//! inotify): a new file creates the mirror pod; an edited file (new hash) deletes the old
//! mirror pod and, once it is gone, creates the new one; a removed file deletes it; a mirror
//! pod deleted by someone else is created again. Malformed manifests are logged and skipped.
//!
//! Difference from upstream: the pod runs through its mirror pod, so it needs the apiserver
//! (upstream's kubelet runs static pods without one).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use serde_json::json;
use sha2::{Digest, Sha256};

pub const ANN_MIRROR: &str = "kubernetes.io/config.mirror";
pub const ANN_HASH: &str = "kubernetes.io/config.hash";
pub const ANN_SOURCE: &str = "kubernetes.io/config.source";
const RESYNC: Duration = Duration::from_secs(3);
const MAX_MANIFEST: u64 = 1 << 20;

/// One manifest as its mirror pod.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub namespace: String,
    pub name: String,
    pub hash: String,
    pub pod: serde_json::Value,
}

/// Reads DIR: the mirror pods it asks for, by `namespace/name`.
pub fn read_dir(dir: &Path, node: &str, node_uid: &str) -> BTreeMap<String, Mirror> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            !name.starts_with('.')
                && (name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
        })
        .collect();
    files.sort();
    for f in files {
        match mirror_of(&f, node, node_uid) {
            Ok(m) => {
                out.insert(format!("{}/{}", m.namespace, m.name), m);
            }
            Err(e) => {
                tracing::warn!(file = %f.display(), error = %e, "skipping a static pod manifest")
            }
        }
    }
    out
}

fn mirror_of(file: &Path, node: &str, node_uid: &str) -> Result<Mirror, String> {
    let meta = std::fs::metadata(file).map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.len() > MAX_MANIFEST {
        return Err("not a regular file of at most 1 MiB".into());
    }
    let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
    let pod: Pod = serde_yaml_ng::from_slice(&bytes).map_err(|e| format!("not a Pod: {e}"))?;
    let mut v = serde_json::to_value(&pod).map_err(|e| e.to_string())?;
    if v["kind"] != "Pod" {
        return Err(format!("kind {} is not Pod", v["kind"]));
    }
    let base = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or("the pod has no name")?;
    let name = format!("{base}-{node}");
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    let hash = format!("{:x}", Sha256::digest(&bytes))[..32].to_string();
    let meta = v["metadata"]
        .as_object_mut()
        .ok_or("the pod has no metadata")?;
    meta.insert("name".into(), json!(name));
    meta.insert("namespace".into(), json!(namespace));
    for k in [
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "ownerReferences",
    ] {
        meta.remove(k);
    }
    let ann = meta
        .entry("annotations")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or("annotations are not a map")?;
    ann.insert(ANN_MIRROR.into(), json!(hash));
    ann.insert(ANN_HASH.into(), json!(hash));
    ann.insert(ANN_SOURCE.into(), json!("file"));
    meta.insert(
        "ownerReferences".into(),
        json!([{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid, "controller": true}]),
    );
    v["spec"]["nodeName"] = json!(node);
    v.as_object_mut().map(|o| o.remove("status"));
    Ok(Mirror {
        namespace,
        name,
        hash,
        pod: v,
    })
}

/// Keeps the mirror pods in step with DIR until the task is aborted.
pub async fn run(
    clients: tokio::sync::watch::Receiver<kube::Client>,
    dir: PathBuf,
    node: String,
    node_uid: String,
) {
    loop {
        let want = {
            let (d, n, u) = (dir.clone(), node.clone(), node_uid.clone());
            tokio::task::spawn_blocking(move || read_dir(&d, &n, &u))
                .await
                .unwrap_or_default()
        };
        let client = clients.borrow().clone();
        if let Err(e) = sync(&client, &node, &want).await {
            tracing::warn!(error = %e, "cannot sync the static pods' mirror pods");
        }
        tokio::time::sleep(RESYNC).await;
    }
}

async fn sync(
    client: &kube::Client,
    node: &str,
    want: &BTreeMap<String, Mirror>,
) -> Result<(), kube::Error> {
    let all: Api<Pod> = Api::all(client.clone());
    let have = all
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    let mut present = BTreeMap::new();
    for p in have.items {
        let ann = p.metadata.annotations.clone().unwrap_or_default();
        if ann.get(ANN_SOURCE).map(String::as_str) != Some("file") || !ann.contains_key(ANN_MIRROR)
        {
            continue;
        }
        let key = format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or_default(),
            p.metadata.name.as_deref().unwrap_or_default()
        );
        present.insert(key, p);
    }
    for (key, p) in &present {
        let stale = match want.get(key) {
            None => true,
            Some(m) => {
                p.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ANN_HASH))
                    != Some(&m.hash)
            }
        };
        if stale && p.metadata.deletion_timestamp.is_none() {
            let api: Api<Pod> = Api::namespaced(
                client.clone(),
                p.metadata.namespace.as_deref().unwrap_or("default"),
            );
            let name = p.metadata.name.clone().unwrap_or_default();
            tracing::info!(pod = %key, "static pod removed or changed: deleting its mirror pod");
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    for (key, m) in want {
        if present.contains_key(key) {
            continue; // up to date, or being deleted (created again once gone)
        }
        let Ok(pod) = serde_json::from_value::<Pod>(m.pod.clone()) else {
            continue;
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), &m.namespace);
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => tracing::info!(pod = %key, "mirror pod created for a static pod"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(kube::Error::Api(e)) => {
                tracing::warn!(pod = %key, error = %e.message, "the API refused a mirror pod")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_become_mirror_pods() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("web.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  uid: bogus\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
        )
        .unwrap();
        std::fs::write(d.path().join(".hidden.yaml"), "kind: Pod").unwrap();
        std::fs::write(d.path().join("bad.yaml"), "kind: [").unwrap();
        std::fs::write(
            d.path().join("svc.json"),
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"}}"#,
        )
        .unwrap();
        let m = read_dir(d.path(), "n1", "u1");
        assert_eq!(m.keys().collect::<Vec<_>>(), ["default/web-n1"]);
        let w = &m["default/web-n1"];
        assert_eq!(w.pod["spec"]["nodeName"], "n1");
        assert_eq!(w.pod["metadata"]["annotations"][ANN_MIRROR], w.hash);
        assert_eq!(w.pod["metadata"]["ownerReferences"][0]["kind"], "Node");
        assert!(w.pod["metadata"]["uid"].is_null());
        let before = w.hash.clone();
        std::fs::write(
            d.path().join("web.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox:2\n",
        )
        .unwrap();
        assert_ne!(
            read_dir(d.path(), "n1", "u1")["default/web-n1"].hash,
            before
        );
    }
}
