//! Validation of one version's `openAPIV3Schema` inside a CRD (upstream
//! `validateCustomResourceDefinitionValidation` and `ValidateCustomResourceDefinitionOpenAPISchema`
//! in `apis/apiextensions/validation`, plus `schema/defaulting.ValidateDefaults`).
//!
//! Three layers, in upstream's order:
//! 1. root restrictions (status subresource ⇒ only a fixed set of keywords at the root;
//!    `nullable` never at the root);
//! 2. structurality ([`super::structural`]) and, only if structural, the `default` values:
//!    each must be pruned (no unknown fields) and must validate against its own schema;
//! 3. the OpenAPI subset CRDs may use: no `$ref`/`id`/`definitions`/`patternProperties`/
//!    `dependencies`/`additionalItems`/`uniqueItems`, `properties` xor `additionalProperties`,
//!    no defaults in top-level metadata, consistent `x-kubernetes-{list,map}-type` and
//!    list-map keys.
//!
//! Like upstream, some rules that were tightened over time are relaxed on update when the old
//! CRD already broke them ([`SchemaOpts::for_update`]), so a stored CRD never becomes
//! un-updatable. CEL rules in `x-kubernetes-validations` only get their syntax-free checks.

use super::field_error::{FieldError, FieldPath};
use super::prune::prune_at;
use super::structural::{validate_structural, SchemaView};
use super::validate_object::validate_value;
use super::MAX_DEPTH;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;

const OPENAPI_TYPES: [&str; 6] = ["array", "boolean", "integer", "number", "object", "string"];
const META_FIELDS: [&str; 3] = ["metadata", "kind", "apiVersion"];
const VALIDATION_REASONS: [&str; 4] = [
    "FieldValueDuplicate",
    "FieldValueForbidden",
    "FieldValueInvalid",
    "FieldValueRequired",
];

/// Rules upstream only enforces when the old object did not already break them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SchemaOpts {
    pub require_valid_property_type: bool,
    pub require_atomic_set_type: bool,
    pub require_map_list_keys_map_set: bool,
    pub require_pruned_defaults: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Always,
    ValidPropertyType,
    AtomicSetType,
    MapListKeysMapSet,
    PrunedDefaults,
}

impl SchemaOpts {
    pub fn strict() -> Self {
        SchemaOpts {
            require_valid_property_type: true,
            require_atomic_set_type: true,
            require_map_list_keys_map_set: true,
            require_pruned_defaults: true,
        }
    }

    /// Strict, except for rules some schema of `old` already violates.
    pub fn for_update(old: &CustomResourceDefinition) -> Self {
        let strict = SchemaOpts::strict();
        let mut fired = Vec::new();
        for v in &old.spec.versions {
            if let Some(s) = v
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
            {
                let mut out = Vec::new();
                openapi(
                    s,
                    &FieldPath::root(),
                    &Ctx::root(),
                    true,
                    &strict,
                    0,
                    &mut out,
                );
                defaults(s, &FieldPath::root(), true, false, &strict, 0, &mut out);
                fired.extend(out.into_iter().map(|(r, _)| r));
            }
        }
        SchemaOpts {
            require_valid_property_type: !fired.contains(&Rule::ValidPropertyType),
            require_atomic_set_type: !fired.contains(&Rule::AtomicSetType),
            require_map_list_keys_map_set: !fired.contains(&Rule::MapListKeysMapSet),
            require_pruned_defaults: !fired.contains(&Rule::PrunedDefaults),
        }
    }
}

/// Validates `schema`, found at `path` (`spec.versions[i].schema`).
pub(super) fn validate_version_schema(
    schema: &JSONSchemaProps,
    status_enabled: bool,
    opts: &SchemaOpts,
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if status_enabled {
        root_restrictions(schema, path, &mut errs);
    }
    if schema.is_nullable() {
        errs.push(FieldError::forbidden(
            &path.child("openAPIV3Schema.nullable"),
            "nullable cannot be true at the root",
        ));
    }
    let root = path.child("openAPIV3Schema");
    let structural = validate_structural(&root, schema);
    let mut tagged = Vec::new();
    if structural.is_empty() {
        defaults(schema, &root, true, false, opts, 0, &mut tagged);
    }
    errs.extend(structural);
    openapi(schema, &root, &Ctx::root(), true, opts, 0, &mut tagged);
    errs.extend(tagged.into_iter().map(|(_, e)| e));
    errs
}

