//! Reading loosely-typed object JSON the way upstream's typed structs would.
//!
//! Upstream printers work on decoded Go structs, so an absent field is the
//! Go zero value (`""`, `0`, `false`, empty slice/map). These readers give
//! the same zero values for absent fields *and* for fields of the wrong JSON
//! type, which is how the module avoids panicking on odd objects.
//!
//! Also here: the formatting shared by several printers that upstream keeps
//! in `k8s.io/apimachinery/pkg/labels` (`FormatLabels`), `metav1`
//! (`FormatLabelSelector`) and `printers.go` (`layoutContainerCells`).

use serde_json::{Map, Value};

/// Walks `path` through nested objects; `None` if any step is missing.
pub(super) fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(v, |cur, key| cur.as_object()?.get(*key))
}

/// A string field, or `""` (Go's zero value).
pub(super) fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    opt_str(v, path).unwrap_or("")
}

/// A `*string` field: `None` when absent or not a string.
pub(super) fn opt_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path)?.as_str()
}

/// Interprets a JSON number as Go would after decoding into an integer.
pub(super) fn as_int(v: &Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    if let Some(u) = v.as_u64() {
        return Some(i64::try_from(u).unwrap_or(i64::MAX));
    }
    let f = v.as_f64()?;
    (f.fract() == 0.0).then_some(f as i64)
}

/// An integer field, or `0`.
pub(super) fn int_at(v: &Value, path: &[&str]) -> i64 {
    opt_int(v, path).unwrap_or(0)
}

/// A `*int32`/`*int64` field.
pub(super) fn opt_int(v: &Value, path: &[&str]) -> Option<i64> {
    as_int(at(v, path)?)
}

/// A `*bool` field.
pub(super) fn opt_bool(v: &Value, path: &[&str]) -> Option<bool> {
    at(v, path)?.as_bool()
}

/// A list field, or the empty slice.
pub(super) fn items<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// A map field, if present and an object.
pub(super) fn map_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Map<String, Value>> {
    at(v, path)?.as_object()
}

/// Number of entries of a map field (`len(obj.Data)`), `0` when absent.
pub(super) fn map_len(v: &Value, path: &[&str]) -> i64 {
    map_at(v, path).map_or(0, |m| m.len() as i64)
}

/// `metadata.name`.
pub(super) fn name(obj: &Value) -> &str {
    str_at(obj, &["metadata", "name"])
}

/// `metadata.deletionTimestamp != nil`.
pub(super) fn is_deleting(obj: &Value) -> bool {
    at(obj, &["metadata", "deletionTimestamp"]).is_some_and(|v| !v.is_null())
}

/// An annotation value, if set.
pub(super) fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    opt_str(obj, &["metadata", "annotations", key])
}

/// `labels.FormatLabels`: `k=v` pairs sorted by key, or `<none>`.
pub(super) fn format_labels(labels: Option<&Value>) -> String {
    let Some(map) = labels.and_then(Value::as_object) else {
        return "<none>".to_string();
    };
    let mut pairs: Vec<(&String, &str)> = map
        .iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or("")))
        .collect();
    if pairs.is_empty() {
        return "<none>".to_string();
    }
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// One requirement of a parsed label selector (`labels.Requirement`).
struct Requirement {
    key: String,
    op: &'static str,
    values: Vec<String>,
}

impl Requirement {
    /// `labels.Requirement.String()`: values are printed sorted.
    fn render(&self) -> String {
        let mut values = self.values.clone();
        values.sort();
        match self.op {
            "Exists" => self.key.clone(),
            "DoesNotExist" => format!("!{}", self.key),
            "In" => format!("{} in ({})", self.key, values.join(",")),
            "NotIn" => format!("{} notin ({})", self.key, values.join(",")),
            _ => format!("{}={}", self.key, values.join(",")),
        }
    }
}

