//! Static validation of `CustomResourceDefinition` objects on create and update (upstream
//! `apis/apiextensions/validation/validation.go`, for the v1 API) and the API defaulting that
//! must run before it (`apis/apiextensions/v1/defaults.go`).
//!
//! Covered: metadata.name (`<plural>.<group>`), group, scope, names (plural, singular, kind,
//! listKind, shortNames, categories), versions (DNS-1035 names, unique, exactly one storage
//! version, schema required, deprecation warnings, per-version schema via
//! [`super::validate_schema`], subresources, printer columns), conversion, the
//! `api-approved.kubernetes.io` annotation for protected groups, `preserveUnknownFields`,
//! status.acceptedNames and status.storedVersions; on update also the immutability of group and
//! plural (and of scope and kind once established).
//!
//! Paths and messages are upstream's. Where upstream validates its *internal* type, paths follow
//! the internal field names (e.g. `spec.conversion.webhookClientConfig`,
//! `additionalPrinterColumns[0].JSONPath`), exactly as a real API server reports them.
//!
//! Not covered: `selectableFields`, CEL compilation/cost of `x-kubernetes-validations`,
//! generic ObjectMeta validation (labels, annotations syntax...), which the caller's generic
//! object-meta validation handles for every resource.

use super::conditions::{stored_versions, ESTABLISHED};
use super::field_error::{FieldError, FieldPath};
use super::names::{dns1035_label, dns1123_subdomain};
use super::validate_schema::{validate_version_schema, SchemaOpts};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceConversion, CustomResourceDefinition,
    CustomResourceDefinitionNames, CustomResourceDefinitionSpec, CustomResourceDefinitionVersion,
    CustomResourceSubresources,
};
use serde_json::Value;

const APPROVAL_ANNOTATION: &str = "api-approved.kubernetes.io";
const PRINTER_COLUMN_TYPES: [&str; 5] = ["boolean", "date", "integer", "number", "string"];
const PRINTER_COLUMN_FORMATS: [&str; 8] = [
    "byte",
    "date",
    "date-time",
    "double",
    "float",
    "int32",
    "int64",
    "password",
];
const CONVERSION_REVIEW_VERSIONS: [&str; 2] = ["v1", "v1beta1"];

/// v1 API defaulting of a CRD: `singular` = lowercased kind, `listKind` = kind + "List",
/// conversion strategy `None`, webhook service port 443. Run on decode, before validation.
pub fn set_crd_defaults(crd: &mut CustomResourceDefinition) {
    let names = &mut crd.spec.names;
    if names.singular.as_deref().unwrap_or("").is_empty() {
        names.singular = Some(names.kind.to_lowercase());
    }
    if names.list_kind.as_deref().unwrap_or("").is_empty() && !names.kind.is_empty() {
        names.list_kind = Some(format!("{}List", names.kind));
    }
    let conversion = crd
        .spec
        .conversion
        .get_or_insert_with(|| CustomResourceConversion {
            strategy: "None".to_string(),
            webhook: None,
        });
    let service = conversion
        .webhook
        .as_mut()
        .and_then(|w| w.client_config.as_mut())
        .and_then(|c| c.service.as_mut());
    if let Some(svc) = service {
        svc.port.get_or_insert(443);
    }
}

/// Options that differ between create and update (upstream `validationOptions`).
struct Opts {
    schema: SchemaOpts,
    require_openapi_schema: bool,
}

/// Validates a CRD being created. Any client-supplied `status` is ignored, as upstream's
/// `PrepareForCreate` discards it: the caller must not store it either, and fills status with
/// [`super::reconcile_status`] afterwards. `status.storedVersions` is checked as it will be
/// stored, i.e. as the storage version alone.
pub fn validate_crd(crd: &CustomResourceDefinition) -> Vec<FieldError> {
    let opts = Opts {
        schema: SchemaOpts::strict(),
        require_openapi_schema: true,
    };
    let mut errs = validate_metadata_name(crd);
    errs.extend(validate_spec(&crd.spec, &opts, &FieldPath::new("spec")));
    let mut as_stored = crd.clone();
    as_stored.status = None;
    errs.extend(validate_stored_versions(
        &stored_versions(&as_stored),
        &crd.spec.versions,
    ));
    errs.extend(validate_api_approval(crd, None));
    errs.extend(validate_preserve_unknown_fields(crd, None));
    errs
}

/// Validates a write to the `status` subresource (upstream
/// `ValidateUpdateCustomResourceDefinitionStatus`): the accepted names must be well-formed.
pub fn validate_crd_status(crd: &CustomResourceDefinition) -> Vec<FieldError> {
    validate_status_names(crd)
}

