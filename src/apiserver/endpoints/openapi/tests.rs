//! Whole-document tests: the documents are read the way kubectl 1.37 reads
//! them (index -> group-version document -> GVK from paths -> schema by GVK
//! extension -> ref/allOf walk), checked for constructs OpenAPI 2/3.0 parsers
//! reject, and the protobuf v2 body is decoded back.

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::{json, Value};

use super::kinds::BUILTIN_KINDS;
use super::proto::decode;
use super::*;

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn resource(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    subresources: &[&str],
) -> ResourceSpec {
    ResourceSpec {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        namespaced,
        verbs: ALL_VERBS.iter().map(|v| (*v).to_owned()).collect(),
        subresources: subresources.iter().map(|s| (*s).to_owned()).collect(),
        schema: None,
    }
}

fn crontab() -> ResourceSpec {
    ResourceSpec {
        schema: Some(json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "description": "CronTab spec.",
                    "properties": {
                        "cronSpec": {"type": "string", "description": "Cron schedule."},
                        "replicas": {"type": "integer", "minimum": 1, "maximum": 10},
                        "image": {"type": ["string", "null"]},
                        "selector": {
                            "type": "object",
                            "additionalProperties": {"type": "string"}
                        },
                    },
                    "required": ["cronSpec"],
                },
            },
        })),
        ..resource(
            "stable.example.com",
            "v1",
            "CronTab",
            "crontabs",
            true,
            &["status"],
        )
    }
}

/// A resource list shaped like a real server's: every listable built-in
/// kind (so documents have their real size), a few with subresources, and
/// one custom resource.
fn server_resources() -> Vec<ResourceSpec> {
    const CLUSTER_SCOPED: &[&str] = &[
        "Namespace",
        "Node",
        "PersistentVolume",
        "ComponentStatus",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "APIService",
        "StorageClass",
        "CSIDriver",
        "CSINode",
        "VolumeAttachment",
        "PriorityClass",
        "RuntimeClass",
        "IngressClass",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "CertificateSigningRequest",
    ];
    let subresources = |kind: &str| -> &'static [&'static str] {
        match kind {
            "Pod" => &[
                "status",
                "log",
                "exec",
                "attach",
                "portforward",
                "proxy",
                "eviction",
                "binding",
                "ephemeralcontainers",
            ],
            "Deployment" | "ReplicaSet" | "StatefulSet" => &["status", "scale"],
            "Namespace" => &["status", "finalize"],
            "ServiceAccount" => &["token"],
            "Node" | "Service" => &["status", "proxy"],
            _ => &["status"],
        }
    };
    let mut out: Vec<ResourceSpec> = BUILTIN_KINDS
        .iter()
        .filter(|k| k.listable)
        .map(|k| {
            let lower = k.kind.to_lowercase();
            let plural = if lower.ends_with('s') {
                format!("{lower}es")
            } else {
                format!("{lower}s")
            };
            resource(
                k.group,
                k.version,
                k.kind,
                &plural,
                !CLUSTER_SCOPED.contains(&k.kind),
                subresources(k.kind),
            )
        })
        .collect();
    out.push(crontab());
    out
}

/// What kubectl's `openapi.Client` does with the root: the GV document URL
/// for a group version, by index key.
fn gv_url(index: &Value, gv: &str) -> String {
    index["paths"][gv]["serverRelativeURL"]
        .as_str()
        .unwrap_or_else(|| panic!("{gv} missing from index"))
        .to_owned()
}

/// `resolveRef` of kubectl's explain template funcs: split the fragment on
/// `/` and index into the document.
fn resolve_ref<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let fragment = reference.strip_prefix('#')?;
    let mut cur = doc;
    for k in fragment.split('/').filter(|k| !k.is_empty()) {
        cur = cur.get(k)?;
        if !cur.is_object() {
            return None;
        }
    }
    Some(cur)
}

/// The template's GVK lookup: the first of get/post/put/patch/delete on the
/// four candidate paths that carries `x-kubernetes-group-version-kind`.
fn explain_gvk(doc: &Value, group: &str, version: &str, plural: &str) -> Option<Value> {
    let prefix = if group.is_empty() {
        "/api".to_owned()
    } else {
        format!("/apis/{group}")
    };
    let candidates = [
        format!("{prefix}/{version}/{plural}"),
        format!("{prefix}/{version}/{plural}/{{name}}"),
        format!("{prefix}/{version}/namespaces/{{namespace}}/{plural}"),
        format!("{prefix}/{version}/namespaces/{{namespace}}/{plural}/{{name}}"),
    ];
    for path in &candidates {
        for method in ["get", "post", "put", "patch", "delete"] {
            if let Some(gvk) = doc["paths"]
                .get(path)
                .and_then(|p| p.get(method))
                .and_then(|o| o.get("x-kubernetes-group-version-kind"))
            {
                return Some(gvk.clone());
            }
        }
    }
    None
}

