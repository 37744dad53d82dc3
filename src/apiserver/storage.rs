//! Objects in the store: key layout and encoding.
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

use bytes::Bytes;
use serde_json::Value;

use super::status::{ApiError, ApiResult};
use crate::api::ResourceInfo;
use crate::store::KeyValue;

fn group_segment(ri: &ResourceInfo) -> &str {
    if ri.group.is_empty() {
        "core"
    } else {
        &ri.group
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

/// Node-port claims (`apiserver::services`): one key per claimed port, under the key upstream
/// keeps its node-port bitmap at. No resource lives under `/registry/ranges/`.
pub const NODE_PORT_CLAIMS: &str = "/registry/ranges/servicenodeports/";

pub fn node_port_claim_key(port: i64) -> String {
    format!("{NODE_PORT_CLAIMS}{port}")
}

/// Largest encoded object stored: etcd's default `--max-request-bytes` (1.5 MiB), the limit
/// every upstream object is held to.
pub const MAX_OBJECT_BYTES: usize = 1024 * 1024 * 3 / 2;

/// Deepest stored object. Requests are held to 100 levels; managedFields can add a few more
/// (a field set is as deep as the fields it names, four levels down). serde_json refuses to
/// parse past 128, so anything stored beyond that could never be read again.
pub const MAX_OBJECT_DEPTH: usize = 120;

/// Serialise for storage (without `resourceVersion`), refusing objects over the limits.
pub fn encode(obj: &Value) -> ApiResult<Bytes> {
    use crate::apiserver::merge::{measure, Limits, Measure};
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

pub fn decode_bytes(bytes: &[u8], revision: u64, ri: &ResourceInfo) -> ApiResult<Value> {
    let mut obj: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::internal(format!("stored object is not valid JSON: {e}")))?;
    set_resource_version(&mut obj, revision);
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
}
