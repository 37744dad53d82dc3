//! `persistentVolumeClaim` volumes (upstream's volume manager resolving a claim to its
//! PersistentVolume, `getPVSpec`): the claim must be `Bound` with a `volumeName`, the volume
//! must name the claim (by uid) in its `claimRef`, and its `hostPath` or `local` path is what
//! the containers get, bind-mounted by the runtime like a `hostPath` volume. Until then the
//! pod waits in `ContainerCreating` with a `FailedMount` event and the worker retries on every
//! sync, as upstream's kubelet waits for the PV controller.
//!
//! Both objects are read with the node's identity, which the node authorizer lets reach only
//! the claims of pods bound to this node and the volumes those claims are bound to (the
//! pod → pvc → pv edges of `auth::cedar::node_graph`).
//!
//! Invariants: the volume's data is never under the pod directory (the runtime mounts the
//! volume's own path), so removing a deleted pod's directory cannot touch it; a claim bound
//! to a volume that does not point back at it is refused (upstream's claimRef uid check).
//! A directory created here for a volume of k3s's local-path provisioner is 0777, as the
//! provisioner's helper creates it (`mkdir -m 0777`), so non-root pods can write; other
//! `DirectoryOrCreate` volumes get hostPath's 0755.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeClaimVolumeSource,
};
use kube::Api;

/// The annotation the local-path provisioner puts on the volumes it creates.
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
const LOCAL_PATH: &str = "rancher.io/local-path";

/// The host path of the volume bound to the claim, prepared (created where the volume's
/// `hostPath` type says so).
pub async fn prepare(
    client: &kube::Client,
    ns: &str,
    src: &PersistentVolumeClaimVolumeSource,
) -> Result<PathBuf, String> {
    let name = &src.claim_name;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvc = match claims.get_opt(name).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(format!("persistentvolumeclaim \"{name}\" not found")),
        Err(e) => return Err(format!("error processing PVC {ns}/{name}: {e}")),
    };
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
    let volume = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|v| !v.is_empty());
    let (Some("Bound"), Some(volume)) = (phase, volume) else {
        // upstream's text for a claim the PV controller has not bound yet.
        return Err(format!(
            "error processing PVC {ns}/{name}: PVC is not bound"
        ));
    };
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv = match volumes.get_opt(volume).await {
        Ok(Some(v)) => v,
        Ok(None) => {
            return Err(format!(
                "error processing PVC {ns}/{name}: persistentvolume \"{volume}\" not found"
            ))
        }
        Err(e) => return Err(format!("error processing PVC {ns}/{name}: {e}")),
    };
    let spec = pv.spec.clone().unwrap_or_default();
    let claim_uid = spec.claim_ref.as_ref().and_then(|r| r.uid.as_deref());
    if claim_uid.is_none() || claim_uid != pvc.metadata.uid.as_deref() {
        return Err(format!(
            "error processing PVC {ns}/{name}: the claim is not bound to persistentvolume \"{volume}\""
        ));
    }
    if let Some(hp) = &spec.host_path {
        let existed = std::path::Path::new(&hp.path).exists();
        let path = super::host_path::prepare(hp)?;
        let local_path = pv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PROVISIONED_BY))
            .map(String::as_str)
            == Some(LOCAL_PATH);
        if !existed && local_path && path.is_dir() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        return Ok(path);
    }
    if let Some(local) = &spec.local {
        // A `local` volume is pre-created by the administrator: it must exist.
        return super::host_path::prepare(&HostPathVolumeSource {
            path: local.path.clone(),
            type_: None,
        })
        .and_then(|p| {
            if p.exists() {
                Ok(p)
            } else {
                Err(format!(
                    "local volume {volume}: path {:?} does not exist",
                    local.path
                ))
            }
        });
    }
    Err(format!(
        "persistentvolume \"{volume}\": only hostPath and local volumes can be mounted on this node"
    ))
}

/// Whether the pod mounts the named volume from a claim with `readOnly: true` (upstream
/// then mounts it read-only in every container, whatever the volumeMount says).
pub fn read_only(src: &PersistentVolumeClaimVolumeSource) -> bool {
    src.read_only.unwrap_or(false)
}