/// Validates an update from `old` to `new`. Rules tightened since `old` was stored are relaxed
/// when `old` already broke them, as upstream does, so stored CRDs stay updatable.
pub fn validate_crd_update(
    old: &CustomResourceDefinition,
    new: &CustomResourceDefinition,
) -> Vec<FieldError> {
    let opts = Opts {
        schema: SchemaOpts::for_update(old),
        require_openapi_schema: old.spec.versions.iter().all(|v| {
            v.schema
                .as_ref()
                .is_some_and(|s| s.open_api_v3_schema.is_some())
        }),
    };
    let spec_path = FieldPath::new("spec");
    let mut errs = Vec::new();
    if new.metadata.name != old.metadata.name {
        let v = new.metadata.name.clone().unwrap_or_default();
        errs.push(FieldError::invalid(
            &FieldPath::new("metadata").child("name"),
            v,
            "field is immutable",
        ));
    }
    errs.extend(validate_spec(&new.spec, &opts, &spec_path));
    let established = old
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == ESTABLISHED && c.status == "True");
    let mut immutable = vec![
        (
            "group",
            Value::from(new.spec.group.clone()),
            Value::from(old.spec.group.clone()),
        ),
        (
            "names.plural",
            Value::from(new.spec.names.plural.clone()),
            Value::from(old.spec.names.plural.clone()),
        ),
    ];
    if established {
        // Scope and kind are baked into stored objects once anything may have been stored.
        immutable.push((
            "scope",
            Value::from(new.spec.scope.clone()),
            Value::from(old.spec.scope.clone()),
        ));
        immutable.push((
            "names.kind",
            Value::from(new.spec.names.kind.clone()),
            Value::from(old.spec.names.kind.clone()),
        ));
    }
    for (field, new_v, old_v) in immutable {
        if new_v != old_v {
            let path = field
                .split('.')
                .fold(spec_path.clone(), |p, seg| p.child(seg));
            errs.push(FieldError::invalid(&path, new_v, "field is immutable"));
        }
    }
    // Upstream's PrepareForUpdate keeps the old status (the caller must too: status is only
    // written through the status subresource) and appends the new storage version.
    let mut effective = new.clone();
    effective.status = old.status.clone();
    errs.extend(validate_stored_versions(
        &stored_versions(&effective),
        &new.spec.versions,
    ));
    errs.extend(validate_api_approval(new, Some(old)));
    errs.extend(validate_preserve_unknown_fields(new, Some(old)));
    errs
}

fn validate_metadata_name(crd: &CustomResourceDefinition) -> Vec<FieldError> {
    let path = FieldPath::new("metadata").child("name");
    let name = crd.metadata.name.as_deref().unwrap_or("");
    if name.is_empty() {
        return vec![FieldError::required(
            &path,
            "name or generateName is required",
        )];
    }
    let mut msgs = dns1123_subdomain(name);
    if name != format!("{}.{}", crd.spec.names.plural, crd.spec.group) {
        msgs.push(r#"must be spec.names.plural+"."+spec.group"#.to_string());
    }
    msgs.into_iter()
        .map(|m| FieldError::invalid(&path, name, m))
        .collect()
}

fn validate_spec(
    spec: &CustomResourceDefinitionSpec,
    opts: &Opts,
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let group_path = path.child("group");
    if spec.group.is_empty() {
        errs.push(FieldError::required(&group_path, ""));
    } else if let msgs @ [_, ..] = dns1123_subdomain(&spec.group).as_slice() {
        errs.push(FieldError::invalid(
            &group_path,
            spec.group.as_str(),
            msgs.join(","),
        ));
    } else if !spec.group.contains('.') {
        errs.push(FieldError::invalid(
            &group_path,
            spec.group.as_str(),
            "should be a domain with at least one dot",
        ));
    }

    let scope_path = path.child("scope");
    match spec.scope.as_str() {
        "" => errs.push(FieldError::required(&scope_path, "")),
        "Cluster" | "Namespaced" => {}
        other => errs.push(FieldError::not_supported(
            &scope_path,
            other,
            &["Cluster".into(), "Namespaced".into()],
        )),
    }

    let preserve = spec.preserve_unknown_fields == Some(true);
    for (i, v) in spec.versions.iter().enumerate() {
        let has_schema = v
            .schema
            .as_ref()
            .is_some_and(|s| s.open_api_v3_schema.is_some());
        let schema_path = path
            .child("versions")
            .index(i)
            .child("schema")
            .child("openAPIV3Schema");
        if opts.require_openapi_schema && !has_schema {
            errs.push(FieldError::required(&schema_path, "schemas are required"));
        } else if !opts.require_openapi_schema && !preserve && v.served && !has_schema {
            errs.push(FieldError::required(
                &schema_path,
                "because otherwise all fields are pruned",
            ));
        }
    }

    let versions_path = path.child("versions");
    let mut seen = std::collections::HashSet::new();
    let mut unique = true;
    for (i, v) in spec.versions.iter().enumerate() {
        unique &= seen.insert(v.name.as_str());
        let vp = versions_path.index(i);
        let msgs = dns1035_label(&v.name);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(
                &vp.child("name"),
                v.name.as_str(),
                msgs.join(","),
            ));
        }
        errs.extend(validate_version(v, &vp, opts));
    }
    let versions_value = || serde_json::to_value(&spec.versions).unwrap_or(Value::Null);
    if !unique {
        errs.push(FieldError::invalid(
            &versions_path,
            versions_value(),
            "must contain unique version names",
        ));
    }
    if spec.versions.iter().filter(|v| v.storage).count() != 1 {
        errs.push(FieldError::invalid(
            &versions_path,
            versions_value(),
            "must have exactly one version marked as storage version",
        ));
    }

    let names_path = path.child("names");
    let required_names = [
        ("plural", spec.names.plural.is_empty()),
        (
            "singular",
            spec.names.singular.as_deref().unwrap_or("").is_empty(),
        ),
        ("kind", spec.names.kind.is_empty()),
        (
            "listKind",
            spec.names.list_kind.as_deref().unwrap_or("").is_empty(),
        ),
    ];
    for (name, missing) in required_names {
        if missing {
            errs.push(FieldError::required(&names_path.child(name), ""));
        }
    }
    errs.extend(validate_names(&spec.names, &names_path));
    errs.extend(validate_conversion(
        spec.conversion.as_ref(),
        preserve,
        &path.child("conversion"),
    ));
    errs
}

