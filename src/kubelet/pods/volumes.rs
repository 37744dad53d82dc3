//! Pod volumes prepared on the node before the containers start (upstream's volume manager,
//! reduced): `emptyDir`, `configMap`, `secret`, `downwardAPI` and `projected` (service-account
//! token through the TokenRequest API bound to the pod, configMap, secret, downwardAPI — the
//! `kube-api-access-*` volume admission injects). Objects are read with the node's own
//! identity, which the Node authorizer limits to objects of pods bound to this node.
//!
//! Files are written under `<pod dir>/volumes/<name>/` with `defaultMode`/`mode` (upstream's
//! 0644 default), replaced atomically per file. `secret` and `projected` volumes (tokens,
//! secrets) live on a tmpfs mounted there first, so they never reach the disk (as upstream);
//! `cleanup.rs` takes them down when the pod goes. `emptyDir` with `medium: Memory` is a
//! tmpfs of `sizeLimit`; `hostPath` is checked by `host_path.rs`. configMap and secret volumes
//! are written with upstream's `..data` symlink swap (`atomic_writer.rs`) and re-read by the
//! worker every 10 s, so updates reach running pods atomically; projected volumes are
//! rewritten the same way when their service-account token is due (`token.rs`). emptyDirs are
//! 0777 as upstream's; the pod's `fsGroup` is applied by `volume_ownership.rs`.
//! `persistentVolumeClaim` volumes resolve to their PersistentVolume's host path (`pvc.rs`)
//! and get the pod's `fsGroup` like emptyDir (following `fsGroupChangePolicy`) unless the
//! claim is mounted `readOnly`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, Pod, ProjectedVolumeSource, Secret, ServiceAccount, Volume,
};
use kube::api::PostParams;
use kube::Api;

