//! `/rampart/v1/certificates/...`: the server side of `rampart cert rotate|rotate-ca|revoke`
//! and the revocation list, kept in the store under [`REVOCATIONS_KEY`] so it survives
//! restarts and is loaded before the first request is served.
//!
//! CA rotation progress: the server remembers, per node, which signing CA issued the client
//! certificate the node last authenticated with; a rotation can finish once every registered
//! node has shown a certificate from the new CA.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{json, Value};

use crate::apiserver::status::ApiError;
use crate::apiserver::{storage, State};
use crate::auth::authn::CertIdentity;
use crate::auth::revocation::{normalise_serial, valid_serial, Revocation};

pub const REVOCATIONS_KEY: &str = storage::REVOCATIONS;
const NODES_PREFIX: &str = storage::Builtin::Nodes.prefix();

/// Which client CA (raw subject) each node's certificate came from, last time it was seen.
#[derive(Default)]
pub struct NodeIssuers(Mutex<HashMap<String, Vec<u8>>>);

impl NodeIssuers {
    pub fn observe(&self, id: &CertIdentity) {
        if let Some(node) = id.user.name.strip_prefix("system:node:") {
            let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if m.get(node) != Some(&id.issuer) {
                m.insert(node.to_string(), id.issuer.clone());
            }
        }
    }

    fn get(&self, node: &str) -> Option<Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .cloned()
    }
}

/// Load the persisted revocation list into memory (at start-up).
pub async fn load_revocations(state: &State) -> Result<(), String> {
    if let Some(kv) = state
        .store
        .get(REVOCATIONS_KEY, None)
        .await
        .map_err(|e| e.to_string())?
    {
        let list: Vec<Revocation> = storage::decode_as(&kv)
            .map_err(|e| format!("the stored revocation list is unreadable: {}", e.message))?;
        state.revocations.replace(list);
    }
    Ok(())
}

fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn pki_error(e: crate::pki::Error) -> ApiError {
    match e {
        crate::pki::Error::UnknownService(_) => ApiError::bad_request(e.to_string()),
        crate::pki::Error::RotationInProgress | crate::pki::Error::NoRotation => {
            ApiError::new(409, "Conflict", e.to_string())
        }
        other => ApiError::internal(format!("certificate operation failed: {other}")),
    }
}

pub async fn inventory(state: &Arc<State>) -> Result<Value, ApiError> {
    let now = jiff::Timestamp::now().as_second();
    let items: Vec<Value> = state
        .tls
        .authority()
        .inventory()
        .into_iter()
        .map(|(name, i)| {
            json!({"name": name, "subject": i.subject, "issuer": i.issuer, "serial": i.serial,
                   "notBefore": i.not_before, "notAfter": i.not_after,
                   "secondsLeft": i.not_after - now})
        })
        .collect();
    Ok(json!({"certificates": items, "caRotation": rotation_status(state).await?}))
}

pub async fn rotate(state: &Arc<State>, body: &Bytes) -> Result<Value, ApiError> {
    let v = body_json(body)?;
    let services: Vec<String> = match v.get("services") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_request("services must be a list of names"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::bad_request("services must be a list of names")),
    };
    let authority = state.tls.authority().clone();
    let renewed = tokio::task::spawn_blocking(move || authority.rotate(&services))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(pki_error)?;
    Ok(json!({"renewed": renewed}))
}

async fn rotation_status(state: &Arc<State>) -> Result<Value, ApiError> {
    let m = state.tls.authority().current();
    let current = m.authority_subject("client-ca").unwrap_or_default();
    let nodes = state
        .store
        .range(crate::store::RangeRequest {
            prefix: NODES_PREFIX.to_string(),
            start_after: None,
            limit: 0,
            revision: None,
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut pending = Vec::new();
    for kv in nodes.items {
        let name = kv.key.trim_start_matches(NODES_PREFIX).to_string();
        if state.node_issuers.get(&name).as_deref() != Some(current.as_slice()) {
            pending.push(name);
        }
    }
    Ok(json!({"inProgress": m.rotating(), "nodesOnOldCertificates": pending}))
}

pub async fn rotate_ca(state: &Arc<State>, body: &Bytes) -> Result<Value, ApiError> {
    let v = body_json(body)?;
    let authority = state.tls.authority().clone();
    let phase = v
        .get("phase")
        .and_then(Value::as_str)
        .unwrap_or("begin")
        .to_string();
    let renewed = match phase.as_str() {
        "begin" => tokio::task::spawn_blocking(move || authority.begin_ca_rotation()).await,
        "finish" => tokio::task::spawn_blocking(move || authority.finish_ca_rotation()).await,
        "status" => return rotation_status(state).await,
        other => {
            return Err(ApiError::bad_request(format!(
                "phase must be begin, finish or status, not {other:?}"
            )))
        }
    }
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(pki_error)?;
    let mut status = rotation_status(state).await?;
    status["renewed"] = json!(renewed);
    Ok(status)
}

pub fn revocations(state: &Arc<State>) -> Value {
    json!({"revocations": state.revocations.list()})
}

pub async fn revoke(state: &Arc<State>, body: &Bytes) -> Result<Value, ApiError> {
    let v = body_json(body)?;
    let serial = v.get("serial").and_then(Value::as_str);
    let node = v.get("node").and_then(Value::as_str);
    let entry = match (serial, node) {
        (Some(s), None) if valid_serial(s) => Revocation {
            serial: Some(normalise_serial(s)),
            node: None,
            revoked_at: jiff::Timestamp::now().as_second(),
        },
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                "serial must be a certificate serial number in hex (e.g. 3f:a2:... or 3fa2...)",
            ))
        }
        (None, Some(n))
            if !n.is_empty() && crate::api::validation::dns1123_subdomain(n).is_ok() =>
        {
            Revocation {
                serial: None,
                node: Some(n.to_string()),
                revoked_at: jiff::Timestamp::now().as_second(),
            }
        }
        (None, Some(_)) => return Err(ApiError::bad_request("node must be a valid node name")),
        _ => return Err(ApiError::bad_request("give exactly one of serial or node")),
    };
    // Compare-and-swap on the stored list so concurrent revocations are never lost.
    let list = storage::guaranteed_update(state.store.as_ref(), REVOCATIONS_KEY, |current| {
        let entry = &entry;
        async move {
            let mut list: Vec<Revocation> = match current {
                Some(v) => serde_json::from_value(v)
                    .map_err(|e| ApiError::internal(format!("stored revocation list: {e}")))?,
                None => Vec::new(),
            };
            list.push(entry.clone());
            let value =
                serde_json::to_value(&list).map_err(|e| ApiError::internal(e.to_string()))?;
            Ok(storage::Mutation::Write(value, list))
        }
    })
    .await?;
    state.revocations.replace(list);
    tracing::warn!(serial = ?entry.serial, node = ?entry.node, "certificate revoked");
    Ok(json!({"revoked": entry}))
}
