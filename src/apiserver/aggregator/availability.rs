//! Upstream's APIService availability controller and its cluster-authentication trust
//! controller, for remote APIServices.
//!
//! Each remote APIService is checked when it appears or changes and every [`RESYNC`]: its
//! endpoint must answer `GET /apis/<group>/<version>` with a 2xx (upstream's discovery
//! check; the answer is kept as the group/version's discovery document). The outcome goes
//! into the `Available` condition through the APIService strategy
//! (`strategy::apiservice::set_availability`), written with the store's guarded update when
//! it changed. The check identifies itself as upstream's aggregator does:
//! `system:kube-aggregator` in `system:masters`, over the front-proxy certificate.
//!
//! `kube-system/extension-apiserver-authentication` is kept current on the same beat (CA
//! rotations change it): the client CA and the front-proxy CA with upstream's header names.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::proxy::{self, identity_headers, FRONT_PROXY_CA, FRONT_PROXY_CLIENT};
use super::{Checked, Target};
use crate::apiserver::storage::{self, Builtin, Mutation};
use crate::apiserver::strategy::apiservice;
use crate::apiserver::State;
use crate::auth::UserInfo;

/// How often every remote APIService is checked again (Service and Endpoints changes show
/// up by then).
pub const RESYNC: Duration = Duration::from_secs(10);
/// Largest discovery document read from an extension server.
const MAX_DISCOVERY_BYTES: usize = 4 * 1024 * 1024;

/// Check and publish forever (a background task of the API server).
pub async fn run(state: Arc<State>) {
    loop {
        if let Err(e) = publish_authentication(&state).await {
            tracing::debug!(error = %e.message, "cannot publish extension-apiserver-authentication");
        }
        for t in state.aggregator.targets() {
            let c = check(&state, &t).await;
            state.aggregator.record(&t.name, c);
            if let Err(e) = write_status(&state, &t.name).await {
                tracing::debug!(apiservice = %t.name, error = %e.message, "cannot update APIService status");
            }
        }
        tokio::select! {
            _ = state.aggregator.changed.notified() => {}
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

/// The aggregator's own identity in checks (upstream's discovery and availability clients).
fn aggregator_user() -> UserInfo {
    UserInfo {
        name: "system:kube-aggregator".into(),
        uid: String::new(),
        groups: vec!["system:masters".into()],
        extra: Default::default(),
    }
}

async fn check(state: &State, t: &Target) -> Checked {
    let path = format!("/apis/{}/{}", t.group, t.version);
    let failed = |m: String| Checked::Failed("FailedDiscoveryCheck", m);
    let resp = match proxy::get(state, t, &path, identity_headers(&aggregator_user())).await {
        Ok(r) => r,
        Err(e) if e.message.starts_with("no endpoints") => {
            return Checked::Failed("MissingEndpoints", e.message)
        }
        Err(e) if e.message.starts_with("service \"") => {
            return Checked::Failed("ServiceNotFound", e.message)
        }
        Err(e) => {
            return failed(format!(
                "failing or missing response from {path}: {}",
                e.message
            ))
        }
    };
    let code = resp.status();
    let limited = http_body_util::Limited::new(resp.into_body(), MAX_DISCOVERY_BYTES);
    let bytes = match tokio::time::timeout(Duration::from_secs(10), limited.collect()).await {
        Ok(Ok(c)) => c.to_bytes(),
        _ => {
            return failed(format!(
                "failing or missing response from {path}: body not read"
            ))
        }
    };
    if !code.is_success() {
        return failed(format!(
            "failing or missing response from {path}: bad status from {path}: {}",
            code.as_u16()
        ));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v["resources"].is_array() => Checked::Passed(v),
        _ => failed(format!("{path} did not answer an APIResourceList")),
    }
}

/// Recompute the stored APIService's `Available` condition; write it if it changed.
async fn write_status(state: &State, name: &str) -> crate::apiserver::status::ApiResult<()> {
    let key = Builtin::ApiServices.key("", name);
    storage::guaranteed_update(state.store.as_ref(), &key, |current| async move {
        let Some(mut obj) = current else {
            return Ok(Mutation::Keep(()));
        };
        let old = obj.clone();
        apiservice::set_availability(state, &mut obj, Some(&old)).await;
        if conditions_equal(&obj, &old) {
            Ok(Mutation::Keep(()))
        } else {
            Ok(Mutation::Write(obj, ()))
        }
    })
    .await
}

fn conditions_equal(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut c = v["status"]["conditions"].clone();
        for cond in c.as_array_mut().into_iter().flatten() {
            if let Some(m) = cond.as_object_mut() {
                m.remove("lastTransitionTime");
            }
        }
        c
    };
    strip(a) == strip(b)
}

/// Upstream's `extension-apiserver-authentication` ConfigMap.
async fn publish_authentication(state: &State) -> crate::apiserver::status::ApiResult<()> {
    let m = state.tls.authority().current();
    let Some(front_proxy_ca) = m.authority_cert_pem(FRONT_PROXY_CA) else {
        return Ok(());
    };
    let data = json!({
        "client-ca-file": m.client_issuers_pem,
        "requestheader-client-ca-file": front_proxy_ca,
        "requestheader-allowed-names": json!([FRONT_PROXY_CLIENT]).to_string(),
        "requestheader-extra-headers-prefix": json!(["X-Remote-Extra-"]).to_string(),
        "requestheader-group-headers": json!(["X-Remote-Group"]).to_string(),
        "requestheader-username-headers": json!(["X-Remote-User"]).to_string(),
    });
    let key = Builtin::ConfigMaps.key("kube-system", "extension-apiserver-authentication");
    let data = &data;
    storage::guaranteed_update(state.store.as_ref(), &key, |current| async move {
        match current {
            Some(obj) if obj["data"] == *data => Ok(Mutation::Keep(())),
            Some(mut obj) => {
                obj["data"] = data.clone();
                Ok(Mutation::Write(obj, ()))
            }
            None => Ok(Mutation::Write(
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system",
                                    "uid": uuid::Uuid::new_v4().to_string(),
                                    "creationTimestamp": crate::apiserver::now_rfc3339()},
                       "data": data}),
                (),
            )),
        }
    })
    .await
}