fn validate_version(
    v: &CustomResourceDefinitionVersion,
    path: &FieldPath,
    opts: &Opts,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for msg in
        deprecation_warning_errors(v.deprecated == Some(true), v.deprecation_warning.as_deref())
    {
        let value = v.deprecation_warning.clone().unwrap_or_default();
        errs.push(FieldError::invalid(
            &path.child("deprecationWarning"),
            value,
            msg,
        ));
    }
    let status_enabled = v.subresources.as_ref().is_some_and(|s| s.status.is_some());
    if let Some(schema) = v
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
    {
        errs.extend(validate_version_schema(
            schema,
            status_enabled,
            &opts.schema,
            &path.child("schema"),
        ));
    }
    if let Some(sub) = &v.subresources {
        errs.extend(validate_subresources(sub, &path.child("subresources")));
    }
    for (i, col) in v.additional_printer_columns.iter().flatten().enumerate() {
        errs.extend(validate_column(
            col,
            &path.child("additionalPrinterColumns").index(i),
        ));
    }
    errs
}

fn deprecation_warning_errors(deprecated: bool, warning: Option<&str>) -> Vec<String> {
    let Some(w) = warning else { return vec![] };
    if !deprecated {
        return vec!["can only be set for deprecated versions".into()];
    }
    let mut errs = Vec::new();
    if w.len() > 256 {
        errs.push("must be <= 256 characters long".into());
    }
    if w.is_empty() {
        errs.push("must not be an empty string".into());
    }
    if let Some((i, _)) = w.char_indices().find(|(_, c)| c.is_control()) {
        errs.push(format!(
            "must only contain printable UTF-8 characters; control character found at index {i}"
        ));
    }
    errs
}

/// `IsDNS1035Label` on the lowercased value, for kinds, with upstream's prefix.
fn kind_errors(kind: &str) -> Option<String> {
    let msgs = dns1035_label(&kind.to_lowercase());
    (!msgs.is_empty()).then(|| {
        format!(
            "may have mixed case, but should otherwise match: {}",
            msgs.join(",")
        )
    })
}

fn validate_names(names: &CustomResourceDefinitionNames, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    // Plural and singular may be empty here (required-ness is checked for spec only); short
    // names and categories are checked even when empty, as upstream does.
    for (field, value) in [
        ("plural", names.plural.as_str()),
        ("singular", names.singular.as_deref().unwrap_or("")),
    ] {
        if !value.is_empty() {
            label_into(&mut errs, path.child(field), value);
        }
    }
    for (i, s) in names.short_names.iter().flatten().enumerate() {
        label_into(&mut errs, path.child("shortNames").index(i), s);
    }
    let list_kind = names.list_kind.as_deref().unwrap_or("");
    for (field, value) in [("kind", names.kind.as_str()), ("listKind", list_kind)] {
        if let Some(msg) = kind_errors(value).filter(|_| !value.is_empty()) {
            errs.push(FieldError::invalid(&path.child(field), value, msg));
        }
    }
    if !names.kind.is_empty() && names.kind == list_kind {
        errs.push(FieldError::invalid(
            &path.child("listKind"),
            list_kind,
            "kind and listKind may not be the same",
        ));
    }
    for (i, c) in names.categories.iter().flatten().enumerate() {
        label_into(&mut errs, path.child("categories").index(i), c);
    }
    errs
}

fn label_into(errs: &mut Vec<FieldError>, path: FieldPath, value: &str) {
    let msgs = dns1035_label(value);
    if !msgs.is_empty() {
        errs.push(FieldError::invalid(&path, value, msgs.join(",")));
    }
}

fn validate_status_names(crd: &CustomResourceDefinition) -> Vec<FieldError> {
    match crd.status.as_ref().and_then(|s| s.accepted_names.as_ref()) {
        Some(names) => validate_names(names, &FieldPath::new("status").child("acceptedNames")),
        None => vec![],
    }
}