/// Go field names of `JSONSchemaProps` in declaration order, with whether they are set.
fn set_fields(s: &JSONSchemaProps) -> Vec<(&'static str, bool)> {
    let nonempty_str = |o: &Option<String>| o.as_deref().is_some_and(|x| !x.is_empty());
    vec![
        ("ID", nonempty_str(&s.id)),
        ("Schema", nonempty_str(&s.schema)),
        ("Ref", s.ref_path.is_some()),
        ("Description", nonempty_str(&s.description)),
        ("Type", nonempty_str(&s.type_)),
        ("Format", nonempty_str(&s.format)),
        ("Title", nonempty_str(&s.title)),
        ("Default", s.default.is_some()),
        ("Maximum", s.maximum.is_some()),
        ("ExclusiveMaximum", s.exclusive_maximum == Some(true)),
        ("Minimum", s.minimum.is_some()),
        ("ExclusiveMinimum", s.exclusive_minimum == Some(true)),
        ("MaxLength", s.max_length.is_some()),
        ("MinLength", s.min_length.is_some()),
        ("Pattern", nonempty_str(&s.pattern)),
        ("MaxItems", s.max_items.is_some()),
        ("MinItems", s.min_items.is_some()),
        ("UniqueItems", s.unique_items == Some(true)),
        ("MultipleOf", s.multiple_of.is_some()),
        ("Enum", s.enum_.as_ref().is_some_and(|v| !v.is_empty())),
        ("MaxProperties", s.max_properties.is_some()),
        ("MinProperties", s.min_properties.is_some()),
        (
            "Required",
            s.required.as_ref().is_some_and(|v| !v.is_empty()),
        ),
        ("Items", s.items.is_some()),
        ("AllOf", s.all_of.as_ref().is_some_and(|v| !v.is_empty())),
        ("OneOf", s.one_of.as_ref().is_some_and(|v| !v.is_empty())),
        ("AnyOf", s.any_of.as_ref().is_some_and(|v| !v.is_empty())),
        ("Not", s.not.is_some()),
        ("Properties", s.has_properties()),
        ("AdditionalProperties", s.additional_properties.is_some()),
        (
            "PatternProperties",
            s.pattern_properties.as_ref().is_some_and(|v| !v.is_empty()),
        ),
        (
            "Dependencies",
            s.dependencies.as_ref().is_some_and(|v| !v.is_empty()),
        ),
        ("AdditionalItems", s.additional_items.is_some()),
        (
            "Definitions",
            s.definitions.as_ref().is_some_and(|v| !v.is_empty()),
        ),
        ("ExternalDocs", s.external_docs.is_some()),
        ("Example", s.example.is_some()),
        ("Nullable", s.is_nullable()),
        (
            "XPreserveUnknownFields",
            s.x_kubernetes_preserve_unknown_fields.is_some(),
        ),
        ("XEmbeddedResource", s.is_embedded()),
        ("XIntOrString", s.is_int_or_string()),
        (
            "XListMapKeys",
            s.x_kubernetes_list_map_keys
                .as_ref()
                .is_some_and(|v| !v.is_empty()),
        ),
        ("XListType", s.x_kubernetes_list_type.is_some()),
        ("XMapType", s.x_kubernetes_map_type.is_some()),
        (
            "XValidations",
            s.x_kubernetes_validations
                .as_ref()
                .is_some_and(|v| !v.is_empty()),
        ),
    ]
}