/// The template's "schema" + "output" walk. Returns the field's schema (as
/// written in its parent's `properties`) after following `path`.
fn explain_walk<'a>(doc: &'a Value, gvk: &Value, path: &[&str]) -> Option<&'a Value> {
    let root = doc["components"]["schemas"]
        .as_object()?
        .values()
        .find(|s| {
            s.get("x-kubernetes-group-version-kind")
                .and_then(Value::as_array)
                .is_some_and(|l| l.contains(gvk))
        })?;
    walk(doc, root, path)
}

fn walk<'a>(doc: &'a Value, schema: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(schema);
    };
    let resolved = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| resolve_ref(doc, r))
        .unwrap_or(schema);
    if let Some(sub) = resolved.get("properties").and_then(|p| p.get(*first)) {
        return walk(doc, sub, rest);
    }
    if let Some(items) = resolved.get("items") {
        return walk(doc, items, path);
    }
    if let Some(ap @ Value::Object(_)) = resolved.get("additionalProperties") {
        return walk(doc, ap, path);
    }
    resolved
        .get("allOf")
        .and_then(Value::as_array)?
        .iter()
        .find_map(|sub| walk(doc, sub, path))
}

/// The template's `typeGuess`.
fn type_guess(doc: &Value, schema: &Value) -> String {
    if let Some(items) = schema.get("items") {
        return format!("[]{}", type_guess(doc, items));
    }
    if let Some(ap @ Value::Object(_)) = schema.get("additionalProperties") {
        return format!("map[string]{}", type_guess(doc, ap));
    }
    if let (Some(Value::Array(all_of)), None) = (schema.get("allOf"), schema.get("properties")) {
        if all_of.len() == 1 {
            return type_guess(doc, &all_of[0]);
        }
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = resolve_ref(doc, reference);
        let ty = target.and_then(|t| t.get("type")).and_then(Value::as_str);
        return match ty {
            None | Some("object") => reference.rsplit('.').next().unwrap_or("Object").to_owned(),
            Some(t) => t.to_owned(),
        };
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") | None => "Object".into(),
        Some(t) => t.into(),
    }
}

fn gv_doc_via_index(resources: &[ResourceSpec], gv: &str) -> Value {
    let index = v3_index(resources);
    let url = gv_url(&index, gv);
    let (path, query) = url.split_once('?').expect("hash query");
    assert!(query.starts_with("hash="), "{url}");
    assert_eq!(
        &query[5..],
        v3_group_version_hash(resources, gv).expect("hash").as_str()
    );
    let key = path
        .strip_prefix("/openapi/v3/")
        .expect("rooted at /openapi/v3");
    let doc = v3_group_version(resources, key).expect("document for indexed path");
    // kubectl decodes with encoding/json from the raw bytes.
    serde_json::from_slice(&serde_json::to_vec(&doc).expect("serialize")).expect("parse")
}

#[test]
fn explain_deployment_spec_strategy_rolling_update_max_surge() {
    let resources = server_resources();
    let doc = gv_doc_via_index(&resources, "apis/apps/v1");
    let gvk = explain_gvk(&doc, "apps", "v1", "deployments").expect("GVK on deployment paths");
    assert_eq!(
        gvk,
        json!({"group": "apps", "kind": "Deployment", "version": "v1"})
    );

    let strategy = explain_walk(&doc, &gvk, &["spec", "strategy"]).expect("spec.strategy");
    assert_eq!(type_guess(&doc, strategy), "DeploymentStrategy");
    let max_surge = explain_walk(
        &doc,
        &gvk,
        &["spec", "strategy", "rollingUpdate", "maxSurge"],
    )
    .expect("maxSurge");
    assert!(max_surge["description"]
        .as_str()
        .unwrap_or("")
        .contains("maximum number of pods"));
    assert_eq!(type_guess(&doc, max_surge), "IntOrString");

    let containers =
        explain_walk(&doc, &gvk, &["spec", "template", "spec", "containers"]).expect("containers");
    assert_eq!(type_guess(&doc, containers), "[]Container");
    let image = explain_walk(
        &doc,
        &gvk,
        &["spec", "template", "spec", "containers", "image"],
    )
    .expect("image");
    assert_eq!(type_guess(&doc, image), "string");
    let labels = explain_walk(&doc, &gvk, &["metadata", "labels"]).expect("metadata.labels");
    assert_eq!(type_guess(&doc, labels), "map[string]string");
    assert!(explain_walk(&doc, &gvk, &["spec", "nope"]).is_none());
}

