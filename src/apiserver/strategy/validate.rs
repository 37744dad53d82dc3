//! Semantic validation of built-in objects after decoding and defaulting — the subset of
//! upstream's `ValidateObjectMeta` and per-kind `Validate*` rules that users hit in practice.
//! Each failure is `(field path, message)` in upstream's wording; the caller turns the list
//! into one 422 Invalid Status.

use serde_json::Value;

use crate::api::validation::{dns1123_label, dns1123_subdomain, label_key, label_value};
use crate::api::ResourceInfo;

type Causes = Vec<(String, String)>;

const MAX_ANNOTATIONS: usize = 256 * 1024;

fn invalid(field: &str, value: &str, why: &str) -> (String, String) {
    (field.into(), format!("Invalid value: \"{value}\": {why}"))
}

fn required(field: &str) -> (String, String) {
    (field.into(), "Required value".into())
}

/// Names of RBAC objects and a few others are path segments (they may contain ':').
fn path_segment(name: &str) -> Result<(), String> {
    if name == "." || name == ".." {
        return Err(format!("may not be '{name}'"));
    }
    if name.contains('/') || name.contains('%') {
        return Err("may not contain '/' or '%'".into());
    }
    Ok(())
}

/// DNS-1035 label (services): like a DNS-1123 label but starting with a letter.
fn dns1035_label(name: &str) -> Result<(), String> {
    dns1123_label(name)?;
    if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".into())
    }
}

fn name_rule(ri: &ResourceInfo) -> fn(&str) -> Result<(), String> {
    match (ri.group.as_str(), ri.kind.as_str()) {
        ("", "Namespace") => dns1123_label,
        ("", "Service") => dns1035_label,
        ("rbac.authorization.k8s.io", _) => path_segment,
        _ => dns1123_subdomain,
    }
}

fn metadata(ri: &ResourceInfo, obj: &Value, out: &mut Causes) {
    let m = &obj["metadata"];
    let name = m["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        out.push((
            "metadata.name".into(),
            "Required value: name or generateName is required".into(),
        ));
    } else if let Err(e) = name_rule(ri)(name) {
        out.push(invalid("metadata.name", name, &e));
    }
    if let Some(labels) = m["labels"].as_object() {
        for (k, v) in labels {
            if let Err(e) = label_key(k) {
                out.push(invalid("metadata.labels", k, &e));
            }
            match v.as_str() {
                Some(v) => {
                    if let Err(e) = label_value(v) {
                        out.push(invalid("metadata.labels", v, &e));
                    }
                }
                None => out.push(invalid(
                    "metadata.labels",
                    k,
                    "label values must be strings",
                )),
            }
        }
    }
    if let Some(ann) = m["annotations"].as_object() {
        let mut size = 0;
        for (k, v) in ann {
            if let Err(e) = label_key(&k.to_ascii_lowercase()) {
                out.push(invalid("metadata.annotations", k, &e));
            }
            size += k.len() + v.as_str().map_or(0, str::len);
        }
        if size > MAX_ANNOTATIONS {
            out.push((
                "metadata.annotations".into(),
                format!("Too long: must have at most {MAX_ANNOTATIONS} bytes"),
            ));
        }
    }
}

fn pod_spec(spec: &Value, path: &str, out: &mut Causes) {
    let containers = spec["containers"].as_array();
    if containers.is_none_or(|c| c.is_empty()) {
        out.push(required(&format!("{path}.containers")));
    }
    let mut names = std::collections::HashSet::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let p = format!("{path}.{list}[{i}]");
            match c["name"].as_str() {
                None | Some("") => out.push(required(&format!("{p}.name"))),
                Some(n) => {
                    if let Err(e) = dns1123_label(n) {
                        out.push(invalid(&format!("{p}.name"), n, &e));
                    }
                    if !names.insert(n.to_string()) {
                        out.push((format!("{p}.name"), format!("Duplicate value: \"{n}\"")));
                    }
                }
            }
            if c["image"].as_str().is_none_or(|i| i.trim().is_empty()) {
                out.push(required(&format!("{p}.image")));
            }
            for (j, port) in c["ports"].as_array().into_iter().flatten().enumerate() {
                let n = port["containerPort"].as_i64().unwrap_or(0);
                if !(1..=65535).contains(&n) {
                    out.push((
                        format!("{p}.ports[{j}].containerPort"),
                        format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
                    ));
                }
            }
        }
    }
}

