//! The API server's side of service-account tokens: the TokenRequest subresource
//! (`POST .../serviceaccounts/<name>/token`, as upstream's `serviceaccount/storage/token.go`),
//! the OIDC discovery endpoints (`/.well-known/openid-configuration`, `/openid/v1/jwks`), and
//! the store-backed existence check that revokes a token once its service account or bound
//! object is gone or replaced.
//!
//! Invariant: a token is only issued for objects that exist right now, with their current uid
//! in the claims, so recreating an object under the same name never revives an old token.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::api::ResourceInfo;
use crate::apiserver::context::Ctx;
use crate::apiserver::edge::body::{self, full, json_response, Body};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::storage::{self, Builtin};
use crate::auth::service_account::{self, token, Issuer, Private, Ref, Rejected};
use crate::store::Backend;

/// Upstream's lower bound on `spec.expirationSeconds` (10 minutes).
const MIN_EXPIRATION: i64 = 600;
/// Upstream's upper bound: 2^32 seconds.
const MAX_EXPIRATION: i64 = 1 << 32;
/// Upstream's default when the request leaves it out.
const DEFAULT_EXPIRATION: i64 = 3600;
/// A pod-bound token stays valid this long past the pod's deletion time (upstream's leeway).
const DELETION_LEEWAY: i64 = 60;

/// Reads an object from the store; one that cannot be decoded counts as absent.
async fn get(store: &dyn Backend, key: &str) -> Result<Option<Value>, crate::store::Error> {
    let kv = store.get(key, None).await?;
    Ok(kv.and_then(|kv| storage::decode_object(&kv).ok()))
}

/// [`get`] for the authenticator: a store failure refuses the token (fail closed) with a
/// message that says nothing about the store.
async fn get_for_authn(store: &dyn Backend, key: &str) -> Result<Option<Value>, Rejected> {
    get(store, key).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot check a service account token against the store");
        Rejected::Unverifiable
    })
}

fn uid_of(obj: &Value) -> &str {
    obj["metadata"]["uid"].as_str().unwrap_or_default()
}

/// The store-backed [`service_account::Lookup`].
pub struct StoreLookup {
    store: Arc<dyn Backend>,
}

impl StoreLookup {
    pub fn new(store: Arc<dyn Backend>) -> Self {
        StoreLookup { store }
    }
}

#[async_trait]
impl service_account::Lookup for StoreLookup {
    async fn check(&self, c: &Private) -> Result<(), Rejected> {
        let ns = &c.namespace;
        let store = self.store.as_ref();
        let same = |obj: Option<Value>, r: &Ref| obj.filter(|o| uid_of(o) == r.uid);
        let sa = &c.serviceaccount;
        let key = Builtin::ServiceAccounts.key(ns, &sa.name);
        if same(get_for_authn(store, &key).await?, sa).is_none() {
            return Err(Rejected::Invalidated);
        }
        if let Some(secret) = &c.secret {
            let key = Builtin::Secrets.key(ns, &secret.name);
            if same(get_for_authn(store, &key).await?, secret).is_none() {
                return Err(Rejected::Invalidated);
            }
        }
        if let Some(pod) = &c.pod {
            let key = Builtin::Pods.key(ns, &pod.name);
            let Some(obj) = same(get_for_authn(store, &key).await?, pod) else {
                return Err(Rejected::Invalidated);
            };
            if let Some(when) = obj["metadata"]["deletionTimestamp"]
                .as_str()
                .and_then(|s| s.parse::<jiff::Timestamp>().ok())
            {
                if when.as_second() + DELETION_LEEWAY < jiff::Timestamp::now().as_second() {
                    return Err(Rejected::Invalidated);
                }
            }
        }
        // A pod-bound token names the pod's node for information only (upstream checks the
        // node only for tokens bound to the node itself).
        if let (Some(node), None) = (&c.node, &c.pod) {
            let key = Builtin::Nodes.key("", &node.name);
            if same(get_for_authn(store, &key).await?, node).is_none() {
                return Err(Rejected::Invalidated);
            }
        }
        Ok(())
    }
}

fn token_request_ri() -> ResourceInfo {
    ResourceInfo::owned(
        "authentication.k8s.io",
        "v1",
        "TokenRequest",
        "tokenrequests",
        "tokenrequest",
        true,
        &["create"],
        &[],
        &[],
        &[],
    )
}