const ALLOWED_AT_ROOT: [&str; 22] = [
    "Description",
    "Type",
    "Format",
    "Title",
    "Maximum",
    "ExclusiveMaximum",
    "Minimum",
    "ExclusiveMinimum",
    "MaxLength",
    "MinLength",
    "Pattern",
    "MaxItems",
    "MinItems",
    "UniqueItems",
    "MultipleOf",
    "Required",
    "Items",
    "Properties",
    "ExternalDocs",
    "Example",
    "XPreserveUnknownFields",
    "XValidations",
];

/// With a status subresource, `status` is validated by extracting `properties[status]`, so root
/// keywords that would constrain the whole object across spec and status are refused.
fn root_restrictions(s: &JSONSchemaProps, path: &FieldPath, errs: &mut Vec<FieldError>) {
    for (name, set) in set_fields(s) {
        if !set {
            continue;
        }
        if name == "Type" {
            if s.ty() != "object" {
                errs.push(FieldError::invalid(
                    &path.child("openAPIV3Schema.type"),
                    s.ty(),
                    r#"only "object" is allowed as the type at the root of the schema if the status subresource is enabled"#,
                ));
                return;
            }
            continue;
        }
        if !ALLOWED_AT_ROOT.contains(&name) {
            errs.push(FieldError::invalid(
                &path.child("openAPIV3Schema"),
                serde_json::to_value(s).unwrap_or(Value::Null),
                format!(
                    "only [{}] fields are allowed at the root of the schema if the status subresource is enabled",
                    ALLOWED_AT_ROOT.join(" ")
                ),
            ));
            return;
        }
    }
}

/// Upstream's `specStandardValidator` state.
#[derive(Clone)]
struct Ctx {
    allow_defaults: bool,
    disallow_defaults_reason: String,
    inside_resource_meta: bool,
}

impl Ctx {
    fn root() -> Self {
        Ctx {
            allow_defaults: true,
            disallow_defaults_reason: String::new(),
            inside_resource_meta: false,
        }
    }
    fn forbid_defaults(&self, reason: String) -> Self {
        Ctx {
            allow_defaults: false,
            disallow_defaults_reason: reason,
            ..self.clone()
        }
    }
}

type Tagged = Vec<(Rule, FieldError)>;