fn validate_stored_versions(
    stored: &[String],
    versions: &[CustomResourceDefinitionVersion],
) -> Vec<FieldError> {
    let path = FieldPath::new("status").child("storedVersions");
    if stored.is_empty() {
        return vec![FieldError::invalid(
            &path,
            Value::Array(vec![]),
            "must have at least one stored version",
        )];
    }
    let mut errs = Vec::new();
    for v in versions
        .iter()
        .filter(|v| v.storage && !stored.contains(&v.name))
    {
        errs.push(FieldError::invalid(
            &path,
            stored.to_vec(),
            format!("must have the storage version {}", v.name),
        ));
    }
    for (i, s) in stored.iter().enumerate() {
        if !versions.iter().any(|v| &v.name == s) {
            errs.push(FieldError::invalid(
                &path.index(i),
                s.as_str(),
                format!(
                    "missing from spec.versions; {s} was previously a storage version, and must remain in spec.versions until a storage migration ensures no data remains persisted in {s} and removes {s} from status.storedVersions"
                ),
            ));
        }
    }
    errs
}

fn validate_subresources(sub: &CustomResourceSubresources, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(scale) = &sub.scale else { return errs };
    let checks = [
        (
            "scale.specReplicasPath",
            scale.spec_replicas_path.as_str(),
            &[".spec."][..],
            "should be a json path under .spec",
        ),
        (
            "scale.statusReplicasPath",
            scale.status_replicas_path.as_str(),
            &[".status."][..],
            "should be a json path under .status",
        ),
    ];
    for (field, value, prefixes, msg) in checks {
        let p = path.child(field);
        if value.is_empty() {
            errs.push(FieldError::required(&p, ""));
        } else if let Some(e) = simple_json_path_error(value, &p) {
            errs.push(e);
        } else if !prefixes.iter().any(|pre| value.starts_with(pre)) {
            errs.push(FieldError::invalid(&p, value, msg));
        }
    }
    if let Some(sel) = scale
        .label_selector_path
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        let p = path.child("scale.labelSelectorPath");
        if let Some(e) = simple_json_path_error(sel, &p) {
            errs.push(e);
        } else if !sel.starts_with(".spec.") && !sel.starts_with(".status.") {
            errs.push(FieldError::invalid(
                &p,
                sel,
                "should be a json path under either .spec or .status",
            ));
        }
    }
    errs
}

fn simple_json_path_error(s: &str, path: &FieldPath) -> Option<FieldError> {
    if s.is_empty() {
        Some(FieldError::invalid(path, s, "must not be empty"))
    } else if !s.starts_with('.') {
        Some(FieldError::invalid(
            path,
            s,
            "must be a simple json path starting with .",
        ))
    } else {
        None
    }
}

fn validate_column(col: &CustomResourceColumnDefinition, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if col.name.is_empty() {
        errs.push(FieldError::required(&path.child("name"), ""));
    }
    let types_msg = format!("must be one of {}", PRINTER_COLUMN_TYPES.join(","));
    if col.type_.is_empty() {
        errs.push(FieldError::required(&path.child("type"), types_msg));
    } else if !PRINTER_COLUMN_TYPES.contains(&col.type_.as_str()) {
        errs.push(FieldError::invalid(
            &path.child("type"),
            col.type_.as_str(),
            types_msg,
        ));
    }
    if let Some(f) = col
        .format
        .as_deref()
        .filter(|f| !f.is_empty() && !PRINTER_COLUMN_FORMATS.contains(f))
    {
        errs.push(FieldError::invalid(
            &path.child("format"),
            f,
            format!("must be one of {}", PRINTER_COLUMN_FORMATS.join(",")),
        ));
    }
    let jp = path.child("JSONPath");
    if col.json_path.is_empty() {
        errs.push(FieldError::required(&jp, ""));
    } else if let Some(e) = simple_json_path_error(&col.json_path, &jp) {
        errs.push(e);
    }
    errs
}