/// `labels.validateLabelValue`: empty, or ≤63 chars of `[A-Za-z0-9._-]`
/// beginning and ending with an alphanumeric.
fn valid_label_value(v: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    v.is_empty()
        || (v.len() <= 63
            && v.chars().all(ok_char)
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// `validation.IsQualifiedName`: optional DNS-subdomain prefix and `/`,
/// then a 1–63 char name shaped like a label value.
fn valid_label_key(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    prefix_ok && !name.is_empty() && valid_label_value(name)
}

/// `metav1.LabelSelectorAsSelector(...).String()`.
///
/// `Ok("")` for a nil or empty selector (upstream's `Nothing()` and
/// `Everything()` both print as the empty string); `Err` where upstream's
/// conversion fails (unknown operator, wrong number of values, bad syntax).
pub(super) fn label_selector(selector: Option<&Value>) -> Result<String, ()> {
    let Some(sel) = selector.filter(|v| !v.is_null()) else {
        return Ok(String::new());
    };
    let mut reqs = Vec::new();
    if let Some(labels) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            let v = v.as_str().unwrap_or("");
            if !valid_label_key(k) || !valid_label_value(v) {
                return Err(());
            }
            reqs.push(Requirement {
                key: k.clone(),
                op: "Equals",
                values: vec![v.to_string()],
            });
        }
    }
    for expr in items(sel, &["matchExpressions"]) {
        let key = str_at(expr, &["key"]);
        let values: Vec<String> = items(expr, &["values"])
            .iter()
            .map(|v| v.as_str().unwrap_or("").to_string())
            .collect();
        let op = match str_at(expr, &["operator"]) {
            "In" => "In",
            "NotIn" => "NotIn",
            "Exists" => "Exists",
            "DoesNotExist" => "DoesNotExist",
            _ => return Err(()),
        };
        let needs_values = matches!(op, "In" | "NotIn");
        if needs_values == values.is_empty()
            || !valid_label_key(key)
            || !values.iter().all(|v| valid_label_value(v))
        {
            return Err(());
        }
        reqs.push(Requirement {
            key: key.to_string(),
            op,
            values,
        });
    }
    // internalSelector.Add keeps requirements sorted by key.
    reqs.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(reqs
        .iter()
        .map(Requirement::render)
        .collect::<Vec<_>>()
        .join(","))
}

/// `metav1.FormatLabelSelector`: `<none>` when empty, `<error>` when invalid.
pub(super) fn format_label_selector(selector: Option<&Value>) -> String {
    match label_selector(selector) {
        Ok(s) if s.is_empty() => "<none>".to_string(),
        Ok(s) => s,
        Err(()) => "<error>".to_string(),
    }
}

/// `layoutContainerCells`: container names and images, comma-joined.
pub(super) fn container_cells(pod_spec: Option<&Value>) -> (String, String) {
    let containers = pod_spec.map_or(&[][..], |spec| items(spec, &["containers"]));
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

/// Replica counts that the API defaults to 1 when unset.
///
/// Upstream prints from objects that went through defaulting on the way
/// out of storage, so an unset `spec.replicas` is always 1 there.
pub(super) fn replicas_or_default(obj: &Value) -> i64 {
    opt_int(obj, &["spec", "replicas"]).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn zero_values_for_missing_or_mistyped_fields() {
        let v = json!({"a": {"b": 3, "s": "x", "n": null, "arr": "nope"}});
        assert_eq!(int_at(&v, &["a", "b"]), 3);
        assert_eq!(int_at(&v, &["a", "s"]), 0);
        assert_eq!(str_at(&v, &["a", "b"]), "");
        assert_eq!(str_at(&v, &["a", "s"]), "x");
        assert!(items(&v, &["a", "arr"]).is_empty());
        assert_eq!(opt_int(&json!({"x": 2.0}), &["x"]), Some(2));
        assert_eq!(opt_int(&json!({"x": 2.5}), &["x"]), None);
    }

    #[test]
    fn labels_are_sorted_and_none_when_empty() {
        assert_eq!(format_labels(Some(&json!({"b": "2", "a": "1"}))), "a=1,b=2");
        assert_eq!(format_labels(Some(&json!({}))), "<none>");
        assert_eq!(format_labels(None), "<none>");
    }

    #[test]
    fn label_selector_renders_like_upstream() {
        let sel = json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "zone", "operator": "Exists"}
            ]
        });
        assert_eq!(
            format_label_selector(Some(&sel)),
            "app=web,!canary,env notin (dev),tier in (be,fe),zone"
        );
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(format_label_selector(None), "<none>");
        let bad = json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]});
        assert_eq!(format_label_selector(Some(&bad)), "<error>");
        let no_values = json!({"matchExpressions": [{"key": "a", "operator": "In"}]});
        assert_eq!(format_label_selector(Some(&no_values)), "<error>");
        let bad_value = json!({"matchLabels": {"a": "no spaces"}});
        assert_eq!(format_label_selector(Some(&bad_value)), "<error>");
        let prefixed = json!({"matchLabels": {"app.kubernetes.io/name": "web"}});
        assert_eq!(
            format_label_selector(Some(&prefixed)),
            "app.kubernetes.io/name=web"
        );
    }

    #[test]
    fn containers_lay_out_comma_joined() {
        let spec = json!({"containers": [
            {"name": "app", "image": "nginx:1.27"},
            {"name": "sidecar", "image": "envoy:v1"}
        ]});
        assert_eq!(
            container_cells(Some(&spec)),
            ("app,sidecar".to_string(), "nginx:1.27,envoy:v1".to_string())
        );
        assert_eq!(container_cells(None), (String::new(), String::new()));
    }
}
