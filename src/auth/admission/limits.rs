//! LimitRanger (upstream's `LimitRanger` admission plugin) for pods and
//! PersistentVolumeClaims. Pods: `default` and
//! `defaultRequest` of `type: Container` items fill in missing limits and requests (and the
//! pod is annotated `kubernetes.io/limit-ranger`), then `min`, `max` and
//! `maxLimitRequestRatio` are enforced per container and, for `type: Pod` items, over the
//! sum of the containers. Upstream's messages: `minimum cpu usage per Container is 100m, but
//! request is 50m`, `maximum memory usage per Container is 1Gi, but limit is 2Gi`.
//! Claims: `type: PersistentVolumeClaim` items bound `spec.resources.requests` (min against
//! the request, max against the request read as a limit, as upstream does: `maximum storage
//! usage per PersistentVolumeClaim is 2Gi, but limit is 5Gi`), on create and update.

use serde_json::{json, Value};

use super::quantity::Milli;

fn items<'a>(ranges: &'a [Value], ty: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    ranges
        .iter()
        .flat_map(|r| r["spec"]["limits"].as_array().into_iter().flatten())
        .filter(move |i| i["type"] == ty)
}

fn containers_mut(pod: &mut Value) -> Vec<&mut Value> {
    let spec = &mut pod["spec"];
    let mut out = Vec::new();
    if let Some(o) = spec.as_object_mut() {
        for (k, v) in o.iter_mut() {
            if k == "containers" || k == "initContainers" {
                out.extend(v.as_array_mut().into_iter().flatten());
            }
        }
    }
    out
}

/// Fill in missing container requests and limits from the namespace's LimitRanges.
pub fn default_pod(pod: &mut Value, ranges: &[Value]) {
    let defaults: Vec<(Value, Value)> = items(ranges, "Container")
        .map(|i| (i["default"].clone(), i["defaultRequest"].clone()))
        .collect();
    if defaults.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    for c in containers_mut(pod) {
        let name = c["name"].as_str().unwrap_or_default().to_string();
        let mut set_req = Vec::new();
        let mut set_lim = Vec::new();
        if !c["resources"].is_object() {
            c["resources"] = json!({});
        }
        for (limits, requests) in &defaults {
            for (field, source, log) in [
                ("limits", limits, &mut set_lim),
                ("requests", requests, &mut set_req),
            ] {
                let Some(src) = source.as_object() else {
                    continue;
                };
                for (res, q) in src {
                    let r = &mut c["resources"];
                    if r[field].get(res).is_none() {
                        if !r[field].is_object() {
                            r[field] = json!({});
                        }
                        r[field][res] = q.clone();
                        log.push(res.clone());
                    }
                }
            }
            // A default limit is also the request when no request or defaultRequest set it
            // (upstream applies limits as requests when only limits are known).
            if let Some(l) = limits.as_object() {
                for (res, q) in l {
                    let r = &mut c["resources"];
                    if r["requests"].get(res).is_none() {
                        if !r["requests"].is_object() {
                            r["requests"] = json!({});
                        }
                        r["requests"][res] = q.clone();
                        set_req.push(res.clone());
                    }
                }
            }
        }
        if !set_req.is_empty() {
            notes.push(format!(
                "{} request for container {name}",
                set_req.join(", ")
            ));
        }
        if !set_lim.is_empty() {
            notes.push(format!("{} limit for container {name}", set_lim.join(", ")));
        }
    }
    if !notes.is_empty() {
        if !pod["metadata"]["annotations"].is_object() {
            pod["metadata"]["annotations"] = json!({});
        }
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"] =
            json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
}

fn q(v: &Value) -> Option<Milli> {
    match v {
        Value::String(s) => Milli::parse(s),
        Value::Number(n) => Milli::parse(&n.to_string()),
        _ => None,
    }
}

/// Check one (requests, limits) pair against an item's bounds.
fn check(kind: &str, item: &Value, requests: &Value, limits: &Value, out: &mut Vec<String>) {
    for (res, min) in item["min"].as_object().into_iter().flatten() {
        let Some(min_q) = q(min) else { continue };
        match q(&requests[res]) {
            Some(r) if r < min_q => out.push(format!(
                "minimum {res} usage per {kind} is {}, but request is {}",
                min_q.format(),
                r.format()
            )),
            None => out.push(format!(
                "minimum {res} usage per {kind} is {}.  No request is specified",
                min_q.format()
            )),
            _ => {}
        }
        if let Some(l) = q(&limits[res]) {
            if l < min_q {
                out.push(format!(
                    "minimum {res} usage per {kind} is {}, but limit is {}",
                    min_q.format(),
                    l.format()
                ));
            }
        }
    }
    for (res, max) in item["max"].as_object().into_iter().flatten() {
        let Some(max_q) = q(max) else { continue };
        match q(&limits[res]) {
            Some(l) if l > max_q => out.push(format!(
                "maximum {res} usage per {kind} is {}, but limit is {}",
                max_q.format(),
                l.format()
            )),
            None => out.push(format!(
                "maximum {res} usage per {kind} is {}.  No limit is specified",
                max_q.format()
            )),
            _ => {}
        }
    }
    for (res, ratio) in item["maxLimitRequestRatio"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let (Some(ratio), Some(l), Some(r)) = (q(ratio), q(&limits[res]), q(&requests[res])) else {
            continue;
        };
        // limit/request > ratio, compared without division.
        if r.0 > 0 && l.0.saturating_mul(1000) > ratio.0.saturating_mul(r.0) {
            out.push(format!(
                "{res} max limit to request ratio per {kind} is {}, but provided ratio is {:.6}",
                ratio.format(),
                l.0 as f64 / r.0 as f64
            ));
        }
    }
}

/// Violations of the namespace's LimitRanges by `pod` (after defaulting); empty when it fits.
pub fn validate_pod(pod: &Value, ranges: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    let spec = &pod["spec"];
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|l| spec[*l].as_array().into_iter().flatten())
        .collect();
    for item in items(ranges, "Container") {
        for c in &containers {
            check(
                "Container",
                item,
                &c["resources"]["requests"],
                &c["resources"]["limits"],
                &mut out,
            );
        }
    }
    let pod_items: Vec<&Value> = items(ranges, "Pod").collect();
    if !pod_items.is_empty() {
        let sum = |field: &str| {
            let mut total = serde_json::Map::new();
            for c in spec["containers"].as_array().into_iter().flatten() {
                for (res, v) in c["resources"][field].as_object().into_iter().flatten() {
                    let prev = total.get(res).and_then(q).unwrap_or_default();
                    if let Some(v) = q(v) {
                        total.insert(res.clone(), json!((prev + v).format()));
                    }
                }
            }
            Value::Object(total)
        };
        let (requests, limits) = (sum("requests"), sum("limits"));
        for item in pod_items {
            check("Pod", item, &requests, &limits, &mut out);
        }
    }
    out
}