/// `POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token`.
pub(in crate::apiserver) async fn token_request(
    ctx: &Ctx,
    issuer: &Issuer,
    body_in: Incoming,
) -> ApiResult<Response<Body>> {
    let name = ctx.info.name.clone();
    let ns = ctx.info.namespace.clone();
    let length = ctx
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok());
    let raw = body::read(body_in, length).await?;
    let media = body::media_type(ctx.header("content-type"));
    let req = if media == crate::apiserver::protobuf::MEDIA_TYPE {
        crate::apiserver::protobuf::decode_with_defaults(
            &raw,
            "authentication.k8s.io/v1",
            "TokenRequest",
        )
        .map_err(|e| {
            ApiError::bad_request(format!("cannot decode the protobuf request body: {e}"))
        })?
    } else {
        body::decode(&media, &raw)?
    };
    if !req.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a TokenRequest",
        ));
    }
    let tri = token_request_ri();
    let mut causes = Vec::new();
    if let Some(n) = req["metadata"]["name"].as_str().filter(|n| !n.is_empty()) {
        if n != name {
            causes.push((
                "metadata.name".into(),
                format!("Invalid value: {n:?}: must match the service account name if specified"),
            ));
        }
    }
    if let Some(n) = req["metadata"]["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
    {
        if n != ns {
            causes.push((
                "metadata.namespace".into(),
                format!(
                    "Invalid value: {n:?}: must match the service account namespace if specified"
                ),
            ));
        }
    }
    let spec = &req["spec"];
    let expiration = match &spec["expirationSeconds"] {
        Value::Null => DEFAULT_EXPIRATION,
        v => v
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("spec.expirationSeconds must be an integer"))?,
    };
    if expiration < MIN_EXPIRATION {
        causes.push((
            "spec.expirationSeconds".into(),
            format!("Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
        ));
    }
    if expiration > MAX_EXPIRATION {
        causes.push((
            "spec.expirationSeconds".into(),
            format!(
                "Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"
            ),
        ));
    }
    let audiences: Vec<String> = match &spec["audiences"] {
        Value::Null => Vec::new(),
        Value::Array(a) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_request("spec.audiences must be strings"))
            })
            .collect::<ApiResult<_>>()?,
        _ => return Err(ApiError::bad_request("spec.audiences must be a list")),
    };
    if !causes.is_empty() {
        return Err(ApiError::invalid(&tri, "", causes));
    }

    let (sa, _) = ctx.load(&name).await?;
    let mut request = token::Request {
        namespace: ns.clone(),
        service_account: Ref {
            name: name.clone(),
            uid: uid_of(&sa).to_string(),
        },
        audiences: if audiences.is_empty() {
            issuer.api_audiences().to_vec()
        } else {
            audiences
        },
        expiration_seconds: expiration,
        pod: None,
        secret: None,
        node: None,
    };
    let mut bound = spec["boundObjectRef"].clone();
    if bound.is_object() {
        bind(ctx, &mut request, &mut bound).await?;
    }
    let (token, exp) = issuer
        .issue(&request)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let expires = jiff::Timestamp::from_second(exp)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let mut out_spec = json!({
        "audiences": request.audiences,
        "expirationSeconds": expiration,
    });
    if bound.is_object() {
        out_spec["boundObjectRef"] = bound;
    }
    let mut metadata = req["metadata"].clone();
    if !metadata.is_object() {
        metadata = json!({});
    }
    metadata["name"] = json!(name);
    metadata["namespace"] = json!(ns);
    metadata["creationTimestamp"] = Value::Null;
    Ok(json_response(
        201,
        &json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": metadata,
            "spec": out_spec,
            "status": {"token": token, "expirationTimestamp": expires},
        }),
    ))
}

/// Resolve `spec.boundObjectRef` to a live object and record it in the claims (and its uid in
/// the echoed reference), as upstream.
async fn bind(ctx: &Ctx, request: &mut token::Request, bound: &mut Value) -> ApiResult<()> {
    let kind = bound["kind"].as_str().unwrap_or_default().to_string();
    let api_version = bound["apiVersion"].as_str().unwrap_or("v1").to_string();
    let obj_name = bound["name"].as_str().unwrap_or_default().to_string();
    let want_uid = bound["uid"].as_str().unwrap_or_default().to_string();
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let plural = match (group, kind.as_str()) {
        ("", "Pod") => "pods",
        ("", "Secret") => "secrets",
        ("", "Node") => "nodes",
        _ => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token for object of type {api_version}, Kind={kind}"
            )))
        }
    };
    let ri = crate::api::resources::builtin()
        .iter()
        .find(|r| r.group.is_empty() && r.plural == plural)
        .cloned()
        .ok_or_else(|| ApiError::internal("built-in resource table is incomplete"))?;
    if obj_name.is_empty() {
        return Err(ApiError::invalid(
            &token_request_ri(),
            "",
            vec![("spec.boundObjectRef.name".into(), "Required value".into())],
        ));
    }
    let ns = if ri.namespaced {
        request.namespace.as_str()
    } else {
        ""
    };
    let store = ctx.state.store.as_ref();
    let key = crate::apiserver::storage::key(&ri, ns, &obj_name);
    let obj = get(store, &key)
        .await
        .map_err(|e| ApiError::from_store(e, &ri, &obj_name))?
        .ok_or_else(|| ApiError::not_found(&ri, &obj_name))?;
    let uid = uid_of(&obj).to_string();
    if !want_uid.is_empty() && want_uid != uid {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {kind} \"{obj_name}\": the UID in the bound object reference ({want_uid}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
        ));
    }
    bound["uid"] = json!(uid);
    let r = Ref {
        name: obj_name,
        uid,
    };
    match plural {
        "pods" => {
            // Upstream records the pod's node too (ServiceAccountTokenPodNodeInfo).
            if let Some(node) = obj["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                if let Ok(Some(n)) = get(store, &Builtin::Nodes.key("", node)).await {
                    request.node = Some(Ref {
                        name: node.to_string(),
                        uid: uid_of(&n).to_string(),
                    });
                }
            }
            request.pod = Some(r);
        }
        "secrets" => request.secret = Some(r),
        _ => request.node = Some(r),
    }
    Ok(())
}

/// `GET /.well-known/openid-configuration` and `GET /openid/v1/jwks`; `None` for other paths.
pub(in crate::apiserver) fn discovery(
    issuer: Option<&Issuer>,
    path: &str,
) -> Option<Response<Body>> {
    let (doc, content_type) = match path {
        "/.well-known/openid-configuration" => (issuer?.discovery(), "application/json"),
        "/openid/v1/jwks" => (issuer?.keys().jwks(), "application/jwk-set+json"),
        _ => return None,
    };
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    let mut resp = Response::new(full(bytes));
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=3600"),
    );
    Some(resp)
}
