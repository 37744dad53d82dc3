//! ServiceAccount admission (upstream's `ServiceAccount` plugin) for pod creates: the account
//! defaults to `default` and must exist, and unless the pod or its account opts out with
//! `automountServiceAccountToken: false` the pod gets upstream's projected token volume
//! `kube-api-access-<5 chars>` (a bound token of 3607 s, the cluster CA from the
//! `kube-root-ca.crt` ConfigMap, the namespace from the downward API) mounted read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container and init container.
//! A container that already mounts something there is left alone, as upstream does. Mirror
//! pods (static pods) are not touched: they cannot reference API objects.

use std::time::Duration;

use serde_json::{json, Value};

use super::cache::SERVICE_ACCOUNTS;
use super::{forbidden, get, name_of};
use crate::apiserver::context::Ctx;
use crate::apiserver::status::ApiResult;

pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Published in every namespace by the root CA publisher controller.
const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
const VOLUME_PREFIX: &str = "kube-api-access-";
/// Upstream's expiration for the projected token: an hour, plus 7 s so a kubelet that
/// refreshes at 80 % of the lifetime never hands out an expired one.
const TOKEN_SECONDS: u64 = 3607;

/// Fill in the service account and the token volume of a pod being created.
pub async fn mutate(ctx: &Ctx, pod: &mut Value) -> ApiResult<()> {
    if pod["metadata"]["annotations"]
        .get("kubernetes.io/config.mirror")
        .is_some()
    {
        return Ok(());
    }
    let ns = ctx.namespace().to_string();
    let name = name_of(pod);
    let sa = pod["spec"]["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            pod["spec"]["serviceAccount"]
                .as_str()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("default")
        .to_string();
    pod["spec"]["serviceAccountName"] = json!(sa);
    pod["spec"]["serviceAccount"] = json!(sa);
    let key = format!("{SERVICE_ACCOUNTS}{ns}/{sa}");
    // The default account is created by a controller right after its namespace: wait for
    // it a bounded while, as upstream's plugin retries its lookup (10 × 100–200 ms) — here
    // by waiting on the ServiceAccount cache's change signal, not by sleeping.
    let wait = if sa == "default" {
        DEFAULT_ACCOUNT_WAIT
    } else {
        Duration::ZERO
    };
    let Some(account) = find_account(ctx, &key, wait).await? else {
        return Err(forbidden(
            ctx,
            &name,
            &format!(
                "error looking up service account {ns}/{sa}: serviceaccount \"{sa}\" not found"
            ),
        ));
    };
    if automount(pod, &account) {
        mount_token(pod);
    }
    Ok(())
}

/// The most a pod create waits for its namespace's `default` account to appear.
const DEFAULT_ACCOUNT_WAIT: Duration = Duration::from_secs(2);

/// The account at `key`, from the cache (fed by a store watch), else from the store (the
/// cache may lag a just-created account by milliseconds); if absent, wait up to `wait` for
/// the cache to change and look again. Event-driven: no sleeping, no polling loop.
async fn find_account(ctx: &Ctx, key: &str, wait: Duration) -> ApiResult<Option<Value>> {
    let cache = &ctx.state.admission_caches.service_accounts;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Registered before looking, so a change between the look and the wait wakes us.
        let changed = cache.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if let Some(Some(found)) = cache.get(key) {
            return Ok(Some(found));
        }
        if let Some(found) = get(&ctx.state, key).await? {
            return Ok(Some(found));
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return Ok(None);
        }
    }
}

/// The pod's own setting wins over its account's; both default to mounting.
fn automount(pod: &Value, account: &Value) -> bool {
    pod["spec"]["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| account["automountServiceAccountToken"].as_bool())
        .unwrap_or(true)
}

/// Five characters from upstream's alphabet for generated names (no vowels, no look-alikes).
fn suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn mount_token(pod: &mut Value) {
    let spec = &mut pod["spec"];
    let lists = ["initContainers", "containers"];
    let mounted = lists.iter().any(|l| {
        spec[*l].as_array().into_iter().flatten().any(|c| {
            c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["mountPath"] == MOUNT_PATH)
        })
    });
    if mounted {
        return;
    }
    let taken = |n: &str| {
        spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["name"] == n)
    };
    let mut volume = format!("{VOLUME_PREFIX}{}", suffix());
    while taken(&volume) {
        volume = format!("{VOLUME_PREFIX}{}", suffix());
    }
    if !spec["volumes"].is_array() {
        spec["volumes"] = json!([]);
    }
    if let Some(v) = spec["volumes"].as_array_mut() {
        v.push(
            json!({"name": volume, "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIGMAP,
                    "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]}}),
        );
    }
    for l in lists {
        for c in spec[l].as_array_mut().into_iter().flatten() {
            if !c["volumeMounts"].is_array() {
                c["volumeMounts"] = json!([]);
            }
            if let Some(m) = c["volumeMounts"].as_array_mut() {
                m.push(json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH}));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_volume_mounted_once_in_every_container() {
        let mut pod = json!({"spec": {"initContainers": [{"name": "i"}],
            "containers": [{"name": "a"}, {"name": "b", "volumeMounts": [{"name": "x", "mountPath": "/x"}]}]}});
        mount_token(&mut pod);
        let vols = pod["spec"]["volumes"].as_array().unwrap();
        assert_eq!(vols.len(), 1);
        let name = vols[0]["name"].as_str().unwrap();
        assert!(name.starts_with(VOLUME_PREFIX) && name.len() == VOLUME_PREFIX.len() + 5);
        assert_eq!(
            vols[0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3607
        );
        for c in ["initContainers", "containers"] {
            for c in pod["spec"][c].as_array().unwrap() {
                assert!(c["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["name"] == name && m["mountPath"] == MOUNT_PATH));
            }
        }
        let before = pod.clone();
        mount_token(&mut pod);
        assert_eq!(pod, before, "a second pass must not add another volume");
    }

    #[test]
    fn opt_out_by_pod_or_account() {
        let sa_off = json!({"automountServiceAccountToken": false});
        assert!(!automount(&json!({"spec": {}}), &sa_off));
        assert!(automount(
            &json!({"spec": {"automountServiceAccountToken": true}}),
            &sa_off
        ));
        assert!(!automount(
            &json!({"spec": {"automountServiceAccountToken": false}}),
            &json!({})
        ));
        assert!(automount(&json!({"spec": {}}), &json!({})));
    }
}