/// Violations of the namespace's LimitRanges by a PersistentVolumeClaim.
pub fn validate_pvc(pvc: &Value, ranges: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    let requests = &pvc["spec"]["resources"]["requests"];
    let none = json!({});
    for item in items(ranges, "PersistentVolumeClaim") {
        let min_only = json!({"min": item["min"]});
        let max_only = json!({"max": item["max"]});
        check(
            "PersistentVolumeClaim",
            &min_only,
            requests,
            &none,
            &mut out,
        );
        check(
            "PersistentVolumeClaim",
            &max_only,
            &none,
            requests,
            &mut out,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> Vec<Value> {
        vec![json!({"spec": {"limits": [{"type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "100m"},
            "max": {"cpu": "1"}, "min": {"cpu": "50m"}}]}})]
    }

    #[test]
    fn defaults_fill_missing_values_and_annotate() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "x"},
            {"name": "b", "image": "x", "resources": {"limits": {"cpu": "800m"}}}]}});
        default_pod(&mut pod, &range());
        let a = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(a["limits"], json!({"cpu": "500m", "memory": "256Mi"}));
        assert_eq!(a["requests"], json!({"cpu": "100m", "memory": "256Mi"}));
        assert_eq!(
            pod["spec"]["containers"][1]["resources"]["limits"]["cpu"],
            "800m"
        );
        let note = pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"]
            .as_str()
            .unwrap();
        assert!(note.starts_with("LimitRanger plugin set: "), "{note}");
        assert!(validate_pod(&pod, &range()).is_empty());
    }

    #[test]
    fn max_and_min_are_enforced() {
        let pod = json!({"spec": {"containers": [{"name": "a", "resources": {
            "requests": {"cpu": "10m"}, "limits": {"cpu": "2"}}}]}});
        let errs = validate_pod(&pod, &range());
        assert_eq!(
            errs,
            vec![
                "minimum cpu usage per Container is 50m, but request is 10m".to_string(),
                "maximum cpu usage per Container is 1, but limit is 2".to_string(),
            ]
        );
    }

    #[test]
    fn claims_are_bounded_by_their_request() {
        let ranges = vec![json!({"spec": {"limits": [{"type": "PersistentVolumeClaim",
            "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}}]}})];
        let pvc = |size: &str| json!({"spec": {"resources": {"requests": {"storage": size}}}});
        assert!(validate_pvc(&pvc("1Gi"), &ranges).is_empty());
        assert_eq!(
            validate_pvc(&pvc("5Gi"), &ranges),
            vec!["maximum storage usage per PersistentVolumeClaim is 2Gi, but limit is 5Gi"]
        );
        assert_eq!(
            validate_pvc(&pvc("500Mi"), &ranges),
            vec!["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"]
        );
    }
}
