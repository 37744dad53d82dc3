//! The APIService strategy and the local APIServices (kube-aggregator's `apiregistration.k8s.io`
//! registry, its autoregister controller and its availability controller, in miniature).
//!
//! - Every built-in group/version has a local APIService `<version>.<group>` (`v1.` for the
//!   core group), labelled `kube-aggregator.kubernetes.io/automanaged: onstart`, with upstream's
//!   group and version priorities and `Available=True` (reason `Local`), written at start;
//!   every group/version a CRD serves gets one labelled `automanaged: "true"` (upstream's
//!   crdregistration controller), removed when no CRD serves it any more.
//! - A user's APIService must be named `<version>.<group>`. Without `spec.service` it is local
//!   and available; with one, the `Available` condition follows upstream's availability
//!   checks: `ServiceNotFound` when the Service is missing, `MissingEndpoints` when its
//!   Endpoints have no address, otherwise what the aggregator's last discovery check of the
//!   endpoint found (`Passed`, or `FailedDiscoveryCheck` until it answers; see
//!   `aggregator::availability`).
//! - Status belongs to the server: it is recomputed on every write.

use serde_json::{json, Value};

use crate::apiserver::aggregator::Checked;
use crate::apiserver::{storage, State};

const AUTOMANAGED: &str = "kube-aggregator.kubernetes.io/automanaged";

/// Upstream's `apiVersionPriorities` for the groups we serve (group minimum, version).
fn priority(group: &str, version: &str) -> (i64, i64) {
    let g = match group {
        "" => 18000,
        "apiregistration.k8s.io" => 18000,
        "apps" => 17800,
        "events.k8s.io" => 17750,
        "authentication.k8s.io" => 17700,
        "authorization.k8s.io" => 17600,
        "autoscaling" => 17500,
        "batch" => 17400,
        "certificates.k8s.io" => 17300,
        "networking.k8s.io" => 17200,
        "policy" => 17100,
        "rbac.authorization.k8s.io" => 17000,
        "storage.k8s.io" => 16800,
        "apiextensions.k8s.io" | "admissionregistration.k8s.io" => 16700,
        "scheduling.k8s.io" => 16600,
        "coordination.k8s.io" => 16500,
        "node.k8s.io" => 16300,
        "discovery.k8s.io" => 16200,
        "flowcontrol.apiserver.k8s.io" => 16100,
        "resource.k8s.io" => 15900,
        // k3s's metrics-server APIService.
        "metrics.k8s.io" => 100,
        // Ours, ranked like the CRD-registered groups upstream (1000).
        _ => 1000,
    };
    let v = match (group, version) {
        ("", "v1") => 1,
        ("metrics.k8s.io", _) => 100,
        (_, "v2") => 30,
        (_, v) if v.contains("beta") => 9,
        (_, v) if v.contains("alpha") => 1,
        _ => 15,
    };
    (g, v)
}

fn condition(status: &str, reason: &str, message: &str) -> Value {
    json!({"type": "Available", "status": status, "lastTransitionTime": crate::apiserver::now_rfc3339(),
           "reason": reason, "message": message})
}

/// The name an APIService for `group`/`version` must have.
pub fn name_for(group: &str, version: &str) -> String {
    format!("{version}.{group}")
}

/// `metadata.name` must be `<spec.version>.<spec.group>` (upstream's validation).
pub fn validate(obj: &Value) -> Vec<(String, String)> {
    let group = obj["spec"]["group"].as_str().unwrap_or_default();
    let version = obj["spec"]["version"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let mut out = Vec::new();
    if version.is_empty() {
        out.push(("spec.version".into(), "Required value".into()));
    }
    let want = name_for(group, version);
    if name != want {
        out.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": must be {want}"),
        ));
    }
    for f in ["groupPriorityMinimum", "versionPriority"] {
        if obj["spec"][f].as_i64().is_none_or(|n| n <= 0) {
            out.push((
                format!("spec.{f}"),
                format!("Invalid value: {}: must be positive", obj["spec"][f]),
            ));
        }
    }
    out
}

