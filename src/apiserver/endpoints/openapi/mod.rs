//! The OpenAPI documents the API server publishes: `/openapi/v2` (Swagger 2.0,
//! JSON or gnostic protobuf) and `/openapi/v3` (a root index plus one
//! OpenAPI 3.0 document per group version), with real schemas for built-in
//! kinds (from k8s-openapi's `schemars` impls) and for custom resources (from
//! their CRD's `openAPIV3Schema`).
//!
//! # What clients do with it (kubectl 1.37 / client-go)
//! * `GET /openapi/v3` is sent without an explicit `Accept` (client-go's
//!   discovery REST client default) and parsed as JSON. Each group version is
//!   then fetched from its `serverRelativeURL` with `Accept: application/json`
//!   and decoded by `encoding/json` into kube-openapi's `spec3` types or a
//!   plain map. `kubectl explain` walks that map; `kubectl apply` uses it for
//!   the field-validation probe and for strategic-merge patch metadata.
//! * `GET /openapi/v2` is sent with
//!   `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`
//!   only and the body is handed straight to `proto.Unmarshal`. A JSON answer
//!   is *not* understood: the unmarshal fails, and since `kubectl
//!   apply/create/replace/edit` build their client-side validator eagerly from
//!   v2, they fail unless run with `--validate=false`. Serve [`v2_protobuf`]
//!   for that media type and [`v2`] as JSON otherwise; [`negotiate_v2`] maps
//!   an `Accept` header to the answer (`None` means 406 Not Acceptable).
//!
//! # Invariants
//! * Documents are pure functions of the resource list: identical input gives
//!   byte-identical output, so v3 hashes are stable and cacheable.
//! * Built-in schema generation runs once per process; whole documents are
//!   cached per distinct resource list (a CRD change yields a new list and
//!   so a new cache entry, replacing the old one).
//! * Nothing derived from CRD schemas can panic; bad schemas degrade to a
//!   schemaless object definition.
//!
//! # Known deviation from upstream
//! `application/strategic-merge-patch+json` is not advertised for PATCH
//! (v2 `consumes`, v3 `requestBody`). k8s-openapi's schemas carry no
//! `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key`, and kubectl
//! would compute strategic-merge patches from the schema that treat every
//! list as atomic. Leaving it out makes kubectl fall back to its compiled-in
//! patch metadata, which is correct for built-in kinds.

mod builtin;
mod crd;
mod dialect;
mod kinds;
mod paths;
mod proto;
mod v2;
mod v3;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// One served resource, as the API server's resource registry knows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResourceSpec {
    /// API group, empty for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// Lower-case plural, the URL path segment.
    pub plural: String,
    pub namespaced: bool,
    /// Kubernetes verbs: get, list, watch, create, update, patch, delete,
    /// deletecollection.
    pub verbs: Vec<String>,
    /// Subresource names, e.g. `status`, `scale`, `log`.
    pub subresources: Vec<String>,
    /// For custom resources, the CRD version's `openAPIV3Schema`. `None` for
    /// built-in kinds (whose schema comes from k8s-openapi) and for CRDs that
    /// publish no schema.
    pub schema: Option<Value>,
}

/// Problems with inputs; the document builders recover from them.
#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    #[error("invalid openAPIV3Schema for {kind} in {group}/{version}: {reason}")]
    InvalidCrdSchema {
        group: String,
        version: String,
        kind: String,
        reason: String,
    },
    #[error("cannot encode the v2 document as protobuf: {0}")]
    Protobuf(String),
}

/// `info.version` of every document.
const SERVER_VERSION: &str = "v1.37.0";

/// Media types responses are advertised with. Keep in step with what the
/// server's content negotiation really serves.
const RESPONSE_MEDIA_TYPES: &[&str] = &["application/json", "application/yaml"];

/// Patch request media types (see the module docs for why strategic merge
/// patch is absent).
const PATCH_MEDIA_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
];

/// Media type kubectl asks `/openapi/v2` for. The `@` makes it an invalid MIME type, so
/// upstream (kube-openapi's handler) accepts it but answers with [`V2_PROTOBUF_CONTENT_TYPE`];
/// kubectl's validation rejects a response labelled with the `@` form ("mime: unexpected
/// content after media subtype").
pub const V2_PROTOBUF_MEDIA_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// The valid spelling of the same media type: accepted too, and the `Content-Type` of every
/// protobuf `/openapi/v2` answer.
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
/// Protobuf media type client-go defines for v3 documents; not served.
pub const V3_PROTOBUF_MEDIA_TYPE: &str =
    "application/com.github.proto-openapi.spec.v3@v1.0+protobuf";

/// Body format for a `/openapi/v2` response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V2Format {
    Json,
    Protobuf,
}