/// Prepare every volume of the pod; name → host directory.
pub async fn prepare(
    client: &kube::Client,
    pod: &Pod,
    pod_dir: &Path,
    node_name: &str,
) -> Result<BTreeMap<String, PathBuf>, String> {
    let mut out = BTreeMap::new();
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let Some(spec) = &pod.spec else {
        return Ok(out);
    };
    for v in spec.volumes.iter().flatten() {
        if let Some(hp) = &v.host_path {
            let p = super::host_path::prepare(hp)
                .map_err(|e| format!("for volume {:?} : {e}", v.name))?;
            out.insert(v.name.clone(), p);
            continue;
        }
        if let Some(c) = &v.persistent_volume_claim {
            let p = super::pvc::prepare(client, &ns, c)
                .await
                .map_err(|e| format!("for volume {:?} : {e}", v.name))?;
            if p.is_dir() {
                set_fs_group(pod, v, &p, false)?;
            }
            out.insert(v.name.clone(), p);
            continue;
        }
        let dir = pod_dir.join("volumes").join(&v.name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if v.secret.is_some() || v.projected.is_some() {
            ensure_tmpfs(&dir, None)?;
        }
        if let Some(ed) = v
            .empty_dir
            .as_ref()
            .filter(|e| e.medium.as_deref() == Some("Memory"))
        {
            // upstream: a tmpfs sized by sizeLimit (else the node's allocatable memory).
            let size = ed
                .size_limit
                .as_ref()
                .and_then(super::resources::milli)
                .map(|m| (m / 1000).max(4096) as u64);
            ensure_tmpfs(&dir, size)?;
        }
        if v.empty_dir.is_some() {
            // upstream's emptyDir mode: 0777, whatever the umask.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        fill(client, pod, &ns, v, &dir, node_name).await?;
        set_fs_group(pod, v, &dir, false)?;
        out.insert(v.name.clone(), dir);
    }
    Ok(out)
}

async fn fill(
    client: &kube::Client,
    pod: &Pod,
    ns: &str,
    v: &Volume,
    dir: &Path,
    node_name: &str,
) -> Result<(), String> {
    if v.empty_dir.is_some() {
        return Ok(());
    }
    if v.config_map.is_some() || v.secret.is_some() {
        return refresh_one(client, ns, v, dir).await.map(|_| ());
    }
    if let Some(d) = &v.downward_api {
        let mode = d.default_mode.unwrap_or(0o644);
        for f in d.items.iter().flatten() {
            let value = downward(
                pod,
                f.field_ref.as_ref().map(|r| r.field_path.as_str()),
                node_name,
            )?;
            write_file(dir, &f.path, value.as_bytes(), f.mode.unwrap_or(mode))?;
        }
        return Ok(());
    }
    if let Some(p) = &v.projected {
        let payload = projected(client, pod, ns, p, node_name).await?;
        return super::atomic_writer::write(dir, &payload).map(|_| ());
    }
    Err(format!(
        "volume {:?}: this volume type is not supported yet",
        v.name
    ))
}

/// A projected volume's payload (tokens, configMaps, secrets, downward API), written with
/// the `..data` swap so a rotated token replaces the old one atomically (`token.rs`).
async fn projected(
    client: &kube::Client,
    pod: &Pod,
    ns: &str,
    p: &ProjectedVolumeSource,
    node_name: &str,
) -> Result<super::atomic_writer::Payload, String> {
    let mode = p.default_mode.unwrap_or(0o644);
    let m = |mode: i32| (mode & 0o777) as u32;
    let mut payload = super::atomic_writer::Payload::new();
    for src in p.sources.iter().flatten() {
        if let Some(t) = &src.service_account_token {
            let token = sa_token(client, pod, ns, t.audience.clone(), t.expiration_seconds).await?;
            payload.insert(t.path.clone(), (token.into_bytes(), m(mode)));
        }
        let (data, items) = if let Some(cm) = &src.config_map {
            let data = config_map(client, ns, &cm.name, cm.optional.unwrap_or(false)).await?;
            (data, cm.items.as_deref())
        } else if let Some(s) = &src.secret {
            let data = secret(client, ns, &s.name, s.optional.unwrap_or(false)).await?;
            (data, s.items.as_deref())
        } else {
            (BTreeMap::new(), None)
        };
        match items {
            Some(items) => {
                for it in items {
                    let v = data
                        .get(&it.key)
                        .ok_or_else(|| format!("key {:?} not found", it.key))?;
                    payload.insert(it.path.clone(), (v.clone(), m(it.mode.unwrap_or(mode))));
                }
            }
            None => {
                for (k, v) in data {
                    payload.insert(k, (v, m(mode)));
                }
            }
        }
        if let Some(d) = &src.downward_api {
            for f in d.items.iter().flatten() {
                let value = downward(
                    pod,
                    f.field_ref.as_ref().map(|r| r.field_path.as_str()),
                    node_name,
                )?;
                payload.insert(
                    f.path.clone(),
                    (value.into_bytes(), m(f.mode.unwrap_or(mode))),
                );
            }
        }
    }
    Ok(payload)
}

/// A configMap or secret volume's payload, written with the `..data` swap; returns whether
/// it changed.
async fn refresh_one(
    client: &kube::Client,
    ns: &str,
    v: &Volume,
    dir: &Path,
) -> Result<bool, String> {
    let (data, items, mode) = if let Some(cm) = &v.config_map {
        (
            config_map(client, ns, &cm.name, cm.optional.unwrap_or(false)).await?,
            cm.items.as_deref(),
            cm.default_mode.unwrap_or(0o644),
        )
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        (
            secret(client, ns, &name, s.optional.unwrap_or(false)).await?,
            s.items.as_deref(),
            s.default_mode.unwrap_or(0o644),
        )
    } else {
        return Ok(false);
    };
    let mut payload = super::atomic_writer::Payload::new();
    match items {
        Some(items) => {
            for it in items {
                let v = data
                    .get(&it.key)
                    .ok_or_else(|| format!("key {:?} not found", it.key))?;
                payload.insert(
                    it.path.clone(),
                    (v.clone(), (it.mode.unwrap_or(mode) & 0o777) as u32),
                );
            }
        }
        None => {
            for (k, v) in &data {
                payload.insert(k.clone(), (v.clone(), (mode & 0o777) as u32));
            }
        }
    }
    super::atomic_writer::write(dir, &payload)
}

/// The pod's `fsGroup` on a volume that supports ownership management (emptyDir, configMap,
/// secret, projected, downwardAPI; `volume_ownership.rs`). Only emptyDir follows
/// `fsGroupChangePolicy`: the others are written by the kubelet and re-grouped on every
/// write, as upstream's atomic-writer volumes are. `updated`: after a refresh.
fn set_fs_group(pod: &Pod, v: &Volume, dir: &Path, updated: bool) -> Result<(), String> {
    let Some(psc) = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()) else {
        return Ok(());
    };
    let Some(gid) = psc.fs_group.and_then(|g| u32::try_from(g).ok()) else {
        return Ok(());
    };
    let readonly = v.config_map.is_some()
        || v.secret.is_some()
        || v.projected.is_some()
        || v.downward_api.is_some();
    let writable_claim = v
        .persistent_volume_claim
        .as_ref()
        .is_some_and(|c| !super::pvc::read_only(c));
    if !readonly && v.empty_dir.is_none() && !writable_claim {
        return Ok(());
    }
    let policy = if readonly || updated {
        super::volume_ownership::Policy::Always
    } else {
        super::volume_ownership::Policy::from_pod(psc.fs_group_change_policy.as_deref())
    };
    super::volume_ownership::apply(dir, gid, policy, readonly)
        .map_err(|e| format!("for volume {:?} : {e}", v.name))
}

/// Re-reads the pod's configMap and secret volumes and swaps in what changed (upstream's
/// periodic volume remount); a failure keeps the old content, as upstream.
pub async fn refresh(client: &kube::Client, pod: &Pod, pod_dir: &Path, node_name: &str) {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = pod_dir.join("volumes").join(&v.name);
        if let Some(p) = v.projected.as_ref().filter(|p| super::token::due(&dir, p)) {
            let written = match projected(client, pod, &ns, p, node_name).await {
                Ok(payload) => super::atomic_writer::write(&dir, &payload),
                Err(e) => Err(e),
            };
            match written {
                Ok(_) => {
                    // The new files get the pod's fsGroup like the first ones did.
                    if let Err(e) = set_fs_group(pod, v, &dir, true) {
                        tracing::warn!(volume = %v.name, error = %e, "fsGroup of the rotated token volume");
                    }
                    tracing::info!(volume = %v.name, pod = ?pod.metadata.name, "service account token rotated")
                }
                Err(e) => {
                    tracing::debug!(volume = %v.name, error = %e, "token rotation failed; keeping the old token")
                }
            }
            continue;
        }
        if v.config_map.is_none() && v.secret.is_none() {
            continue;
        }
        match refresh_one(client, &ns, v, &dir).await {
            Ok(true) => {
                if let Err(e) = set_fs_group(pod, v, &dir, true) {
                    tracing::warn!(volume = %v.name, error = %e, "fsGroup of the updated volume");
                }
                tracing::info!(volume = %v.name, pod = ?pod.metadata.name, "volume content updated")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(volume = %v.name, error = %e, "volume refresh failed; keeping the old content")
            }
        }
    }
}