/// Upstream's availability condition for `obj`, from the store as it is now.
pub async fn set_availability(state: &State, obj: &mut Value, old: Option<&Value>) {
    let service = obj["spec"]["service"].clone();
    let cond = if !service.is_object() {
        condition("True", "Local", "Local APIServices are always available")
    } else {
        let ns = service["namespace"].as_str().unwrap_or_default();
        let name = service["name"].as_str().unwrap_or_default();
        let read = |resource: &'static str| {
            let key = state
                .registry
                .lookup("", "v1", resource)
                .map(|ri| storage::key(&ri, ns, name));
            async move {
                match key {
                    Some(k) => state.store.get(&k, None).await.ok().flatten(),
                    None => None,
                }
            }
        };
        if read("services").await.is_none() {
            condition(
                "False",
                "ServiceNotFound",
                &format!("service/{name} in \"{ns}\" is not present"),
            )
        } else {
            let endpoints = read("endpoints")
                .await
                .and_then(|kv| storage::decode_object(&kv).ok());
            let has_address = endpoints.is_some_and(|e| {
                e["subsets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| s["addresses"].as_array().is_some_and(|a| !a.is_empty()))
            });
            if has_address {
                // The availability controller's last discovery check (`aggregator`).
                let name = obj["metadata"]["name"].as_str().unwrap_or_default();
                match state.aggregator.checked(name) {
                    Some(Checked::Passed(_)) => condition("True", "Passed", "all checks passed"),
                    Some(Checked::Failed(reason, message)) => condition("False", reason, &message),
                    None => condition(
                        "False",
                        "FailedDiscoveryCheck",
                        "the endpoint has not been checked yet",
                    ),
                }
            } else {
                condition(
                    "False",
                    "MissingEndpoints",
                    &format!("endpoints for service/{name} in \"{ns}\" have no addresses"),
                )
            }
        }
    };
    // Keep the transition time when nothing changed, as upstream's SetAPIServiceCondition.
    let previous = old.and_then(|o| {
        o["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Available").cloned())
    });
    let cond = match previous {
        Some(p) if p["status"] == cond["status"] && p["reason"] == cond["reason"] => {
            let mut c = cond;
            c["lastTransitionTime"] = p["lastTransitionTime"].clone();
            c
        }
        _ => cond,
    };
    obj["status"] = json!({"conditions": [cond]});
}

/// Write the local APIServices of the built-in group/versions that are missing (start-up).
pub async fn ensure_local(state: &State) -> Result<(), crate::store::Error> {
    let wanted: Vec<(String, String, (i64, i64), &str)> =
        crate::api::resources::builtin_group_versions()
            .into_iter()
            .map(|(g, v)| {
                let p = priority(&g, &v);
                (g, v, p, "onstart")
            })
            .collect();
    ensure(state, wanted).await
}

/// Upstream's crdregistration controller: every group/version served by a CRD has a local
/// APIService (label `automanaged: "true"`, priorities 1000/100), and those of group/versions
/// no CRD serves any more are removed. Called whenever the served CRDs change.
pub async fn sync_crd_groups(state: &State) {
    let mut served: Vec<(String, String)> = Vec::new();
    for cv in state.registry.custom_versions() {
        let gv = (cv.info.group.clone(), cv.info.version.clone());
        if !served.contains(&gv) {
            served.push(gv);
        }
    }
    let wanted = served
        .iter()
        .map(|(g, v)| (g.clone(), v.clone(), (1000, 100), "true"))
        .collect();
    if let Err(e) = ensure(state, wanted).await {
        tracing::warn!(error = %e, "cannot register the APIServices of custom resources");
    }
    let Some(ri) = state
        .registry
        .lookup("apiregistration.k8s.io", "v1", "apiservices")
    else {
        return;
    };
    let Ok(listed) = state
        .store
        .range(crate::store::RangeRequest {
            prefix: storage::prefix(&ri, None),
            ..Default::default()
        })
        .await
    else {
        return;
    };
    for kv in listed.items {
        let Ok(obj) = storage::decode_object(&kv) else {
            continue;
        };
        if obj["metadata"]["labels"][AUTOMANAGED] != "true" {
            continue;
        }
        let gv = (
            obj["spec"]["group"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            obj["spec"]["version"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        if !served.contains(&gv) {
            if let Err(e) = state.store.delete(&kv.key, kv.mod_revision).await {
                tracing::debug!(key = %kv.key, error = %e, "APIService changed meanwhile");
            }
        }
    }
}

/// Create the missing APIServices of `wanted` (group, version, priorities, automanaged label).
async fn ensure(
    state: &State,
    wanted: Vec<(String, String, (i64, i64), &str)>,
) -> Result<(), crate::store::Error> {
    let Some(ri) = state
        .registry
        .lookup("apiregistration.k8s.io", "v1", "apiservices")
    else {
        return Ok(());
    };
    for (group, version, (g, v), managed) in wanted {
        let name = name_for(&group, &version);
        let key = storage::key(&ri, "", &name);
        if state.store.get(&key, None).await?.is_some() {
            continue;
        }
        let mut spec = json!({"version": version, "groupPriorityMinimum": g, "versionPriority": v});
        if !group.is_empty() {
            spec["group"] = json!(group);
        }
        let obj = json!({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": name, "uid": uuid::Uuid::new_v4().to_string(),
                         "creationTimestamp": crate::apiserver::now_rfc3339(),
                         "labels": {AUTOMANAGED: managed}},
            "spec": spec,
            "status": {"conditions": [condition("True", "Local", "Local APIServices are always available")]},
        });
        let bytes = serde_json::to_vec(&obj).unwrap_or_default();
        match state.store.create(&key, bytes.into()).await {
            Ok(_) | Err(crate::store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_priorities() {
        assert_eq!(name_for("", "v1"), "v1.");
        assert_eq!(name_for("apps", "v1"), "v1.apps");
        assert_eq!(priority("", "v1"), (18000, 1));
        assert_eq!(priority("apps", "v1"), (17800, 15));
        let ok = json!({"metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 100}});
        assert!(validate(&ok).is_empty());
        let mut bad = ok.clone();
        bad["metadata"]["name"] = json!("metrics");
        bad["spec"]["versionPriority"] = json!(0);
        assert_eq!(validate(&bad).len(), 2);
    }
}