#[test]
fn explain_crd_spec() {
    let resources = server_resources();
    let doc = gv_doc_via_index(&resources, "apis/stable.example.com/v1");
    let gvk = explain_gvk(&doc, "stable.example.com", "v1", "crontabs").expect("GVK");
    assert_eq!(
        gvk,
        json!({"group": "stable.example.com", "kind": "CronTab", "version": "v1"})
    );
    assert!(doc["components"]["schemas"]["com.example.stable.v1.CronTab"].is_object());
    let spec = explain_walk(&doc, &gvk, &["spec"]).expect("spec");
    assert_eq!(spec["required"], json!(["cronSpec"]));
    let cron = explain_walk(&doc, &gvk, &["spec", "cronSpec"]).expect("cronSpec");
    assert_eq!(type_guess(&doc, cron), "string");
    let image = explain_walk(&doc, &gvk, &["spec", "image"]).expect("image");
    assert_eq!(image, &json!({"type": "string", "nullable": true}));
    let name =
        explain_walk(&doc, &gvk, &["metadata", "name"]).expect("metadata.name via ObjectMeta ref");
    assert_eq!(type_guess(&doc, name), "string");
    // The v2 rendering of the same CRD drops the v3-only `nullable`.
    let v2doc = v2(&resources);
    assert_eq!(
        v2doc["definitions"]["com.example.stable.v1.CronTab"]["properties"]["spec"]["properties"]
            ["image"],
        json!({})
    );
}

#[test]
fn core_group_explain_and_index_keys() {
    let resources = server_resources();
    let index = v3_index(&resources);
    let keys: BTreeSet<&str> = index["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    assert!(
        keys.contains("api/v1")
            && keys.contains("apis/apps/v1")
            && keys.contains("apis/stable.example.com/v1")
    );
    let doc = gv_doc_via_index(&resources, "api/v1");
    let gvk = explain_gvk(&doc, "", "v1", "pods").expect("pod GVK");
    assert_eq!(gvk, json!({"group": "", "kind": "Pod", "version": "v1"}));
    assert!(explain_walk(&doc, &gvk, &["spec", "containers", "resources", "limits"]).is_some());
    assert!(v3_group_version(&resources, "apis/nope/v1").is_none());
}

/// kubectl's QueryParamVerifierV3 (fieldValidation probe) and the apply
/// patcher's SMP probe, over every group version.
#[test]
fn patch_operations_satisfy_kubectl_probes() {
    let resources = server_resources();
    let index = v3_index(&resources);
    for gv in index["paths"].as_object().expect("paths").keys() {
        let doc = v3_group_version(&resources, gv).expect("doc");
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in ["post", "put", "patch"] {
                let Some(op) = item.get(method) else { continue };
                if op.get("x-kubernetes-action").and_then(Value::as_str) == Some("connect") {
                    continue;
                }
                let names: Vec<&str> = op["parameters"]
                    .as_array()
                    .map(|l| l.iter().filter_map(|p| p["name"].as_str()).collect())
                    .unwrap_or_default();
                assert!(names.contains(&"fieldValidation"), "{method} {path}");
                if method == "patch" {
                    let content = &op["requestBody"]["content"];
                    assert!(
                        content.get("application/merge-patch+json").is_some(),
                        "{path}"
                    );
                    assert!(
                        content
                            .get("application/strategic-merge-patch+json")
                            .is_none(),
                        "{path}"
                    );
                }
            }
        }
    }
}