fn labels_of(v: &Value) -> std::collections::BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Workload selector rules: required, matching the template, immutable (apps/v1).
fn workload(obj: &Value, old: Option<&Value>, out: &mut Causes) {
    let spec = &obj["spec"];
    let selector = &spec["selector"];
    if !selector.is_object()
        || (selector["matchLabels"]
            .as_object()
            .is_none_or(|m| m.is_empty())
            && selector["matchExpressions"]
                .as_array()
                .is_none_or(|m| m.is_empty()))
    {
        out.push(required("spec.selector"));
    } else {
        let tpl = labels_of(&spec["template"]["metadata"]["labels"]);
        let matches = labels_of(&selector["matchLabels"])
            .iter()
            .all(|(k, v)| tpl.get(k) == Some(v));
        if !matches {
            out.push((
                "spec.template.metadata.labels".into(),
                "Invalid value: `selector` does not match template `labels`".into(),
            ));
        }
    }
    if let Some(old) = old {
        if old["spec"]["selector"] != *selector {
            out.push((
                "spec.selector".into(),
                "Invalid value: field is immutable".into(),
            ));
        }
    }
    if spec["replicas"].as_i64().is_some_and(|r| r < 0) {
        out.push((
            "spec.replicas".into(),
            "Invalid value: must be greater than or equal to 0".into(),
        ));
    }
    pod_spec(&spec["template"]["spec"], "spec.template.spec", out);
}

fn data_keys(obj: &Value, field: &str, out: &mut Causes) {
    for k in obj[field].as_object().into_iter().flat_map(|m| m.keys()) {
        let ok = !k.is_empty()
            && k.len() <= 253
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
            && k != "."
            && k != "..";
        if !ok {
            out.push(invalid(
                &format!("{field}[{k}]"),
                k,
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            ));
        }
    }
}

pub fn object(ri: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Causes {
    let mut out = Vec::new();
    metadata(ri, obj, &mut out);
    match (ri.group.as_str(), ri.kind.as_str()) {
        ("", "Pod") => pod_spec(&obj["spec"], "spec", &mut out),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            workload(obj, old, &mut out)
        }
        ("", "ConfigMap") => {
            data_keys(obj, "data", &mut out);
            data_keys(obj, "binaryData", &mut out);
        }
        ("", "Secret") => {
            data_keys(obj, "data", &mut out);
            data_keys(obj, "stringData", &mut out);
        }
        ("", "Service") => {
            let spec = &obj["spec"];
            if spec["type"] == "ExternalName"
                && spec["externalName"].as_str().is_none_or(str::is_empty)
            {
                out.push(required("spec.externalName"));
            }
            for (i, p) in spec["ports"].as_array().into_iter().flatten().enumerate() {
                let n = p["port"].as_i64().unwrap_or(0);
                if !(1..=65535).contains(&n) {
                    out.push((
                        format!("spec.ports[{i}].port"),
                        format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
                    ));
                }
            }
            if spec["type"] != "ExternalName"
                && spec["clusterIP"] != "None"
                && spec["ports"].as_array().is_none_or(|p| p.is_empty())
            {
                out.push(required("spec.ports"));
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::builtin;
    use serde_json::json;

    fn ri(kind: &str) -> &'static ResourceInfo {
        builtin().iter().find(|r| r.kind == kind).unwrap()
    }

    #[test]
    fn pods_need_containers_with_images_and_unique_names() {
        let bad = json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "a"}, {"name": "a", "image": "x"}]}});
        let causes = object(ri("Pod"), &bad, None);
        let fields: Vec<&str> = causes.iter().map(|(f, _)| f.as_str()).collect();
        assert!(fields.contains(&"metadata.name"));
        assert!(fields.contains(&"spec.containers[0].image"));
        assert!(fields.contains(&"spec.containers[1].name"));
        let good = json!({"metadata": {"name": "ok", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}});
        assert!(object(ri("Pod"), &good, None).is_empty());
    }

    #[test]
    fn deployments_selector_must_match_and_stay() {
        let d = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        assert_eq!(object(ri("Deployment"), &d, None).len(), 1);
        let mut ok = d.clone();
        ok["spec"]["template"]["metadata"]["labels"]["app"] = json!("a");
        assert!(object(ri("Deployment"), &ok, None).is_empty());
        let mut moved = ok.clone();
        moved["spec"]["selector"]["matchLabels"]["app"] = json!("z");
        moved["spec"]["template"]["metadata"]["labels"]["app"] = json!("z");
        assert!(object(ri("Deployment"), &moved, Some(&ok))
            .iter()
            .any(|(f, _)| f == "spec.selector"));
    }

    #[test]
    fn rbac_names_may_contain_colons() {
        let r = json!({"metadata": {"name": "system:controller:foo"}});
        assert!(object(ri("ClusterRole"), &r, None).is_empty());
    }
}