fn openapi(
    s: &JSONSchemaProps,
    path: &FieldPath,
    ctx: &Ctx,
    is_root: bool,
    opts: &SchemaOpts,
    depth: usize,
    out: &mut Tagged,
) {
    if depth > MAX_DEPTH {
        return; // reported by the structural check
    }
    let mut push = |rule: Rule, e: FieldError| out.push((rule, e));
    let ty = s.ty();
    if opts.require_valid_property_type && !ty.is_empty() && !OPENAPI_TYPES.contains(&ty) {
        let supported: Vec<String> = OPENAPI_TYPES.iter().map(|t| t.to_string()).collect();
        push(
            Rule::ValidPropertyType,
            FieldError::not_supported(&path.child("type"), ty, &supported),
        );
    }
    if s.default.is_some() && !ctx.allow_defaults {
        let mut detail = "must not be set".to_string();
        if !ctx.disallow_defaults_reason.is_empty() {
            detail = format!("{detail} {}", ctx.disallow_defaults_reason);
        }
        push(
            Rule::Always,
            FieldError::forbidden(&path.child("default"), detail),
        );
    }
    let unsupported = [
        ("id", s.id.as_deref().is_some_and(|x| !x.is_empty())),
        ("additionalItems", s.additional_items.is_some()),
        (
            "patternProperties",
            s.pattern_properties.as_ref().is_some_and(|p| !p.is_empty()),
        ),
        (
            "definitions",
            s.definitions.as_ref().is_some_and(|p| !p.is_empty()),
        ),
        ("dependencies", s.dependencies.is_some()),
        ("$ref", s.ref_path.is_some()),
    ];
    for (name, present) in unsupported {
        if present {
            push(
                Rule::Always,
                FieldError::forbidden(&path.child(name), format!("{name} is not supported")),
            );
        }
    }
    if ty == "null" {
        push(
            Rule::Always,
            FieldError::forbidden(
                &path.child("type"),
                "type cannot be set to null, use nullable as an alternative",
            ),
        );
    }
    if matches!(&s.items, Some(JSONSchemaPropsOrArray::Schemas(v)) if !v.is_empty()) {
        push(
            Rule::Always,
            FieldError::forbidden(
                &path.child("items"),
                "items must be a schema object and not an array",
            ),
        );
    }
    if ctx.inside_resource_meta && s.is_embedded() {
        push(
            Rule::Always,
            FieldError::forbidden(
                &path.child("x-kubernetes-embedded-resource"),
                "must not be used inside of resource meta",
            ),
        );
    }
    if s.unique_items == Some(true) {
        push(
            Rule::Always,
            FieldError::forbidden(
                &path.child("uniqueItems"),
                "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
            ),
        );
    }
    if let Some(ap) = &s.additional_properties {
        let restricting = matches!(
            ap,
            JSONSchemaPropsOrBool::Bool(false) | JSONSchemaPropsOrBool::Schema(_)
        );
        if s.has_properties() && restricting {
            push(
                Rule::Always,
                FieldError::forbidden(
                    &path.child("additionalProperties"),
                    "additionalProperties and properties are mutual exclusive",
                ),
            );
        }
        if let JSONSchemaPropsOrBool::Schema(a) = ap {
            // Pruning cannot tell which metadata keys a default would apply to.
            let sub = if ctx.inside_resource_meta {
                ctx.forbid_defaults(
                    "inside additionalProperties applying to object metadata".into(),
                )
            } else {
                ctx.clone()
            };
            openapi(
                a,
                &path.child("additionalProperties"),
                &sub,
                false,
                opts,
                depth + 1,
                out,
            );
        }
    }
    for (k, p) in s.properties.iter().flatten() {
        let mut sub = ctx.clone();
        if (is_root || s.is_embedded()) && META_FIELDS.contains(&k.as_str()) {
            sub.inside_resource_meta = true;
            if is_root {
                sub = sub.forbid_defaults(format!("in top-level {k}"));
            }
        }
        openapi(
            p,
            &path.child("properties").key(k),
            &sub,
            false,
            opts,
            depth + 1,
            out,
        );
    }
    if let Some(not) = &s.not {
        openapi(not, &path.child("not"), ctx, false, opts, depth + 1, out);
    }
    for (name, list) in [
        ("allOf", &s.all_of),
        ("oneOf", &s.one_of),
        ("anyOf", &s.any_of),
    ] {
        for (i, x) in list.iter().flatten().enumerate() {
            openapi(
                x,
                &path.child(name).index(i),
                ctx,
                false,
                opts,
                depth + 1,
                out,
            );
        }
    }
    for (k, x) in s.definitions.iter().flatten() {
        openapi(
            x,
            &path.child("definitions").key(k),
            ctx,
            false,
            opts,
            depth + 1,
            out,
        );
    }
    match &s.items {
        Some(JSONSchemaPropsOrArray::Schema(x)) => {
            openapi(x, &path.child("items"), ctx, false, opts, depth + 1, out)
        }
        Some(JSONSchemaPropsOrArray::Schemas(xs)) => {
            for (i, x) in xs.iter().enumerate() {
                openapi(
                    x,
                    &path.child("items").index(i),
                    ctx,
                    false,
                    opts,
                    depth + 1,
                    out,
                );
            }
        }
        None => {}
    }
    extensions(s, path, opts, out);
    validation_rules(s, path, out);
}