fn check_dialect(value: &Value, v3: bool, at: &str, problems: &mut Vec<String>) {
    match value {
        Value::Object(obj) => {
            for bad in ["$defs", "$schema", "const", "examples", "$id"] {
                if obj.contains_key(bad) {
                    problems.push(format!("{at}: {bad}"));
                }
            }
            if let Some(Value::Array(_)) = obj.get("type") {
                problems.push(format!("{at}: type array"));
            }
            for key in ["exclusiveMinimum", "exclusiveMaximum"] {
                if obj.get(key).is_some_and(|v| !v.is_boolean()) {
                    problems.push(format!("{at}: numeric {key}"));
                }
            }
            if let Some(Value::String(r)) = obj.get("$ref") {
                let wrong = if v3 {
                    "#/definitions/"
                } else {
                    "#/components/"
                };
                if r.starts_with(wrong) {
                    problems.push(format!("{at}: ref {r}"));
                }
                if v3 && obj.len() > 1 {
                    problems.push(format!("{at}: $ref with siblings in v3"));
                }
            }
            if !v3 {
                for key in ["nullable", "oneOf", "anyOf"] {
                    if obj.contains_key(key) {
                        problems.push(format!("{at}: {key} in v2"));
                    }
                }
            }
            for (k, v) in obj {
                let here = format!("{at}/{k}");
                match (k.as_str(), v) {
                    // Maps from field names to schemas: a field may well be
                    // called "$schema" (JSONSchemaProps has one).
                    ("properties" | "patternProperties", Value::Object(fields)) => {
                        for (name, field) in fields {
                            check_dialect(field, v3, &format!("{here}/{name}"), problems);
                        }
                    }
                    // Values, not schemas.
                    ("enum" | "default" | "example" | "x-kubernetes-group-version-kind", _) => {}
                    _ => check_dialect(v, v3, &here, problems),
                }
            }
        }
        Value::Array(list) => list.iter().for_each(|v| check_dialect(v, v3, at, problems)),
        _ => {}
    }
}

fn dangling_refs(doc: &Value, prefix: &str, container: &Value) -> Vec<String> {
    let mut refs = BTreeSet::new();
    super::dialect::collect_refs(doc, prefix, &mut refs);
    refs.into_iter()
        .filter(|r| container.get(r).is_none())
        .collect()
}

#[test]
fn documents_use_only_openapi_constructs_and_refs_resolve() {
    let resources = server_resources();
    let v2doc = v2(&resources);
    let mut problems = Vec::new();
    for (name, schema) in v2doc["definitions"].as_object().expect("definitions") {
        check_dialect(schema, false, name, &mut problems);
    }
    assert_eq!(
        dangling_refs(&v2doc, "#/definitions/", &v2doc["definitions"]),
        Vec::<String>::new()
    );
    let index = v3_index(&resources);
    for gv in index["paths"].as_object().expect("paths").keys() {
        let doc = v3_group_version(&resources, gv).expect("doc");
        for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
            check_dialect(schema, true, &format!("{gv} {name}"), &mut problems);
        }
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            dangling_refs(&doc, "#/components/schemas/", schemas),
            Vec::<String>::new(),
            "{gv}"
        );
        // kube-openapi and k8s-openapi agree on the JSON-schema subset; every
        // schema must at least decode as apiextensions' JSONSchemaProps (it
        // rejects array `type` and numeric `exclusiveMinimum`).
        for (name, schema) in schemas.as_object().expect("schemas") {
            let decoded: Result<
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps,
                _,
            > = serde_json::from_value(schema.clone());
            assert!(decoded.is_ok(), "{gv} {name}: {:?}", decoded.err());
        }
    }
    assert_eq!(problems, Vec::<String>::new());
}

