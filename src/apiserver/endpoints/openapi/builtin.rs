//! Definitions of the built-in kinds, generated once from k8s-openapi's
//! `schemars` impls and cached for the life of the process.
//!
//! Output is the *neutral* dialect used inside this module: Swagger-2.0 style
//! (`$ref: "#/definitions/<name>"`, `$ref` may carry sibling keys such as
//! `description`), already scrubbed of JSON-Schema-2020 constructs by
//! [`super::dialect::sanitize`]. The v3 renderer converts from it.
//!
//! What is copied from upstream (kube-openapi's builder):
//! * every top-level kind carries `x-kubernetes-group-version-kind`, a list of
//!   `{group, kind, version}` objects (exactly those three keys, because
//!   `kubectl explain` compares them with Go's `reflect.DeepEqual`);
//! * `<Kind>List` definitions exist for listable kinds;
//! * the handful of apimachinery types whose upstream schema differs from
//!   k8s-openapi's rendering are overridden (see [`apply_upstream_overrides`]).
//!
//! Nothing here depends on the served resource list, which is why it can be
//! computed once.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use super::dialect;
use super::kinds::BUILTIN_KINDS;

pub(super) const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
pub(super) const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
pub(super) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(super) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(super) const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
pub(super) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub(super) const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";

pub(super) const API_VERSION_DESCRIPTION: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
pub(super) const KIND_DESCRIPTION: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
pub(super) const OBJECT_META_DESCRIPTION: &str = "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const LIST_META_DESCRIPTION: &str = "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";

/// All built-in definitions plus the index from GVK to definition name.
pub(super) struct Builtins {
    /// Neutral-dialect definitions keyed by upstream definition name.
    pub definitions: BTreeMap<String, Value>,
    /// (group, version, kind) -> definition name, including `*List` kinds.
    pub by_gvk: BTreeMap<(String, String, String), String>,
}

impl Builtins {
    pub fn definition_name(&self, group: &str, version: &str, kind: &str) -> Option<&str> {
        self.by_gvk
            .get(&(group.to_owned(), version.to_owned(), kind.to_owned()))
            .map(String::as_str)
    }
}

/// The cached built-in definitions; the first call pays for generation.
pub(super) fn builtins() -> &'static Builtins {
    static BUILTINS: OnceLock<Builtins> = OnceLock::new();
    BUILTINS.get_or_init(generate)
}

/// `x-kubernetes-group-version-kind` value for one kind.
pub(super) fn gvk_extension(group: &str, version: &str, kind: &str) -> Value {
    json!([{ "group": group, "kind": kind, "version": version }])
}

/// The name a `$ref` produced by our generator points at.
pub(super) fn ref_target(reference: &str) -> Option<&str> {
    reference.strip_prefix(dialect::V2_REF_PREFIX)
}

fn generate() -> Builtins {
    // Draft-07 settings give `#/definitions/` refs; schemars' own transforms
    // are disabled because `dialect` does the OpenAPI-specific rewriting for
    // both output versions and we want one neutral source for both.
    let mut generator = SchemaSettings::draft07()
        .with(|s| {
            s.meta_schema = None;
            s.transforms.clear();
        })
        .into_generator();

    let mut by_gvk = BTreeMap::new();
    let mut top_level = Vec::new();
    for kind in BUILTIN_KINDS {
        let reference = (kind.generate)(&mut generator);
        let Some(name) = reference
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(ref_target)
        else {
            continue;
        };
        let name = name.to_owned();
        by_gvk.insert(
            (kind.group.into(), kind.version.into(), kind.kind.into()),
            name.clone(),
        );
        top_level.push((kind, name));
    }

    // Types that only paths reference (request bodies and responses).
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>();
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Patch>();
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::WatchEvent<()>>();

    let mut definitions: BTreeMap<String, Value> =
        generator.take_definitions(false).into_iter().collect();

    for (kind, name) in &top_level {
        if let Some(Value::Object(schema)) = definitions.get_mut(name) {
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                gvk_extension(kind.group, kind.version, kind.kind),
            );
            // k8s-openapi makes `metadata` non-optional for Rust ergonomics;
            // upstream never lists it as required.
            drop_required(schema, "metadata");
        }
        if kind.listable {
            let list_name = format!("{name}List");
            let list_kind = format!("{}List", kind.kind);
            definitions.insert(
                list_name.clone(),
                list_definition(name, kind.group, kind.version, &list_kind),
            );
            by_gvk.insert(
                (kind.group.into(), kind.version.into(), list_kind),
                list_name,
            );
        }
    }

    apply_upstream_overrides(&mut definitions);
    for schema in definitions.values_mut() {
        dialect::sanitize(schema);
    }
    Builtins {
        definitions,
        by_gvk,
    }
}