fn extensions(s: &JSONSchemaProps, path: &FieldPath, opts: &SchemaOpts, out: &mut Tagged) {
    let mut push = |rule: Rule, e: FieldError| out.push((rule, e));
    let ty = s.ty();
    if s.x_kubernetes_preserve_unknown_fields == Some(false) {
        push(
            Rule::Always,
            FieldError::invalid(
                &path.child("x-kubernetes-preserve-unknown-fields"),
                false,
                "must be true or undefined",
            ),
        );
    }
    if let Some(map_type) = s.x_kubernetes_map_type.as_deref() {
        let msg = "must be object if x-kubernetes-map-type is specified";
        if ty.is_empty() {
            push(Rule::Always, FieldError::required(&path.child("type"), msg));
        } else if ty != "object" {
            push(
                Rule::Always,
                FieldError::invalid(&path.child("type"), ty, msg),
            );
        }
        if map_type != "atomic" && map_type != "granular" {
            let supported = vec!["atomic".to_string(), "granular".to_string()];
            push(
                Rule::Always,
                FieldError::not_supported(
                    &path.child("x-kubernetes-map-type"),
                    map_type,
                    &supported,
                ),
            );
        }
    }
    let list_type = s.x_kubernetes_list_type.as_deref();
    if list_type.is_some() && ty != "array" {
        let msg = "must be array if x-kubernetes-list-type is specified";
        if ty.is_empty() {
            push(Rule::Always, FieldError::required(&path.child("type"), msg));
        } else {
            push(
                Rule::Always,
                FieldError::invalid(&path.child("type"), ty, msg),
            );
        }
    } else if let (true, Some("set"), Some(items)) =
        (opts.require_atomic_set_type, list_type, s.items_schema())
    {
        let msg = "must be atomic as item of a list with x-kubernetes-list-type=set";
        match items.ty() {
            "array" => {
                if let Some(lt) = items
                    .x_kubernetes_list_type
                    .as_deref()
                    .filter(|lt| *lt != "atomic")
                {
                    push(
                        Rule::AtomicSetType,
                        FieldError::invalid(
                            &path.child("items").child("x-kubernetes-list-type"),
                            lt,
                            msg,
                        ),
                    );
                }
            }
            "object" if items.x_kubernetes_map_type.as_deref() != Some("atomic") => {
                let v = items
                    .x_kubernetes_map_type
                    .clone()
                    .map(Value::String)
                    .unwrap_or(Value::Null);
                push(
                    Rule::AtomicSetType,
                    FieldError::invalid(
                        &path.child("items").child("x-kubernetes-map-type"),
                        v,
                        msg,
                    ),
                );
            }
            _ => {}
        }
    }
    if let Some(lt) = list_type.filter(|lt| !["atomic", "set", "map"].contains(lt)) {
        let supported = vec!["atomic".to_string(), "set".to_string(), "map".to_string()];
        push(
            Rule::Always,
            FieldError::not_supported(&path.child("x-kubernetes-list-type"), lt, &supported),
        );
    }
    let keys: &[String] = s.x_kubernetes_list_map_keys.as_deref().unwrap_or(&[]);
    if !keys.is_empty() {
        let msg = "must be map if x-kubernetes-list-map-keys is non-empty";
        match list_type {
            None => push(
                Rule::Always,
                FieldError::required(&path.child("x-kubernetes-list-type"), msg),
            ),
            Some(lt) if lt != "map" => push(
                Rule::Always,
                FieldError::invalid(&path.child("x-kubernetes-list-type"), lt, msg),
            ),
            _ => {}
        }
    }
    if list_type == Some("map") {
        list_map(s, keys, path, &mut push);
    }
    if opts.require_map_list_keys_map_set {
        map_list_keys_map_set(s, path, &mut push);
    }
}

