//! Objects in the store: key layout, encoding, decoding and the guarded update — the API
//! server's one storage-access layer (upstream's `registry/generic/registry.Store` and
//! `storage/etcd3` in miniature).
//!
//! Invariants, enforced by `tests/layering.rs`: no `"/registry/..."` key is spelled outside
//! this file (and the store itself) — keys come from [`key`]/[`prefix`] for a
//! [`ResourceInfo`] or from the typed [`Builtin`] constructors the server's own readers use;
//! every read of a stored object decodes through [`decode_stored`] (which stamps
//! `metadata.resourceVersion`), and every read-modify-write retries a lost race through
//! [`Retry`] — directly in the handler paths, or inside [`guaranteed_update`] (upstream's
//! `GuaranteedUpdate`, bounded).
//!
//! Keys are `/registry/<group or "core">/<plural>/<namespace>/<name>` (cluster-scoped objects
//! have no namespace segment). Values are the object's JSON without `resourceVersion`, which is
//! always the store's `mod_revision` and is filled in on read — so it can never disagree with
//! the revision that actually wrote the object.
//!
//! Every object write goes through [`encode`], which is where the object limits live, so no
//! write path (create, update, any patch, apply, subresources, custom resources, hooks) can
//! skip them: at most [`MAX_OBJECT_BYTES`] encoded (upstream is bounded by etcd's 1.5 MiB
//! request limit; 413 RequestEntityTooLarge) and at most [`MAX_OBJECT_DEPTH`] levels deep
//! (below serde_json's parse limit of 128, so every stored object can be read back; 422).

use std::future::Future;

use bytes::Bytes;
use serde_json::Value;

use super::status::{ApiError, ApiResult};
use crate::api::ResourceInfo;
use crate::store::{Backend, Error as StoreError, KeyValue, RangeRequest};

fn group_segment(ri: &ResourceInfo) -> &str {
    // A resource stored in another group's key space (events.k8s.io Events are core Events).
    let group = super::conversion::storage_group(&ri.group, &ri.plural).unwrap_or(&ri.group);
    if group.is_empty() {
        "core"
    } else {
        group
    }
}

pub fn key(ri: &ResourceInfo, namespace: &str, name: &str) -> String {
    if ri.namespaced {
        format!(
            "/registry/{}/{}/{namespace}/{name}",
            group_segment(ri),
            ri.plural
        )
    } else {
        format!("/registry/{}/{}/{name}", group_segment(ri), ri.plural)
    }
}

/// The prefix of every object of `ri`, or of those in one namespace.
pub fn prefix(ri: &ResourceInfo, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if ri.namespaced => {
            format!("/registry/{}/{}/{ns}/", group_segment(ri), ri.plural)
        }
        _ => format!("/registry/{}/{}/", group_segment(ri), ri.plural),
    }
}

/// The built-in resources the server reads by key for itself (authentication, admission,
/// followers, health): typed so no caller spells a storage key. Their layout is the one
/// [`key`]/[`prefix`] give for the same resource (checked by a test below).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    Namespaces,
    Nodes,
    Pods,
    Secrets,
    ServiceAccounts,
    ResourceQuotas,
    LimitRanges,
    PriorityClasses,
    CedarPolicies,
    Services,
    Endpoints,
    ConfigMaps,
    ApiServices,
    PodDisruptionBudgets,
    PersistentVolumeClaims,
}