async fn config_map(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(cm)) => {
            let mut m: BTreeMap<String, Vec<u8>> = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            for (k, v) in cm.binary_data.unwrap_or_default() {
                m.insert(k, v.0);
            }
            Ok(m)
        }
        Ok(None) if optional => Ok(BTreeMap::new()),
        Ok(None) => Err(format!("configmap \"{name}\" not found")),
        Err(e) => Err(format!("configmap \"{name}\": {e}")),
    }
}

async fn secret(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(s)) => Ok(s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()),
        Ok(None) if optional => Ok(BTreeMap::new()),
        Ok(None) => Err(format!("secret \"{name}\" not found")),
        Err(e) => Err(format!("secret \"{name}\": {e}")),
    }
}

async fn sa_token(
    client: &kube::Client,
    pod: &Pod,
    ns: &str,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<String, String> {
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let tr: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": audience.into_iter().collect::<Vec<_>>(),
            "expirationSeconds": expiration.unwrap_or(3607),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.metadata.name,
                "uid": pod.metadata.uid,
            }
        }
    }))
    .map_err(|e| e.to_string())?;
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let out = api
        .create_token_request(&sa, &PostParams::default(), &tr)
        .await
        .map_err(|e| format!("service account token for {sa}: {e}"))?;
    out.status
        .and_then(|s| s.token)
        .ok_or_else(|| "the token request returned no token".to_string())
}

fn downward(pod: &Pod, path: Option<&str>, node_name: &str) -> Result<String, String> {
    let m = &pod.metadata;
    let kv = |map: &Option<BTreeMap<String, String>>| {
        map.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(match path {
        Some("metadata.name") => m.name.clone().unwrap_or_default(),
        Some("metadata.namespace") => m.namespace.clone().unwrap_or_default(),
        Some("metadata.uid") => m.uid.clone().unwrap_or_default(),
        Some("metadata.labels") => kv(&m.labels),
        Some("metadata.annotations") => kv(&m.annotations),
        Some("spec.nodeName") => node_name.to_string(),
        Some(p) => return Err(format!("downwardAPI field {p} is not supported yet")),
        None => return Err("downwardAPI resourceFieldRef is not supported yet".into()),
    })
}

/// Write one file below `dir`; the relative path may not climb out of it.
fn write_file(dir: &Path, rel: &str, data: &[u8], mode: i32) -> Result<(), String> {
    if rel.is_empty() || rel.starts_with('/') || rel.split('/').any(|p| p == ".." || p.is_empty()) {
        return Err(format!("invalid volume file path {rel:?}"));
    }
    let path = dir.join(rel);
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let tmp = path.with_extension("rampart-tmp");
    std::fs::write(&tmp, data).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode((mode & 0o777) as u32))
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether `dir` is a mount point (another device than its parent).
fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(d), Some(Ok(p))) = (
        std::fs::symlink_metadata(dir),
        dir.parent().map(std::fs::symlink_metadata),
    ) else {
        return false;
    };
    d.dev() != p.dev()
}

/// Mount a tmpfs (of `size` bytes, if given) on `dir` unless one is there already (a
/// restarted agent re-prepares).
fn ensure_tmpfs(dir: &Path, size: Option<u64>) -> Result<(), String> {
    if is_mount_point(dir) {
        return Ok(());
    }
    use nix::mount::MsFlags;
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(
            match size {
                Some(s) => format!("mode=0755,size={s}"),
                None => "mode=0755".to_string(),
            }
            .as_str(),
        ),
    )
    .map_err(|e| format!("tmpfs for {}: {e}", dir.display()))
}