fn list_map(
    s: &JSONSchemaProps,
    keys: &[String],
    path: &FieldPath,
    push: &mut impl FnMut(Rule, FieldError),
) {
    if keys.is_empty() {
        push(
            Rule::Always,
            FieldError::required(
                &path.child("x-kubernetes-list-map-keys"),
                "must not be empty if x-kubernetes-list-type is map",
            ),
        );
    }
    let items = match &s.items {
        None => {
            push(
                Rule::Always,
                FieldError::required(
                    &path.child("items"),
                    "must have a schema if x-kubernetes-list-type is map",
                ),
            );
            return;
        }
        Some(JSONSchemaPropsOrArray::Schemas(v)) => {
            let value = serde_json::to_value(v).unwrap_or(Value::Null);
            push(
                Rule::Always,
                FieldError::invalid(
                    &path.child("items"),
                    value,
                    "must only have a single schema if x-kubernetes-list-type is map",
                ),
            );
            return;
        }
        Some(JSONSchemaPropsOrArray::Schema(items)) => items,
    };
    if items.ty() != "object" {
        push(
            Rule::Always,
            FieldError::invalid(
                &path.child("items").child("type"),
                items.ty(),
                "must be object if parent array's x-kubernetes-list-type is map",
            ),
        );
        return;
    }
    let keys_value = serde_json::to_value(keys).unwrap_or(Value::Null);
    let mut seen = std::collections::HashSet::new();
    for k in keys {
        match items.property(k) {
            Some(p) if matches!(p.ty(), "array" | "object") => push(
                Rule::Always,
                // Upstream reports the items' type here, not the key's.
                FieldError::invalid(
                    &path.child("items").child("properties").key(k).child("type"),
                    items.ty(),
                    "must be a scalar type if parent array's x-kubernetes-list-type is map",
                ),
            ),
            Some(_) => {}
            None => push(
                Rule::Always,
                FieldError::invalid(
                    &path.child("x-kubernetes-list-map-keys"),
                    keys_value.clone(),
                    "entries must all be names of item properties",
                ),
            ),
        }
        if !seen.insert(k) {
            push(
                Rule::Always,
                FieldError::invalid(
                    &path.child("x-kubernetes-list-map-keys"),
                    keys_value.clone(),
                    "must not contain duplicate entries",
                ),
            );
        }
    }
}

/// Items of set/map lists are never null, and map keys always have a value.
fn map_list_keys_map_set(
    s: &JSONSchemaProps,
    path: &FieldPath,
    push: &mut impl FnMut(Rule, FieldError),
) {
    let (Some(lt), Some(items)) = (s.x_kubernetes_list_type.as_deref(), s.items_schema()) else {
        return;
    };
    if lt != "set" && lt != "map" {
        return;
    }
    if items.is_nullable() {
        push(
            Rule::MapListKeysMapSet,
            FieldError::forbidden(
                &path.child("items").child("nullable"),
                format!("cannot be nullable when x-kubernetes-list-type is {lt}"),
            ),
        );
    }
    if lt != "map" {
        return;
    }
    let required: &[String] = items.required.as_deref().unwrap_or(&[]);
    for k in s.x_kubernetes_list_map_keys.iter().flatten() {
        let Some(p) = items.property(k) else { continue };
        let kp = path.child("items").child("properties").key(k);
        if !required.contains(k) && p.default.is_none() {
            push(
                Rule::MapListKeysMapSet,
                FieldError::required(&kp.child("default"), "this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property"),
            );
        }
        if p.is_nullable() {
            push(
                Rule::MapListKeysMapSet,
                FieldError::forbidden(
                    &kp.child("nullable"),
                    "this property is in x-kubernetes-list-map-keys, so it cannot be nullable",
                ),
            );
        }
    }
}