impl Builtin {
    /// The prefix of every object of the resource (`/registry/core/pods/`).
    pub const fn prefix(self) -> &'static str {
        match self {
            Builtin::Namespaces => "/registry/core/namespaces/",
            Builtin::Nodes => "/registry/core/nodes/",
            Builtin::Pods => "/registry/core/pods/",
            Builtin::Secrets => "/registry/core/secrets/",
            Builtin::ServiceAccounts => "/registry/core/serviceaccounts/",
            Builtin::ResourceQuotas => "/registry/core/resourcequotas/",
            Builtin::LimitRanges => "/registry/core/limitranges/",
            Builtin::PriorityClasses => "/registry/scheduling.k8s.io/priorityclasses/",
            Builtin::CedarPolicies => "/registry/policy.rampart.io/cedarpolicies/",
            Builtin::Services => "/registry/core/services/",
            Builtin::Endpoints => "/registry/core/endpoints/",
            Builtin::ConfigMaps => "/registry/core/configmaps/",
            Builtin::ApiServices => "/registry/apiregistration.k8s.io/apiservices/",
            Builtin::PodDisruptionBudgets => "/registry/policy/poddisruptionbudgets/",
            Builtin::PersistentVolumeClaims => "/registry/core/persistentvolumeclaims/",
        }
    }

    pub const fn namespaced(self) -> bool {
        !matches!(
            self,
            Builtin::Namespaces
                | Builtin::Nodes
                | Builtin::PriorityClasses
                | Builtin::CedarPolicies
                | Builtin::ApiServices
        )
    }

    /// The key of one object; `namespace` is ignored for cluster-scoped resources.
    pub fn key(self, namespace: &str, name: &str) -> String {
        if self.namespaced() {
            format!("{}{namespace}/{name}", self.prefix())
        } else {
            format!("{}{name}", self.prefix())
        }
    }

    /// The prefix of the objects in one namespace (namespaced resources only).
    pub fn in_namespace(self, namespace: &str) -> String {
        format!("{}{namespace}/", self.prefix())
    }
}

/// The prefix of every object of a resource named by its group (`core` for the core group,
/// as in keys) and plural, for flags that name resources (`--encrypt-resource`).
pub fn resource_prefix(group: &str, plural: &str) -> String {
    format!("/registry/{group}/{plural}/")
}

/// Every RBAC object (roles, cluster roles and their bindings), which one follower keeps.
pub const RBAC_GROUP: &str = "/registry/rbac.authorization.k8s.io/";

/// The persisted certificate revocation list (a JSON array, not a Kubernetes object).
pub const REVOCATIONS: &str = "/rampart/pki/revocations";

/// Node-port claims (`apiserver::strategy::service_claims`): one key per claimed port, under the key upstream
/// keeps its node-port bitmap at. No resource lives under `/registry/ranges/`.
pub const NODE_PORT_CLAIMS: &str = "/registry/ranges/servicenodeports/";

pub fn node_port_claim_key(port: i64) -> String {
    format!("{NODE_PORT_CLAIMS}{port}")
}

/// Largest encoded object stored: etcd's default `--max-request-bytes` (1.5 MiB), the limit
/// every upstream object is held to.
pub const MAX_OBJECT_BYTES: usize = 1024 * 1024 * 3 / 2;

/// Deepest stored object (defined beside the patch limits, which must not produce deeper).
pub use super::merge::MAX_OBJECT_DEPTH;

/// Serialise for storage (without `resourceVersion`), refusing objects over the limits.
pub fn encode(obj: &Value) -> ApiResult<Bytes> {
    use crate::apiserver::merge::{measure, Limits, Measure};
    // A version served as a view of another is stored in its storage version.
    let converted = super::conversion::to_storage(obj);
    let obj = converted.as_ref().unwrap_or(obj);
    // Checked before serializing: serialization recurses, so depth must be known first.
    if measure(obj, Limits::depth(MAX_OBJECT_DEPTH)) == Measure::TooDeep {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!("the object is nested more than {MAX_OBJECT_DEPTH} levels deep"),
        ));
    }
    // Serialized without `resourceVersion` through a view, not a copy of the object.
    let bytes = serde_json::to_vec(&WithoutResourceVersion(obj))
        .map_err(|e| ApiError::internal(format!("cannot encode object: {e}")))?;
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(ApiError::too_large(format!(
            "Request entity too large: the object would be {} bytes, more than the limit of {MAX_OBJECT_BYTES} bytes",
            bytes.len()
        )));
    }
    Ok(Bytes::from(bytes))
}

/// Serializes an object as it is, except for `metadata.resourceVersion`.
struct WithoutResourceVersion<'a>(&'a Value);