/// Pick the `/openapi/v2` answer for an `Accept` header, in the client's
/// order of preference; `None` means 406 Not Acceptable. A missing header
/// means JSON, like upstream.
pub fn negotiate_v2(accept: Option<&str>) -> Option<V2Format> {
    let Some(accept) = accept else {
        return Some(V2Format::Json);
    };
    for range in accept.split(',') {
        let media = range.split(';').next().unwrap_or("").trim();
        match media {
            V2_PROTOBUF_MEDIA_TYPE | V2_PROTOBUF_CONTENT_TYPE => return Some(V2Format::Protobuf),
            "application/json" | "application/*" | "*/*" | "" => return Some(V2Format::Json),
            _ => {}
        }
    }
    None
}

/// The Swagger 2.0 document for `/openapi/v2` as JSON.
pub fn v2(resources: &[ResourceSpec]) -> Value {
    docs_for(resources).v2().as_ref().clone()
}

/// The Swagger 2.0 document encoded as gnostic's `openapi.v2.Document`
/// protobuf, the body for [`V2_PROTOBUF_MEDIA_TYPE`].
pub fn v2_protobuf(resources: &[ResourceSpec]) -> Result<Arc<Vec<u8>>, OpenApiError> {
    let docs = docs_for(resources);
    if let Some(bytes) = docs.v2_protobuf.get() {
        return Ok(bytes.clone());
    }
    let bytes = Arc::new(proto::encode_document(&docs.v2())?);
    // A concurrent caller may have won the race; either value is identical.
    Ok(docs.v2_protobuf.get_or_init(|| bytes).clone())
}

/// The `/openapi/v3` root index.
pub fn v3_index(resources: &[ResourceSpec]) -> Value {
    let docs = docs_for(resources);
    let v3 = docs.v3();
    v3::index(v3.iter().map(|(gv, d)| (gv.as_str(), d.hash.as_str())))
}

/// The OpenAPI 3.0 document for one group version, addressed by its index
/// key (`api/v1`, `apis/apps/v1`); `None` if nothing is served there.
pub fn v3_group_version(resources: &[ResourceSpec], gv_path: &str) -> Option<Value> {
    let docs = docs_for(resources);
    let doc = docs.v3().get(gv_path.trim_matches('/'))?.document.clone();
    Some(doc)
}

/// The `hash` the index advertises for a group version, for ETag handling
/// and for `Cache-Control: immutable` when the request's `hash` matches.
pub fn v3_group_version_hash(resources: &[ResourceSpec], gv_path: &str) -> Option<String> {
    let docs = docs_for(resources);
    let hash = docs.v3().get(gv_path.trim_matches('/'))?.hash.clone();
    Some(hash)
}

/// One rendered group-version document.
struct GroupVersionDoc {
    document: Value,
    hash: String,
}

/// Everything derived from one resource list, rendered lazily.
struct DocSet {
    fingerprint: [u8; 32],
    model: Model,
    v2: OnceLock<Arc<Value>>,
    v2_protobuf: OnceLock<Arc<Vec<u8>>>,
    v3: OnceLock<BTreeMap<String, GroupVersionDoc>>,
}

impl DocSet {
    fn v2(&self) -> Arc<Value> {
        self.v2
            .get_or_init(|| {
                let all_paths: Vec<paths::PathItem> =
                    self.model.groups.values().flatten().cloned().collect();
                let defs = self.model.reachable(&all_paths);
                Arc::new(v2::document(&all_paths, &defs))
            })
            .clone()
    }

    fn v3(&self) -> &BTreeMap<String, GroupVersionDoc> {
        self.v3.get_or_init(|| {
            let cached = builtin_v3();
            self.model
                .groups
                .iter()
                .map(|((group, version), items)| {
                    let defs = self.model.reachable(items);
                    // Local definitions shadow built-ins of the same name
                    // (DeleteOptions' GVK list), so they bypass the cache.
                    let document = v3::document(items, &defs, |name| {
                        if self.model.local.contains_key(name) {
                            None
                        } else {
                            cached.get(name)
                        }
                    });
                    let bytes = serde_json::to_vec(&document).unwrap_or_default();
                    let hash = v3::hash(&bytes);
                    (
                        paths::gv_path(group, version),
                        GroupVersionDoc { document, hash },
                    )
                })
                .collect()
        })
    }
}

/// Built-in definitions converted to v3 once, since most of every v3
/// document is made of them.
fn builtin_v3() -> &'static BTreeMap<String, Value> {
    static V3: OnceLock<BTreeMap<String, Value>> = OnceLock::new();
    V3.get_or_init(|| {
        builtin::builtins()
            .definitions
            .iter()
            .map(|(name, schema)| (name.clone(), dialect::to_v3(name, schema)))
            .collect()
    })
}

