//! The lease-based endpoint reconciler (upstream's `--endpoint-reconciler-type=lease`): every
//! server of a cluster on a shared datastore keeps a Lease `kube-system/apiserver-<id>` fresh
//! (upstream's APIServerIdentity Leases, label `apiserver.kubernetes.io/identity`), and every
//! server rewrites the `default/kubernetes` Endpoints to list the advertised addresses of the
//! servers whose Lease is live. Agents read that list to fail over (see `roles::agent`).
//!
//! Invariants:
//! - a server whose Lease was not renewed for `LEASE_SECONDS` leaves the Endpoints within one
//!   period of any surviving server; a Lease expired for `FORGET` is deleted;
//! - writes are compare-and-swap: two servers reconciling at once never lose an update, the
//!   loser tries again at its next period; an unchanged list writes nothing;
//! - as upstream, the Endpoints carry one port for every address (this server's); servers of
//!   one cluster listen on the same port.
//!
//! Runs only on a shared datastore (`Config::ha`): on the embedded store there is one server,
//! and its Endpoints are written once at start by `bootstrap`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::apiserver::{storage, State};
use crate::store::Error as StoreError;

/// How often the Lease is renewed and the Endpoints reconciled.
const PERIOD: Duration = Duration::from_secs(5);
/// How long a Lease stays live without renewal (upstream's master lease TTL is 15 s).
const LEASE_SECONDS: i64 = 15;
/// An expired Lease is deleted after this long (its server is gone, not slow).
const FORGET: i64 = 600;
const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";
const ADDRESS_ANNOTATION: &str = "rampart.io/advertise-address";

pub(in crate::apiserver) async fn run(state: Arc<State>) {
    let Some(ha) = state.ha.clone() else { return };
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if state.draining.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        if let Err(e) = once(&state, &ha.identity).await {
            tracing::warn!(error = %e, "cannot reconcile the apiserver endpoints");
        }
    }
}

/// `2026-01-02T03:04:05.123456Z` (metav1.MicroTime).
fn micro_time(now: jiff::Timestamp) -> String {
    let secs = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
    let text = secs.to_string();
    format!(
        "{}.{:06}Z",
        text.trim_end_matches('Z'),
        now.subsec_microsecond()
    )
}

async fn once(state: &State, identity: &str) -> Result<(), StoreError> {
    let (Some(lease_ri), Some(ep_ri)) = (
        state.registry.lookup("coordination.k8s.io", "v1", "leases"),
        state.registry.lookup("", "v1", "endpoints"),
    ) else {
        return Ok(());
    };
    let now = jiff::Timestamp::now();
    let name = format!("apiserver-{identity}");
    let key = storage::key(&lease_ri, "kube-system", &name);
    let address = state.advertise.to_string();
    match state.store.get(&key, None).await? {
        None => {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-system",
                             "uid": uuid::Uuid::new_v4().to_string(),
                             "creationTimestamp": crate::apiserver::now_rfc3339(),
                             "labels": {IDENTITY_LABEL: "kube-apiserver"},
                             "annotations": {ADDRESS_ANNOTATION: address}},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS,
                         "acquireTime": micro_time(now), "renewTime": micro_time(now)},
            });
            let Ok(bytes) = storage::encode(&lease) else {
                return Ok(());
            };
            match state.store.create(&key, bytes).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Some(kv) => {
            let mut lease = storage::decode_object(&kv).unwrap_or_default();
            // Indexing a non-object would panic: anything odd is replaced, not trusted.
            if !lease.is_object() {
                lease = json!({});
            }
            if !lease["spec"].is_object() {
                lease["spec"] = json!({});
            }
            if !lease["metadata"].is_object() {
                lease["metadata"] = json!({});
            }
            if !lease["metadata"]["annotations"].is_object() {
                lease["metadata"]["annotations"] = json!({});
            }
            lease["spec"]["renewTime"] = json!(micro_time(now));
            lease["spec"]["leaseDurationSeconds"] = json!(LEASE_SECONDS);
            lease["metadata"]["annotations"][ADDRESS_ANNOTATION] = json!(address);
            let Ok(bytes) = storage::encode(&lease) else {
                return Ok(());
            };
            match state.store.update(&key, bytes, kv.mod_revision).await {
                Ok(_) | Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }

    // Every live server's address.
    let prefix = storage::key(&lease_ri, "kube-system", "apiserver-");
    let leases = state
        .store
        .range(crate::store::RangeRequest {
            prefix,
            ..Default::default()
        })
        .await?;
    let mut ips = BTreeSet::new();
    ips.insert(state.advertise.ip().to_string());
    for kv in &leases.items {
        let lease = storage::decode_object(kv).unwrap_or_default();
        if lease["metadata"]["labels"][IDENTITY_LABEL] != "kube-apiserver" {
            continue;
        }
        let renewed = lease["spec"]["renewTime"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map_or(0, |t| t.as_second());
        let duration = lease["spec"]["leaseDurationSeconds"]
            .as_i64()
            .unwrap_or(LEASE_SECONDS);
        let age = now.as_second() - renewed;
        if age <= duration {
            let ip = lease["metadata"]["annotations"][ADDRESS_ANNOTATION]
                .as_str()
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                .map(|a| a.ip().to_string());
            if let Some(ip) = ip {
                ips.insert(ip);
            }
        } else if age > FORGET {
            // A failed delete (another server won) is retried by whoever runs next.
            let _ = state.store.delete(&kv.key, kv.mod_revision).await;
        }
    }

    let ep_key = storage::key(&ep_ri, "default", "kubernetes");
    let Some(kv) = state.store.get(&ep_key, None).await? else {
        // `bootstrap` creates it; nothing to reconcile before that.
        return Ok(());
    };
    let mut endpoints = storage::decode_object(&kv).unwrap_or_default();
    if !endpoints.is_object() {
        return Ok(());
    }
    let subsets = json!([{
        "addresses": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
        "ports": [{"name": "https", "port": state.advertise.port(), "protocol": "TCP"}],
    }]);
    if endpoints["subsets"] == subsets {
        return Ok(());
    }
    endpoints["subsets"] = subsets;
    let Ok(bytes) = storage::encode(&endpoints) else {
        return Ok(());
    };
    match state.store.update(&ep_key, bytes, kv.mod_revision).await {
        Ok(_) | Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn micro_time_has_six_digits() {
        let t: jiff::Timestamp = "2026-01-02T03:04:05.5Z".parse().unwrap();
        assert_eq!(super::micro_time(t), "2026-01-02T03:04:05.500000Z");
        assert!(super::micro_time(t).parse::<jiff::Timestamp>().is_ok());
    }
}