impl serde::Serialize for WithoutResourceVersion<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Some(obj) = self.0.as_object() else {
            return self.0.serialize(s);
        };
        let mut map = s.serialize_map(Some(obj.len()))?;
        for (k, v) in obj {
            match v.as_object() {
                Some(meta) if k == "metadata" => {
                    map.serialize_entry(k, &MetadataWithoutResourceVersion(meta))?
                }
                _ => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

struct MetadataWithoutResourceVersion<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for MetadataWithoutResourceVersion<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let fields = self.0.iter().filter(|(k, _)| *k != "resourceVersion");
        let mut map = s.serialize_map(None)?;
        for (k, v) in fields {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Decode a stored object and stamp its `resourceVersion`; `api_version` is what the
/// client asked through (custom resources are stored once for every served version).
pub fn decode(kv: &KeyValue, ri: &ResourceInfo) -> ApiResult<Value> {
    decode_bytes(&kv.value, kv.mod_revision, ri)
}

/// The one decode of stored bytes: parse and stamp `metadata.resourceVersion` with the
/// revision that wrote them. Every other read path ([`decode`], [`decode_object`],
/// [`decode_as`], the followers) goes through here.
pub fn decode_stored(bytes: &[u8], revision: u64) -> ApiResult<Value> {
    let mut obj: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::internal(format!("stored object is not valid JSON: {e}")))?;
    set_resource_version(&mut obj, revision);
    Ok(obj)
}

/// A stored object as stored (its `apiVersion`/`kind` untouched), `resourceVersion` stamped.
pub fn decode_object(kv: &KeyValue) -> ApiResult<Value> {
    decode_stored(&kv.value, kv.mod_revision)
}

/// A stored object read into a typed struct (through [`decode_object`]).
pub fn decode_as<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> ApiResult<T> {
    serde_json::from_value(decode_object(kv)?)
        .map_err(|e| ApiError::internal(format!("stored object has an unexpected shape: {e}")))
}

pub fn decode_bytes(bytes: &[u8], revision: u64, ri: &ResourceInfo) -> ApiResult<Value> {
    let mut obj = decode_stored(bytes, revision)?;
    if super::conversion::converted(&ri.group, &ri.version, &ri.kind) {
        obj = super::conversion::to_served(obj, &ri.group, &ri.version, &ri.kind);
    }
    obj["apiVersion"] = Value::String(ri.api_version());
    obj["kind"] = Value::String(ri.kind.clone());
    Ok(obj)
}

pub fn set_resource_version(obj: &mut Value, revision: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
}

/// Every object under `prefix`, decoded; objects that cannot be decoded are left out (and
/// logged) so one bad object does not hide the rest from the server's own readers.
pub async fn list(store: &dyn Backend, prefix: String) -> ApiResult<Vec<Value>> {
    let listed = store
        .range(RangeRequest {
            prefix,
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(listed
        .items
        .iter()
        .filter_map(|kv| match decode_object(kv) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(key = %kv.key, error = %e.message, "skipping an undecodable object");
                None
            }
        })
        .collect())
}

/// The bounded retry of a read-modify-write that lost a compare-and-swap to a concurrent
/// write: the one retry policy of the API server. Upstream's `GuaranteedUpdate` retries
/// without bound; a bound turns a livelock into a 409. A loop that reads, mutates and
/// writes answers every lost race with `retry.conflict(err)?`, which lets it go round
/// again until the attempts are spent and then answers that last conflict:
///
/// ```ignore
/// let mut retry = Retry::new(5);
/// loop {
///     let (current, rev) = ctx.load(&name).await?;
///     match write(current, rev).await {
///         Err(e) if e.code == 409 => retry.conflict(e)?,
///         other => return other,
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Retry {
    left: usize,
}

impl Retry {
    pub fn new(attempts: usize) -> Self {
        Retry {
            left: attempts.max(1),
        }
    }

    /// One attempt lost the race with `e`: `Ok` to read again and retry, or `Err(e)` when
    /// that was the last attempt.
    pub fn conflict(&mut self, e: ApiError) -> ApiResult<()> {
        self.left = self.left.saturating_sub(1);
        if self.left == 0 {
            Err(e)
        } else {
            Ok(())
        }
    }
}

/// How often [`guaranteed_update`] tries before it answers 409.
pub const CAS_ATTEMPTS: usize = 10;

/// What a [`guaranteed_update`] mutation decided about the object it was shown.
pub enum Mutation<T> {
    /// Store this object (created when the key was absent) and return `T`.
    Write(Value, T),
    /// Leave the store as it is and return `T`.
    Keep(T),
}

/// Upstream's `GuaranteedUpdate`: read `key` (decoded, `None` when absent), let `mutate`
/// decide, and write the result with a compare-and-swap on the revision read (a
/// create-if-absent when there was nothing); on a lost race read again and retry
/// ([`Retry`], [`CAS_ATTEMPTS`] times), then 409 Conflict. The value is encoded through
/// [`encode`], so the object limits hold here too.
pub async fn guaranteed_update<T, F, Fut>(
    store: &dyn Backend,
    key: &str,
    mut mutate: F,
) -> ApiResult<T>
where
    F: FnMut(Option<Value>) -> Fut,
    Fut: Future<Output = ApiResult<Mutation<T>>>,
{
    let mut retry = Retry::new(CAS_ATTEMPTS);
    loop {
        let current = store
            .get(key, None)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let revision = current.as_ref().map(|kv| kv.mod_revision);
        let decoded = current.as_ref().map(decode_object).transpose()?;
        let (obj, out) = match mutate(decoded).await? {
            Mutation::Keep(out) => return Ok(out),
            Mutation::Write(obj, out) => (obj, out),
        };
        let bytes = encode(&obj)?;
        let written = match revision {
            Some(rev) => store.update(key, bytes, rev).await,
            None => store.create(key, bytes).await,
        };
        match written {
            Ok(_) => return Ok(out),
            Err(StoreError::Conflict { .. })
            | Err(StoreError::AlreadyExists { .. })
            | Err(StoreError::NotFound { .. }) => retry.conflict(ApiError::new(
                409,
                "Conflict",
                "the object is being changed concurrently; please try again",
            ))?,
            Err(e) => return Err(ApiError::internal(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::builtin;

    #[test]
    fn encode_enforces_the_object_limits() {
        let ok = serde_json::json!({"metadata": {"name": "a", "resourceVersion": "7"},
            "data": {"k": "x".repeat(MAX_OBJECT_BYTES - 100)}});
        let bytes = encode(&ok).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("resourceVersion"));
        let big = serde_json::json!({"metadata": {"name": "a"}, "data": {"k": "x".repeat(MAX_OBJECT_BYTES)}});
        let err = encode(&big).unwrap_err();
        assert_eq!((err.code, err.reason), (413, "RequestEntityTooLarge"));
        let mut deep = serde_json::json!(1);
        for _ in 0..MAX_OBJECT_DEPTH {
            deep = serde_json::json!([deep]);
        }
        let err = encode(&serde_json::json!({ "spec": deep })).unwrap_err();
        assert_eq!(err.code, 422);
    }

    #[test]
    fn keys() {
        let pods = builtin().iter().find(|r| r.plural == "pods").unwrap();
        let nodes = builtin().iter().find(|r| r.plural == "nodes").unwrap();
        assert_eq!(
            key(pods, "default", "web"),
            "/registry/core/pods/default/web"
        );
        assert_eq!(key(nodes, "", "n1"), "/registry/core/nodes/n1");
        assert_eq!(prefix(pods, Some("a")), "/registry/core/pods/a/");
        assert_eq!(prefix(pods, None), "/registry/core/pods/");
    }

    /// The typed keys lay objects out exactly as the generic ones do.
    #[test]
    fn builtin_keys_match_the_resource_table() {
        use Builtin::*;
        for b in [
            Namespaces,
            Nodes,
            Pods,
            Secrets,
            ServiceAccounts,
            ResourceQuotas,
            LimitRanges,
            PriorityClasses,
            CedarPolicies,
            Services,
            Endpoints,
            ConfigMaps,
            ApiServices,
            PodDisruptionBudgets,
            PersistentVolumeClaims,
        ] {
            let ri = builtin()
                .iter()
                .find(|r| prefix(r, None) == b.prefix())
                .unwrap_or_else(|| panic!("{b:?} names no built-in resource"));
            assert_eq!(ri.namespaced, b.namespaced(), "{b:?}");
            assert_eq!(b.key("ns", "x"), key(ri, "ns", "x"), "{b:?}");
            if b.namespaced() {
                assert_eq!(b.in_namespace("ns"), prefix(ri, Some("ns")), "{b:?}");
            }
        }
        let roles = builtin()
            .iter()
            .find(|r| r.plural == "clusterroles")
            .unwrap();
        assert!(prefix(roles, None).starts_with(RBAC_GROUP));
    }
}