fn validate_conversion(
    conv: Option<&CustomResourceConversion>,
    preserve: bool,
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(conv) = conv else { return errs };
    let strategy_path = path.child("strategy");
    if conv.strategy != "None" && preserve {
        errs.push(FieldError::invalid(
            &strategy_path,
            conv.strategy.as_str(),
            "must be None if spec.preserveUnknownFields is true",
        ));
    }
    match conv.strategy.as_str() {
        "" => errs.push(FieldError::required(&strategy_path, "")),
        "None" | "Webhook" => {}
        other => errs.push(FieldError::not_supported(
            &strategy_path,
            other,
            &["None".into(), "Webhook".into()],
        )),
    }
    let client_config = conv.webhook.as_ref().and_then(|w| w.client_config.as_ref());
    let review_versions: &[String] = conv
        .webhook
        .as_ref()
        .map(|w| w.conversion_review_versions.as_slice())
        .unwrap_or(&[]);
    let cc_path = path.child("webhookClientConfig");
    let rv_path = path.child("conversionReviewVersions");
    if conv.strategy != "Webhook" {
        let not_webhook = "should not be set when strategy is not set to Webhook";
        if client_config.is_some() {
            errs.push(FieldError::forbidden(&cc_path, not_webhook));
        }
        if !review_versions.is_empty() {
            errs.push(FieldError::forbidden(&rv_path, not_webhook));
        }
        return errs;
    }
    match client_config {
        None => errs.push(FieldError::required(
            &cc_path,
            "required when strategy is set to Webhook",
        )),
        Some(cc) => match (&cc.url, &cc.service) {
            (Some(url), None) => {
                if !url.starts_with("https://") {
                    errs.push(FieldError::invalid(
                        &cc_path.child("url"),
                        url.as_str(),
                        "'https' is the only allowed URL scheme",
                    ));
                }
            }
            (None, Some(svc)) => {
                let sp = cc_path.child("service");
                if svc.name.is_empty() {
                    errs.push(FieldError::required(
                        &sp.child("name"),
                        "service name is required",
                    ));
                }
                if svc.namespace.is_empty() {
                    errs.push(FieldError::required(
                        &sp.child("namespace"),
                        "service namespace is required",
                    ));
                }
            }
            _ => errs.push(FieldError::required(
                &cc_path,
                "exactly one of url or service is required",
            )),
        },
    }
    if review_versions.is_empty() {
        errs.push(FieldError::required(&rv_path, ""));
    } else {
        let mut seen = std::collections::HashSet::new();
        for (i, v) in review_versions.iter().enumerate() {
            if !seen.insert(v) {
                errs.push(FieldError::invalid(
                    &rv_path.index(i),
                    v.as_str(),
                    "duplicate version",
                ));
                continue;
            }
            for m in dns1035_label(v) {
                errs.push(FieldError::invalid(&rv_path.index(i), v.as_str(), m));
            }
        }
        if !review_versions
            .iter()
            .any(|v| CONVERSION_REVIEW_VERSIONS.contains(&v.as_str()))
        {
            errs.push(FieldError::invalid(
                &rv_path,
                review_versions.to_vec(),
                format!(
                    "must include at least one of {}",
                    CONVERSION_REVIEW_VERSIONS.join(", ")
                ),
            ));
        }
    }
    errs
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Approval {
    Missing,
    Invalid,
    Approved,
    Bypassed,
}

fn approval_state(crd: &CustomResourceDefinition) -> Approval {
    match crd
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(APPROVAL_ANNOTATION))
    {
        None => Approval::Missing,
        Some(v) if v.starts_with("unapproved") => Approval::Bypassed,
        Some(v) if v.starts_with("https://") || v.starts_with("http://") => Approval::Approved,
        Some(_) => Approval::Invalid,
    }
}

/// Groups under `k8s.io`/`kubernetes.io` belong to the Kubernetes project and need an approval
/// annotation; the check only fires when the approval state changes.
fn validate_api_approval(
    new: &CustomResourceDefinition,
    old: Option<&CustomResourceDefinition>,
) -> Vec<FieldError> {
    let g = new.spec.group.as_str();
    let protected = ["k8s.io", "kubernetes.io"]
        .iter()
        .any(|d| g == *d || g.ends_with(&format!(".{d}")));
    if !protected {
        return vec![];
    }
    let state = approval_state(new);
    if old.is_some_and(|o| approval_state(o) == state) {
        return vec![];
    }
    let path = FieldPath::new("metadata")
        .child("annotations")
        .key(APPROVAL_ANNOTATION);
    let see = "see https://github.com/kubernetes/enhancements/pull/1111";
    match state {
        Approval::Missing => vec![FieldError::required(
            &path,
            format!(
                "protected groups must have approval annotation {APPROVAL_ANNOTATION:?}, {see}"
            ),
        )],
        Approval::Invalid => {
            let v = new
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(APPROVAL_ANNOTATION))
                .cloned()
                .unwrap_or_default();
            vec![FieldError::invalid(
                &path,
                v,
                format!("protected groups must have approval annotation {APPROVAL_ANNOTATION:?} with either a URL or a reason starting with \"unapproved\", {see}"),
            )]
        }
        Approval::Approved | Approval::Bypassed => vec![],
    }
}