fn drop_required(schema: &mut Map<String, Value>, field: &str) {
    let now_empty = match schema.get_mut("required") {
        Some(Value::Array(required)) => {
            required.retain(|r| r.as_str() != Some(field));
            required.is_empty()
        }
        _ => false,
    };
    if now_empty {
        schema.remove("required");
    }
}

/// A `<Kind>List` definition shaped like upstream's generated list types.
pub(super) fn list_definition(
    item_name: &str,
    group: &str,
    version: &str,
    list_kind: &str,
) -> Value {
    let item_kind = list_kind.strip_suffix("List").unwrap_or(list_kind);
    json!({
        "description": format!("{list_kind} is a list of {item_kind} objects."),
        "type": "object",
        "properties": {
            "apiVersion": { "description": API_VERSION_DESCRIPTION, "type": "string" },
            "items": {
                "description": format!("List of {item_kind} objects."),
                "type": "array",
                "items": { "$ref": format!("{}{item_name}", dialect::V2_REF_PREFIX) },
            },
            "kind": { "description": KIND_DESCRIPTION, "type": "string" },
            "metadata": {
                "$ref": format!("{}{LIST_META}", dialect::V2_REF_PREFIX),
                "description": LIST_META_DESCRIPTION,
            },
        },
        "required": ["items"],
        "x-kubernetes-group-version-kind": gvk_extension(group, version, list_kind),
    })
}

/// Replace k8s-openapi renderings that differ from what upstream publishes
/// for the same definition in ways clients notice.
///
/// * `IntOrString` and `Quantity` are `x-kubernetes-int-or-string` only in
///   k8s-openapi; upstream v2 says `type: string` (+ `format: int-or-string`)
///   and gnostic-based validators rely on a type. The v3 renderer turns these
///   into upstream's `oneOf` form (see `dialect::to_v3`).
/// * apiextensions `JSON` is "any JSON value" upstream (no `type`), not an
///   object, so CRD `default`/`example` values that are scalars stay valid.
fn apply_upstream_overrides(definitions: &mut BTreeMap<String, Value>) {
    let description = |defs: &BTreeMap<String, Value>, name: &str| {
        defs.get(name)
            .and_then(|d| d.get("description"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let int_or_string = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
    if definitions.contains_key(int_or_string) {
        let d = description(definitions, int_or_string);
        definitions.insert(
            int_or_string.into(),
            json!({ "description": d, "type": "string", "format": "int-or-string" }),
        );
    }
    let quantity = "io.k8s.apimachinery.pkg.api.resource.Quantity";
    if definitions.contains_key(quantity) {
        let d = description(definitions, quantity);
        definitions.insert(
            quantity.into(),
            json!({ "description": d, "type": "string" }),
        );
    }
    let any_json = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON";
    if let Some(Value::Object(schema)) = definitions.get_mut(any_json) {
        schema.remove("type");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_row_resolves_to_a_definition() {
        let b = builtins();
        for k in BUILTIN_KINDS {
            let name = b
                .definition_name(k.group, k.version, k.kind)
                .unwrap_or_else(|| {
                    panic!("{}/{}/{} has no definition", k.group, k.version, k.kind)
                });
            assert!(b.definitions.contains_key(name), "{name}");
        }
        assert!(b.definitions.contains_key(STATUS));
        assert!(b.definitions.contains_key(DELETE_OPTIONS));
        assert!(b.definitions.contains_key(WATCH_EVENT));
        assert!(b.definitions.contains_key(PATCH));
        assert!(b.definitions.contains_key(OBJECT_META));
    }

    #[test]
    fn deployment_has_gvk_and_list() {
        let b = builtins();
        let d = &b.definitions["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            d["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        let required = d["required"].as_array().cloned().unwrap_or_default();
        assert!(!required.contains(&json!("metadata")));
        assert_eq!(
            b.definition_name("apps", "v1", "DeploymentList"),
            Some("io.k8s.api.apps.v1.DeploymentList")
        );
    }
}