/// The parts of `x-kubernetes-validations` checking that do not need a CEL compiler.
fn validation_rules(s: &JSONSchemaProps, path: &FieldPath, out: &mut Tagged) {
    let has_newline = |t: &str| t.contains('\n') || t.contains('\r');
    for (i, rule) in s.x_kubernetes_validations.iter().flatten().enumerate() {
        let p = path.child("x-kubernetes-validations").index(i);
        let mut push = |e: FieldError| out.push((Rule::Always, e));
        let trimmed_rule = rule.rule.trim();
        let message = rule.message.as_deref().unwrap_or("");
        let trimmed_msg = message.trim();
        if trimmed_rule.is_empty() {
            push(FieldError::required(
                &p.child("rule"),
                "rule is not specified",
            ));
        } else if !message.is_empty() && trimmed_msg.is_empty() {
            push(FieldError::invalid(
                &p.child("message"),
                message,
                "message must be non-empty if specified",
            ));
        } else if has_newline(trimmed_msg) {
            push(FieldError::invalid(
                &p.child("message"),
                message,
                "message must not contain line breaks",
            ));
        } else if has_newline(trimmed_rule) && trimmed_msg.is_empty() {
            push(FieldError::required(
                &p.child("message"),
                "message must be specified if rule contains line breaks",
            ));
        }
        if let Some(me) = rule.message_expression.as_deref() {
            if !me.is_empty() && me.trim().is_empty() {
                push(FieldError::required(
                    &p.child("messageExpression"),
                    "messageExpression must be non-empty if specified",
                ));
            }
        }
        if let Some(reason) = rule.reason.as_deref() {
            if !VALIDATION_REASONS.contains(&reason) {
                let supported: Vec<String> =
                    VALIDATION_REASONS.iter().map(|r| r.to_string()).collect();
                push(FieldError::not_supported(
                    &p.child("reason"),
                    reason,
                    &supported,
                ));
            }
        }
        if let Some(fp) = rule.field_path.as_deref() {
            if !fp.is_empty() && fp.trim().is_empty() {
                push(FieldError::invalid(
                    &p.child("fieldPath"),
                    fp,
                    "fieldPath must be non-empty if specified",
                ));
            }
            if has_newline(fp) {
                push(FieldError::invalid(
                    &p.child("fieldPath"),
                    fp,
                    "fieldPath must not contain line breaks",
                ));
            }
        }
    }
}