#[test]
fn delete_options_lists_every_group_version() {
    let resources = server_resources();
    let doc = v3_group_version(&resources, "apis/apps/v1").expect("apps");
    let gvks = doc["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"]
        ["x-kubernetes-group-version-kind"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(gvks.contains(&json!({"group": "apps", "kind": "DeleteOptions", "version": "v1"})));
    assert!(gvks.contains(
        &json!({"group": "stable.example.com", "kind": "DeleteOptions", "version": "v1"})
    ));
}

#[test]
fn hashes_are_stable_and_track_content() {
    let resources = server_resources();
    let a = v3_group_version_hash(&resources, "apis/apps/v1").expect("hash");
    assert_eq!(a.len(), 128);
    let mut changed = resources.clone();
    if let Some(r) = changed.iter_mut().find(|r| r.kind == "CronTab") {
        r.schema = Some(json!({"type": "object", "properties": {"spec": {"type": "string"}}}));
    }
    let crd_before = v3_group_version_hash(&resources, "apis/stable.example.com/v1");
    let crd_after = v3_group_version_hash(&changed, "apis/stable.example.com/v1");
    assert_ne!(crd_before, crd_after);
    assert_eq!(
        v3_group_version_hash(&changed, "apis/apps/v1").as_deref(),
        Some(a.as_str())
    );
}

#[test]
fn protobuf_v2_decodes_to_the_json_document() {
    let resources = server_resources();
    let json_doc = v2(&resources);
    let bytes = v2_protobuf(&resources).expect("encode");
    assert_eq!(decode::string(&bytes, 1).as_deref(), Some("2.0"));
    let paths = decode::messages(&bytes, 8);
    assert_eq!(paths.len(), 1);
    let named_paths = decode::messages(paths[0], 2);
    assert_eq!(
        named_paths.len(),
        json_doc["paths"].as_object().map_or(0, |m| m.len())
    );
    let definitions = decode::messages(&bytes, 9);
    let named_defs = decode::messages(definitions[0], 1);
    assert_eq!(
        named_defs.len(),
        json_doc["definitions"].as_object().map_or(0, |m| m.len())
    );

    // The Deployment definition's GVK extension, as kubectl's v2 model reads
    // it: a NamedAny (31) whose Any.yaml parses to the GVK list.
    let deployment = named_defs
        .iter()
        .find(|d| decode::string(d, 1).as_deref() == Some("io.k8s.api.apps.v1.Deployment"))
        .expect("Deployment definition");
    let schema = decode::messages(deployment, 2)[0];
    let ext = decode::messages(schema, 31)
        .into_iter()
        .find(|e| decode::string(e, 1).as_deref() == Some("x-kubernetes-group-version-kind"))
        .expect("GVK extension");
    let yaml = decode::string(decode::messages(ext, 2)[0], 2).expect("yaml");
    let parsed: Value = serde_json::from_str(&yaml).expect("JSON is YAML");
    assert_eq!(
        parsed,
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    // Every byte is well-formed protobuf all the way down the first path.
    assert!(decode::fields(named_paths[0]).is_some());
}

#[test]
fn accept_negotiation_for_v2() {
    assert_eq!(
        negotiate_v2(Some(V2_PROTOBUF_MEDIA_TYPE)),
        Some(V2Format::Protobuf)
    );
    assert_eq!(
        negotiate_v2(Some(V2_PROTOBUF_CONTENT_TYPE)),
        Some(V2Format::Protobuf)
    );
    assert_eq!(negotiate_v2(Some("application/json")), Some(V2Format::Json));
    assert_eq!(negotiate_v2(None), Some(V2Format::Json));
    assert_eq!(
        negotiate_v2(Some("application/json;q=0.9, */*")),
        Some(V2Format::Json)
    );
    assert_eq!(
        negotiate_v2(Some("application/vnd.kubernetes.protobuf")),
        None
    );
}

/// `cargo test -- --nocapture measure` prints generation cost and sizes.
#[test]
fn measure_generation_time_and_size() {
    let resources = server_resources();
    let t = Instant::now();
    let _ = super::builtin::builtins();
    let builtin_time = t.elapsed();
    let t = Instant::now();
    let v2doc = v2(&resources);
    let v2_time = t.elapsed();
    let t = Instant::now();
    let index = v3_index(&resources);
    let v3_time = t.elapsed();
    let t = Instant::now();
    let proto = v2_protobuf(&resources).expect("proto");
    let proto_time = t.elapsed();
    let v2_bytes = serde_json::to_vec(&v2doc).map(|b| b.len()).unwrap_or(0);
    let apps = v3_group_version(&resources, "apis/apps/v1").expect("apps");
    let core = v3_group_version(&resources, "api/v1").expect("core");
    let size = |v: &Value| serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0);
    let gv_count = index["paths"].as_object().map_or(0, |m| m.len());
    let t = Instant::now();
    let _ = v2(&resources);
    let cached = t.elapsed();
    println!(
        "builtin schemas: {builtin_time:?} ({} definitions)\n\
         v2 first: {v2_time:?}, {v2_bytes} bytes JSON, {} paths, {} definitions\n\
         v2 protobuf: {proto_time:?}, {} bytes\n\
         v3 all {gv_count} group versions + index: {v3_time:?}\n\
         v3 api/v1: {} bytes, apis/apps/v1: {} bytes\n\
         v2 again (cached, clone only): {cached:?}",
        super::builtin::builtins().definitions.len(),
        v2doc["paths"].as_object().map_or(0, |m| m.len()),
        v2doc["definitions"].as_object().map_or(0, |m| m.len()),
        proto.len(),
        size(&core),
        size(&apps),
    );
}

#[test]
#[ignore = "prints a sample; run explicitly"]
fn print_sample() {
    let resources = server_resources();
    let doc = v3_group_version(&resources, "apis/apps/v1").expect("apps");
    let p = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    println!("{}", serde_json::to_string_pretty(p).unwrap_or_default());
    let s = &doc["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]
        ["strategy"];
    println!("{}", serde_json::to_string_pretty(s).unwrap_or_default());
    println!("{}", v3_index(&resources)["paths"]["apis/apps/v1"]);
}
