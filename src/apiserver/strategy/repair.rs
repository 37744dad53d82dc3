//! The claim repair loop, upstream's `repairip` and node-port repair controllers: at start and
//! then periodically, a ClusterIP (IPAddress) or node-port claim whose Service is gone (or no
//! longer uses it) is released, and a Service whose claim is missing gets it re-created.
//!
//! Invariant: a claim is judged only against the Services of the same store revision, and a
//! claim that was in flight (made by a write not yet stored) when the pass began is left
//! alone: the in-flight set is copied *before* the revision is chosen, and writes register a
//! key before they create it, so a claim this pass can see is either in that copy or belongs
//! to a write that had already finished (stored, or given back) — never a Service on its way.
//! Claims without upstream's `managed-by: ipallocator.k8s.io` label are not ours and are
//! never touched.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::apiserver::strategy::service_claims::{self, owner_of_claim, Held, Owner};
use crate::apiserver::{storage, State};
use crate::store::{KeyValue, RangeRequest, Revision};

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub released: usize,
    pub recreated: usize,
    /// Services whose IP or port is held by another Service (upstream raises an Event).
    pub conflicts: usize,
}

async fn range(
    state: &State,
    prefix: String,
    rev: Revision,
) -> Result<Vec<KeyValue>, crate::store::Error> {
    let mut out = Vec::new();
    let mut start_after = None;
    loop {
        let page = state
            .store
            .range(RangeRequest {
                prefix: prefix.clone(),
                start_after,
                limit: 1000,
                revision: Some(rev),
            })
            .await?;
        let more = page.more;
        start_after = page.items.last().map(|kv| kv.key.clone());
        out.extend(page.items);
        if !more || start_after.is_none() {
            return Ok(out);
        }
    }
}

/// One repair pass.
pub async fn repair_once(state: &Arc<State>) -> Result<Report, crate::store::Error> {
    let in_flight = state.claims_in_flight.snapshot();
    let rev = state.store.current_revision();
    let (Some(svc_ri), Some(ip_ri)) = (
        state.registry.lookup("", "v1", "services"),
        state
            .registry
            .lookup("networking.k8s.io", "v1", "ipaddresses"),
    ) else {
        return Ok(Report::default());
    };
    let services_kv = range(state, storage::prefix(&svc_ri, None), rev).await?;
    let ip_claims = range(state, storage::prefix(&ip_ri, None), rev).await?;
    let port_claims = range(state, storage::NODE_PORT_CLAIMS.to_string(), rev).await?;

    // (namespace, name) → (uid, what it holds)
    let mut held: HashMap<(String, String), (Owner, Held)> = HashMap::new();
    for kv in &services_kv {
        let Ok(svc) = storage::decode_object(kv) else {
            continue;
        };
        let owner = Owner::of(&svc);
        held.insert(
            (owner.namespace.clone(), owner.name.clone()),
            (owner, service_claims::held_by(&svc)),
        );
    }
    let mut report = Report::default();
    // claimed IP / port → its owner, for the second half.
    let mut ip_owner: HashMap<String, Owner> = HashMap::new();
    let mut port_owner: HashMap<i64, Owner> = HashMap::new();
    for (kv, is_ip) in ip_claims
        .iter()
        .map(|kv| (kv, true))
        .chain(port_claims.iter().map(|kv| (kv, false)))
    {
        let Ok(v) = storage::decode_object(kv) else {
            continue;
        };
        let Some(owner) = owner_of_claim(&v) else {
            continue;
        };
        let what = kv.key.rsplit('/').next().unwrap_or_default().to_string();
        let port = what.parse::<i64>().ok();
        let used = held
            .get(&(owner.namespace.clone(), owner.name.clone()))
            .is_some_and(|(svc, h)| {
                (owner.uid.is_empty() || owner.uid == svc.uid)
                    && if is_ip {
                        h.ips.contains(&what)
                    } else {
                        port.is_some_and(|p| h.ports.contains(&p))
                    }
            });
        if used || in_flight.contains(&kv.key) {
            if is_ip {
                ip_owner.insert(what, owner);
            } else if let Some(p) = port {
                port_owner.insert(p, owner);
            }
            continue;
        }
        match state.store.delete(&kv.key, kv.mod_revision).await {
            Ok(_) => {
                report.released += 1;
                tracing::info!(claim = %kv.key, service = %format!("{}/{}", owner.namespace, owner.name), "released an orphaned service claim");
            }
            Err(e) => tracing::debug!(claim = %kv.key, error = %e, "claim changed meanwhile"),
        }
    }
    for (owner, h) in held.values() {
        for ip in &h.ips {
            match ip_owner.get(ip) {
                Some(o) if o.namespace == owner.namespace && o.name == owner.name => {}
                Some(o) => {
                    report.conflicts += 1;
                    tracing::warn!(ip, service = %format!("{}/{}", owner.namespace, owner.name), holder = %format!("{}/{}", o.namespace, o.name), "ClusterIP is allocated to another Service");
                }
                None => match service_claims::reclaim(state, Some(ip), None, owner).await {
                    Ok(true) => report.recreated += 1,
                    Ok(false) => report.conflicts += 1,
                    Err(e) => tracing::warn!(ip, error = %e, "cannot re-create a ClusterIP claim"),
                },
            }
        }
        for port in &h.ports {
            match port_owner.get(port) {
                Some(o) if o.namespace == owner.namespace && o.name == owner.name => {}
                Some(o) => {
                    report.conflicts += 1;
                    tracing::warn!(port, service = %format!("{}/{}", owner.namespace, owner.name), holder = %format!("{}/{}", o.namespace, o.name), "node port is allocated to another Service");
                }
                None => match service_claims::reclaim(state, None, Some(*port), owner).await {
                    Ok(true) => report.recreated += 1,
                    Ok(false) => report.conflicts += 1,
                    Err(e) => {
                        tracing::warn!(port, error = %e, "cannot re-create a node-port claim")
                    }
                },
            }
        }
    }
    if report != Report::default() {
        tracing::info!(?report, "service claim repair");
    }
    Ok(report)
}

/// Repair every `interval`, forever (the start-up pass is awaited by `apiserver::run`).
pub async fn run(state: Arc<State>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        if let Err(e) = repair_once(&state).await {
            tracing::warn!(error = %e, "service claim repair failed; retrying at the next interval");
        }
    }
}