/// Upstream `ValidateDefaults`: every default outside resource metadata must survive pruning
/// unchanged and validate against the schema it sits in. `embedded` is true at the resource
/// root and below `x-kubernetes-embedded-resource`.
fn defaults(
    s: &JSONSchemaProps,
    path: &FieldPath,
    embedded: bool,
    inside_meta: bool,
    opts: &SchemaOpts,
    depth: usize,
    out: &mut Tagged,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let (embedded, inside_meta) = if s.is_embedded() {
        (true, false)
    } else {
        (embedded, inside_meta)
    };
    // Defaults inside metadata are forbidden at the top level by `openapi`; inside embedded
    // resources upstream validates them in a synthetic surrounding object, which is not copied.
    if let (Some(d), false) = (&s.default, inside_meta) {
        let dp = path.child("default");
        if opts.require_pruned_defaults {
            let mut pruned = d.0.clone();
            prune_at(s, &mut pruned, s.is_embedded());
            if pruned != d.0 {
                out.push((
                    Rule::PrunedDefaults,
                    FieldError::invalid(&dp, d.0.clone(), "must not have unknown fields"),
                ));
            }
        }
        out.extend(
            validate_value(s, &d.0, &dp)
                .into_iter()
                .map(|e| (Rule::Always, e)),
        );
    }
    // Defaults under additionalProperties are only ever checked at their own level.
    if let Some(items) = s.items_schema() {
        defaults(
            items,
            &path.child("items"),
            false,
            inside_meta,
            opts,
            depth + 1,
            out,
        );
    }
    for (k, p) in s.properties.iter().flatten() {
        let sub_meta = inside_meta || (embedded && META_FIELDS.contains(&k.as_str()));
        defaults(
            p,
            &path.child("properties").key(k),
            false,
            sub_meta,
            opts,
            depth + 1,
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(schema: Value, status_enabled: bool) -> Vec<String> {
        let s: JSONSchemaProps = serde_json::from_value(schema).expect("test schema decodes");
        validate_version_schema(
            &s,
            status_enabled,
            &SchemaOpts::strict(),
            &FieldPath::new("s"),
        )
        .iter()
        .map(|e| e.to_string())
        .collect()
    }

    fn with_field(field: Value) -> Value {
        json!({"type": "object", "properties": {"f": field}})
    }

    #[test]
    fn schema_rules() {
        let p = "s.openAPIV3Schema.properties[f]";
        let cases: Vec<(&str, Value, bool, Vec<String>)> = vec![
            ("plain string field", with_field(json!({"type": "string"})), false, vec![]),
            (
                "root nullable",
                json!({"type": "object", "nullable": true}),
                false,
                vec!["s.openAPIV3Schema.nullable: Forbidden: nullable cannot be true at the root".into()],
            ),
            (
                "status subresource needs an object root",
                json!({"type": "array", "items": {"type": "string"}}),
                true,
                vec![
                    r#"s.openAPIV3Schema.type: Invalid value: "array": only "object" is allowed as the type at the root of the schema if the status subresource is enabled"#.into(),
                    r#"s.openAPIV3Schema.type: Invalid value: "array": must be object at the root"#.into(),
                ],
            ),
            (
                "set of objects must be atomic",
                with_field(json!({"type": "array", "x-kubernetes-list-type": "set",
                    "items": {"type": "object", "properties": {"a": {"type": "string"}}}})),
                false,
                vec![format!("{p}.items.x-kubernetes-map-type: Invalid value: null: must be atomic as item of a list with x-kubernetes-list-type=set")],
            ),
            (
                "unknown list and map types",
                with_field(json!({"type": "array", "x-kubernetes-list-type": "bag", "items": {"type": "object",
                    "x-kubernetes-map-type": "loose", "properties": {"a": {"type": "string"}}}})),
                false,
                vec![
                    format!(r#"{p}.items.x-kubernetes-map-type: Unsupported value: "loose": supported values: "atomic", "granular""#),
                    format!(r#"{p}.x-kubernetes-list-type: Unsupported value: "bag": supported values: "atomic", "set", "map""#),
                ],
            ),
            (
                "list-map-keys without list type map",
                with_field(json!({"type": "array", "x-kubernetes-list-map-keys": ["a"], "items": {"type": "string"}})),
                false,
                vec![format!("{p}.x-kubernetes-list-type: Required value: must be map if x-kubernetes-list-map-keys is non-empty")],
            ),
            (
                "preserve-unknown-fields false",
                with_field(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": false})),
                false,
                vec![format!("{p}.x-kubernetes-preserve-unknown-fields: Invalid value: false: must be true or undefined")],
            ),
            (
                "validation rule shape (CEL itself is not compiled)",
                with_field(json!({"type": "string", "x-kubernetes-validations": [
                    {"rule": "  "}, {"rule": "self.size() > 1", "reason": "Nope"}, {"rule": "self == 'a'", "message": "two\nlines"}]})),
                false,
                vec![
                    format!("{p}.x-kubernetes-validations[0].rule: Required value: rule is not specified"),
                    format!(r#"{p}.x-kubernetes-validations[1].reason: Unsupported value: "Nope": supported values: "FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired""#),
                    format!(r#"{p}.x-kubernetes-validations[2].message: Invalid value: "two\nlines": message must not contain line breaks"#),
                ],
            ),
            (
                "embedded resource inside metadata",
                json!({"type": "object", "properties": {"metadata": {"type": "object", "x-kubernetes-embedded-resource": true,
                    "x-kubernetes-preserve-unknown-fields": true}}}),
                false,
                vec![
                    "s.openAPIV3Schema.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified".into(),
                    "s.openAPIV3Schema.properties[metadata].x-kubernetes-embedded-resource: Forbidden: must not be used inside of resource meta".into(),
                ],
            ),
        ];
        for (name, schema, status, want) in cases {
            assert_eq!(errors(schema, status), want, "{name}");
        }
    }

    #[test]
    fn update_options_relax_only_broken_rules() {
        let mut old: CustomResourceDefinition =
            serde_json::from_value(super::super::fixtures::crontab_json()).expect("decodes");
        assert_eq!(SchemaOpts::for_update(&old), SchemaOpts::strict());
        if let Some(s) = old.spec.versions[0]
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            s.type_ = Some("objekt".into());
        }
        let relaxed = SchemaOpts::for_update(&old);
        assert!(!relaxed.require_valid_property_type);
        assert!(
            relaxed.require_pruned_defaults
                && relaxed.require_atomic_set_type
                && relaxed.require_map_list_keys_map_set
        );
    }
}