/// Paths per group version plus the definitions that only this resource
/// list has (custom resources, and meta types whose GVK list names the
/// served group versions).
struct Model {
    groups: BTreeMap<(String, String), Vec<paths::PathItem>>,
    local: BTreeMap<String, Value>,
}

impl Model {
    fn build(resources: &[ResourceSpec]) -> Model {
        let builtins = builtin::builtins();
        let mut local = BTreeMap::new();
        let mut resolved: BTreeMap<(String, String), Vec<paths::Resolved<'_>>> = BTreeMap::new();
        for spec in resources {
            // A CRD may reuse a built-in GVK only in theory; its schema wins.
            let builtin_kind = match spec.schema {
                None => kinds::builtin_kind(&spec.group, &spec.version, &spec.kind),
                Some(_) => None,
            };
            let builtin_name = builtin_kind.and_then(|k| {
                let name = builtins.definition_name(k.group, k.version, k.kind)?;
                let list = k
                    .listable
                    .then(|| {
                        builtins.definition_name(k.group, k.version, &format!("{}List", k.kind))
                    })
                    .flatten();
                Some((name.to_owned(), list.map(str::to_owned)))
            });
            let (definition, list_definition) = match builtin_name {
                Some(names) => names,
                None => {
                    let name = crd::definition_name(&spec.group, &spec.version, &spec.kind);
                    let schema = crd::definition(spec).unwrap_or_else(|_| crd::schemaless(spec));
                    local.insert(name.clone(), schema);
                    let list_name = format!("{name}List");
                    local.insert(list_name.clone(), crd::list_definition(spec));
                    (name, Some(list_name))
                }
            };
            resolved
                .entry((spec.group.clone(), spec.version.clone()))
                .or_default()
                .push(paths::Resolved {
                    spec,
                    definition,
                    list_definition,
                });
        }

        // Upstream lists every served group version in the GVK extension of
        // DeleteOptions and WatchEvent, which are shared by all groups.
        for (name, kind) in [
            (builtin::DELETE_OPTIONS, "DeleteOptions"),
            (builtin::WATCH_EVENT, "WatchEvent"),
        ] {
            if let Some(Value::Object(base)) = builtins.definitions.get(name) {
                let mut schema = base.clone();
                let gvks: Vec<Value> = resolved
                    .keys()
                    .map(|(g, v)| serde_json::json!({ "group": g, "kind": kind, "version": v }))
                    .collect();
                schema.insert("x-kubernetes-group-version-kind".into(), Value::Array(gvks));
                local.insert(name.to_owned(), Value::Object(schema));
            }
        }

        let groups = resolved
            .iter()
            .map(|((g, v), rs)| ((g.clone(), v.clone()), paths::group_version_paths(g, v, rs)))
            .collect();
        Model { groups, local }
    }

    fn lookup(&self, name: &str) -> Option<&Value> {
        self.local
            .get(name)
            .or_else(|| builtin::builtins().definitions.get(name))
    }

    /// Definitions reachable from the refs in `items`, with the local
    /// (per-resource-list) overrides applied.
    fn reachable(&self, items: &[paths::PathItem]) -> BTreeMap<String, Value> {
        let mut roots = BTreeSet::new();
        for op in items.iter().flat_map(|i| i.operations.iter()) {
            if let paths::Payload::Definition(d) = &op.response {
                roots.insert(d.clone());
            }
            if let Some((_, d)) = &op.body {
                roots.insert(d.clone());
            }
        }
        dialect::closure(roots, |n| self.lookup(n))
            .into_iter()
            .map(|(name, schema)| (name, schema.clone()))
            .collect()
    }
}

/// The cached document set for this resource list, building it if the list
/// changed since the last call.
fn docs_for(resources: &[ResourceSpec]) -> Arc<DocSet> {
    static CACHE: Mutex<Option<Arc<DocSet>>> = Mutex::new(None);
    let fingerprint = fingerprint(resources);
    let mut slot = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(docs) = slot.as_ref() {
        if docs.fingerprint == fingerprint {
            return docs.clone();
        }
    }
    let docs = Arc::new(DocSet {
        fingerprint,
        model: Model::build(resources),
        v2: OnceLock::new(),
        v2_protobuf: OnceLock::new(),
        v3: OnceLock::new(),
    });
    *slot = Some(docs.clone());
    docs
}

fn fingerprint(resources: &[ResourceSpec]) -> [u8; 32] {
    // Serializing `ResourceSpec` cannot fail (string keys only); an empty
    // fallback would merely make two lists share a cache slot until rebuilt.
    let bytes = serde_json::to_vec(resources).unwrap_or_default();
    Sha256::digest(&bytes).into()
}