/// v1 CRDs cannot newly opt out of pruning; ones stored with it may keep it.
fn validate_preserve_unknown_fields(
    new: &CustomResourceDefinition,
    old: Option<&CustomResourceDefinition>,
) -> Vec<FieldError> {
    let was = old.is_some_and(|o| o.spec.preserve_unknown_fields == Some(true));
    if new.spec.preserve_unknown_fields == Some(true) && !was {
        return vec![FieldError::invalid(
            &FieldPath::new("spec").child("preserveUnknownFields"),
            true,
            "cannot set to true, set x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead",
        )];
    }
    vec![]
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{crontab, crontab_json};
    use super::*;
    use serde_json::json;

    type Mutation = Box<dyn Fn(&mut Value)>;

    fn crd_with(mutate: &dyn Fn(&mut Value)) -> CustomResourceDefinition {
        let mut v = crontab_json();
        mutate(&mut v);
        let mut crd: CustomResourceDefinition =
            serde_json::from_value(v).expect("test CRD decodes");
        set_crd_defaults(&mut crd);
        crd
    }

    fn schema_mut(v: &mut Value) -> &mut Value {
        &mut v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    }

    const DNS1035: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

    #[test]
    fn create() {
        let cases: Vec<(&str, Mutation, Vec<String>)> = vec![
            ("valid crontab", Box::new(|_| {}), vec![]),
            (
                "group without a dot",
                Box::new(|v| {
                    v["spec"]["group"] = json!("example");
                    v["metadata"]["name"] = json!("crontabs.example");
                }),
                vec![r#"spec.group: Invalid value: "example": should be a domain with at least one dot"#.into()],
            ),
            (
                "name is not plural.group",
                Box::new(|v| v["metadata"]["name"] = json!("crontab.stable.example.com")),
                vec![r#"metadata.name: Invalid value: "crontab.stable.example.com": must be spec.names.plural+"."+spec.group"#.into()],
            ),
            ("missing name", Box::new(|v| v["metadata"]["name"] = json!(null)), vec!["metadata.name: Required value: name or generateName is required".into()]),
            (
                "bad scope",
                Box::new(|v| v["spec"]["scope"] = json!("Global")),
                vec![r#"spec.scope: Unsupported value: "Global": supported values: "Cluster", "Namespaced""#.into()],
            ),
            (
                "bad names",
                Box::new(|v| {
                    v["spec"]["names"]["shortNames"] = json!(["CT"]);
                    v["spec"]["names"]["kind"] = json!("Cron_Tab");
                    v["spec"]["names"]["listKind"] = json!("Cron_Tab");
                }),
                vec![
                    format!(r#"spec.names.shortNames[0]: Invalid value: "CT": {DNS1035}"#),
                    format!(r#"spec.names.kind: Invalid value: "Cron_Tab": may have mixed case, but should otherwise match: {DNS1035}"#),
                    format!(r#"spec.names.listKind: Invalid value: "Cron_Tab": may have mixed case, but should otherwise match: {DNS1035}"#),
                    r#"spec.names.listKind: Invalid value: "Cron_Tab": kind and listKind may not be the same"#.into(),
                ],
            ),
            ("missing kind", Box::new(|v| v["spec"]["names"]["kind"] = json!("")), vec!["spec.names.kind: Required value".into(), "spec.names.listKind: Required value".into()]),
            (
                "two storage versions",
                Box::new(|v| {
                    let mut v2 = v["spec"]["versions"][0].clone();
                    v2["name"] = json!("v2");
                    v["spec"]["versions"].as_array_mut().expect("versions").push(v2);
                }),
                vec![
                    "spec.versions: Invalid value: …: must have exactly one version marked as storage version".into(),
                    // As upstream: only the first storage version is recorded on create.
                    r#"status.storedVersions: Invalid value: ["v1"]: must have the storage version v2"#.into(),
                ],
            ),
            (
                "duplicate version names and a bad one",
                Box::new(|v| {
                    let mut v2 = v["spec"]["versions"][0].clone();
                    v2["storage"] = json!(false);
                    v["spec"]["versions"].as_array_mut().expect("versions").push(v2);
                    let mut v3 = v["spec"]["versions"][0].clone();
                    v3["storage"] = json!(false);
                    v3["name"] = json!("V3");
                    v["spec"]["versions"].as_array_mut().expect("versions").push(v3);
                }),
                vec![format!(r#"spec.versions[2].name: Invalid value: "V3": {DNS1035}"#), "spec.versions: Invalid value: …: must contain unique version names".into()],
            ),
            (
                "schema is required",
                Box::new(|v| v["spec"]["versions"][0]["schema"] = json!(null)),
                vec!["spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required".into()],
            ),
            (
                "non-structural schema",
                Box::new(|v| {
                    let s = schema_mut(v);
                    s["properties"]["spec"].as_object_mut().expect("spec").remove("type");
                    s["properties"]["extra"] = json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}});
                }),
                vec![
                    "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields".into(),
                    "spec.versions[0].schema.openAPIV3Schema.properties[extra].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive".into(),
                ],
            ),
            (
                "unsupported keywords",
                Box::new(|v| {
                    let s = &mut schema_mut(v)["properties"]["spec"]["properties"];
                    s["image"]["uniqueItems"] = json!(true);
                    s["image"]["$ref"] = json!("#/x");
                    s["replicas"]["type"] = json!("int");
                }),
                vec![
                    "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[image].$ref: Forbidden: $ref is not supported".into(),
                    "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[image].uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic".into(),
                    r#"spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[replicas].type: Unsupported value: "int": supported values: "array", "boolean", "integer", "number", "object", "string""#.into(),
                ],
            ),
            (
                "defaults must validate and be pruned; none in top-level metadata",
                Box::new(|v| {
                    let s = schema_mut(v);
                    s["properties"]["spec"]["properties"]["replicas"]["default"] = json!(20);
                    s["properties"]["spec"]["default"] = json!({"image": "x", "bogus": 1});
                    s["properties"]["metadata"] = json!({"type": "object", "default": {"name": "n"}});
                }),
                vec![
                    r#"spec.versions[0].schema.openAPIV3Schema.properties[spec].default: Invalid value: {"image":"x","bogus":1}: must not have unknown fields"#.into(),
                    "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[replicas].default: Invalid value: 20:  in body should be less than or equal to 10".into(),
                    "spec.versions[0].schema.openAPIV3Schema.properties[metadata].default: Forbidden: must not be set in top-level metadata".into(),
                ],
            ),
            (
                "status subresource restricts the root",
                Box::new(|v| {
                    v["spec"]["versions"][0]["subresources"] = json!({"status": {}});
                    schema_mut(v)["minProperties"] = json!(1);
                }),
                vec!["spec.versions[0].schema.openAPIV3Schema: Invalid value: {…}: only [Description Type Format Title Maximum ExclusiveMaximum Minimum ExclusiveMinimum MaxLength MinLength Pattern MaxItems MinItems UniqueItems MultipleOf Required Items Properties ExternalDocs Example XPreserveUnknownFields XValidations] fields are allowed at the root of the schema if the status subresource is enabled".into()],
            ),
            (
                "scale subresource paths",
                Box::new(|v| {
                    v["spec"]["versions"][0]["subresources"] = json!({"scale": {"specReplicasPath": "spec.replicas", "statusReplicasPath": ".spec.replicas", "labelSelectorPath": ".metadata.x"}});
                }),
                vec![
                    r#"spec.versions[0].subresources.scale.specReplicasPath: Invalid value: "spec.replicas": must be a simple json path starting with ."#.into(),
                    r#"spec.versions[0].subresources.scale.statusReplicasPath: Invalid value: ".spec.replicas": should be a json path under .status"#.into(),
                    r#"spec.versions[0].subresources.scale.labelSelectorPath: Invalid value: ".metadata.x": should be a json path under either .spec or .status"#.into(),
                ],
            ),
            (
                "printer columns",
                Box::new(|v| {
                    v["spec"]["versions"][0]["additionalPrinterColumns"] = json!([
                        {"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"},
                        {"name": "Bad", "type": "text", "format": "hex", "jsonPath": "spec.image"}
                    ]);
                }),
                vec![
                    r#"spec.versions[0].additionalPrinterColumns[1].type: Invalid value: "text": must be one of boolean,date,integer,number,string"#.into(),
                    r#"spec.versions[0].additionalPrinterColumns[1].format: Invalid value: "hex": must be one of byte,date,date-time,double,float,int32,int64,password"#.into(),
                    r#"spec.versions[0].additionalPrinterColumns[1].JSONPath: Invalid value: "spec.image": must be a simple json path starting with ."#.into(),
                ],
            ),
            (
                "list-type map needs keys that are required scalar properties",
                Box::new(|v| {
                    schema_mut(v)["properties"]["spec"]["properties"]["ports"] = json!({"type": "array", "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["port", "nope"],
                        "items": {"type": "object", "properties": {"port": {"type": "integer"}}}});
                }),
                vec![
                    r#"spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[ports].x-kubernetes-list-map-keys: Invalid value: ["port","nope"]: entries must all be names of item properties"#.into(),
                    "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[ports].items.properties[port].default: Required value: this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property".into(),
                ],
            ),
            (
                "webhook conversion needs a client config and review versions",
                Box::new(|v| v["spec"]["conversion"] = json!({"strategy": "Webhook", "webhook": {"conversionReviewVersions": ["v2"]}})),
                vec![
                    "spec.conversion.webhookClientConfig: Required value: required when strategy is set to Webhook".into(),
                    r#"spec.conversion.conversionReviewVersions: Invalid value: ["v2"]: must include at least one of v1, v1beta1"#.into(),
                ],
            ),
            (
                "protected group needs approval",
                Box::new(|v| {
                    v["spec"]["group"] = json!("stable.k8s.io");
                    v["metadata"]["name"] = json!("crontabs.stable.k8s.io");
                }),
                vec![r#"metadata.annotations[api-approved.kubernetes.io]: Required value: protected groups must have approval annotation "api-approved.kubernetes.io", see https://github.com/kubernetes/enhancements/pull/1111"#.into()],
            ),
            (
                "preserveUnknownFields cannot be set",
                Box::new(|v| v["spec"]["preserveUnknownFields"] = json!(true)),
                vec!["spec.preserveUnknownFields: Invalid value: true: cannot set to true, set x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead".into()],
            ),
        ];
        for (name, mutate, want) in cases {
            let got: Vec<String> = validate_crd(&crd_with(&*mutate))
                .iter()
                .map(|e| e.to_string())
                .collect();
            // Errors about whole lists/schemas print them as their value; `…` elides it.
            assert_eq!(got.len(), want.len(), "{name}: {got:#?}");
            for (g, w) in got.iter().zip(&want) {
                let ok = match w.split_once('…') {
                    Some((pre, post)) => {
                        g.starts_with(pre) && g.ends_with(post) && g.len() > w.len()
                    }
                    None => g == w,
                };
                assert!(ok, "{name}:\n got {g}\nwant {w}");
            }
        }
    }

    #[test]
    fn client_supplied_status_is_ignored_on_create_but_checked_on_status_writes() {
        let crd = crd_with(&|v| {
            v["status"] = json!({"storedVersions": ["v0"], "acceptedNames": {"plural": "Bad_Plural", "kind": "CronTab"}});
        });
        assert!(validate_crd(&crd).is_empty());
        let got: Vec<String> = validate_crd_status(&crd)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            got,
            vec![format!(
                r#"status.acceptedNames.plural: Invalid value: "Bad_Plural": {DNS1035}"#
            )]
        );
    }

    #[test]
    fn invalid_status_message() {
        let crd = crd_with(&|v| {
            v["spec"]["group"] = json!("example");
            v["metadata"]["name"] = json!("crontabs.example");
        });
        let errs = validate_crd(&crd);
        assert_eq!(
            super::super::status_message(
                "CustomResourceDefinition.apiextensions.k8s.io",
                "crontabs.example",
                &errs
            ),
            r#"CustomResourceDefinition.apiextensions.k8s.io "crontabs.example" is invalid: spec.group: Invalid value: "example": should be a domain with at least one dot"#
        );
    }

    #[test]
    fn defaulting_fills_singular_and_list_kind() {
        let crd = crd_with(&|v| {
            v["spec"]["names"]
                .as_object_mut()
                .expect("names")
                .remove("singular");
        });
        assert_eq!(crd.spec.names.singular.as_deref(), Some("crontab"));
        assert_eq!(crd.spec.names.list_kind.as_deref(), Some("CronTabList"));
        assert_eq!(
            crd.spec.conversion.as_ref().map(|c| c.strategy.as_str()),
            Some("None")
        );
    }

    fn established(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
        super::super::reconcile_status(&mut crd, &Default::default(), jiff::Timestamp::UNIX_EPOCH);
        crd
    }

    #[test]
    fn update() {
        let old = established(crontab());
        let cases: Vec<(&str, Mutation, Vec<&str>)> = vec![
            ("no change", Box::new(|_| {}), vec![]),
            (
                "group and plural are immutable",
                Box::new(|v| {
                    v["spec"]["group"] = json!("other.example.com");
                    v["spec"]["names"]["plural"] = json!("crons");
                    v["metadata"]["name"] = json!("crons.other.example.com");
                }),
                vec![
                    r#"metadata.name: Invalid value: "crons.other.example.com": field is immutable"#,
                    r#"spec.group: Invalid value: "other.example.com": field is immutable"#,
                    r#"spec.names.plural: Invalid value: "crons": field is immutable"#,
                ],
            ),
            (
                "scope and kind are immutable once established",
                Box::new(|v| {
                    v["spec"]["scope"] = json!("Cluster");
                    v["spec"]["names"]["kind"] = json!("Cron");
                    v["spec"]["names"]["listKind"] = json!("CronList");
                }),
                vec![r#"spec.scope: Invalid value: "Cluster": field is immutable"#, r#"spec.names.kind: Invalid value: "Cron": field is immutable"#],
            ),
            (
                "a previously stored version cannot be dropped",
                Box::new(|v| v["spec"]["versions"][0]["name"] = json!("v2")),
                vec!["status.storedVersions[0]: Invalid value: \"v1\": missing from spec.versions; v1 was previously a storage version, and must remain in spec.versions until a storage migration ensures no data remains persisted in v1 and removes v1 from status.storedVersions"],
            ),
        ];
        for (name, mutate, want) in cases {
            let new = crd_with(&*mutate);
            let got: Vec<String> = validate_crd_update(&old, &new)
                .iter()
                .map(|e| e.to_string())
                .collect();
            assert_eq!(got, want, "{name}");
        }
        // Scope may still change before the CRD was ever established.
        let fresh = crontab();
        let new = crd_with(&|v| v["spec"]["scope"] = json!("Cluster"));
        assert!(validate_crd_update(&fresh, &new).is_empty());
    }

    #[test]
    fn update_ratchets_rules_the_old_crd_already_broke() {
        let broken = |v: &mut Value| {
            schema_mut(v)["properties"]["spec"]["properties"]["ports"] = json!({"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["port"], "items": {"type": "object", "properties": {"port": {"type": "integer"}}}});
        };
        let old = crd_with(&broken);
        assert_eq!(
            validate_crd(&old).len(),
            1,
            "old CRD breaks the map-key rule"
        );
        let new = crd_with(&|v| {
            broken(v);
            v["spec"]["names"]["shortNames"] = json!(["ct", "cron"]);
        });
        assert!(validate_crd_update(&old, &new).is_empty());
        // ...but a CRD that did not break it may not start to.
        assert_eq!(validate_crd_update(&crontab(), &new).len(), 1);
    }
}
