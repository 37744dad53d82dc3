//! ResourceQuota (upstream's `ResourceQuota` admission plugin and the quota controller's
//! usage evaluators): what an object uses, and whether a new object fits every quota of its
//! namespace. Upstream's messages: `exceeded quota: <name>, requested: pods=1, used: pods=1,
//! limited: pods=1` and `failed quota: <name>: must specify limits.cpu for: c`.
//!
//! Usage is the sum over the namespace's live objects (terminal pods do not count), computed
//! by the caller from the store at admission time rather than trusted from `status.used`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::quantity::Milli;
use crate::api::ResourceInfo;

pub type Usage = BTreeMap<String, Milli>;

const ONE: Milli = Milli(1000);

/// Whether objects of this resource can count against a quota at all.
pub fn tracked(ri: &ResourceInfo) -> bool {
    ri.namespaced && !(ri.group.is_empty() && matches!(ri.plural.as_str(), "events" | "bindings"))
}

fn add(u: &mut Usage, k: &str, v: Milli) {
    let e = u.entry(k.to_string()).or_default();
    *e = *e + v;
}

fn quantity(v: &Value) -> Option<Milli> {
    match v {
        Value::String(s) => Milli::parse(s),
        Value::Number(n) => Milli::parse(&n.to_string()),
        _ => None,
    }
}

/// What one object uses.
pub fn usage(ri: &ResourceInfo, obj: &Value) -> Usage {
    let mut u = Usage::new();
    let count = if ri.group.is_empty() {
        format!("count/{}", ri.plural)
    } else {
        format!("count/{}.{}", ri.plural, ri.group)
    };
    if ri.group.is_empty() && ri.kind == "Pod" {
        if matches!(
            obj["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        ) {
            return u;
        }
        add(&mut u, "pods", ONE);
        add(&mut u, &count, ONE);
        for c in obj["spec"]["containers"].as_array().into_iter().flatten() {
            for (field, prefix) in [("requests", "requests."), ("limits", "limits.")] {
                for (res, v) in c["resources"][field].as_object().into_iter().flatten() {
                    let Some(q) = quantity(v) else { continue };
                    add(&mut u, &format!("{prefix}{res}"), q);
                    if field == "requests" && matches!(res.as_str(), "cpu" | "memory") {
                        add(&mut u, res, q);
                    }
                }
            }
        }
        return u;
    }
    add(&mut u, &count, ONE);
    if ri.group.is_empty() {
        match ri.plural.as_str() {
            "services" => {
                add(&mut u, "services", ONE);
                let ty = obj["spec"]["type"].as_str().unwrap_or("ClusterIP");
                if matches!(ty, "NodePort" | "LoadBalancer") {
                    let ports = obj["spec"]["ports"].as_array().map_or(0, |p| p.len());
                    add(&mut u, "services.nodeports", Milli(ports as i128 * 1000));
                }
                if ty == "LoadBalancer" {
                    add(&mut u, "services.loadbalancers", ONE);
                }
            }
            "persistentvolumeclaims" => {
                add(&mut u, "persistentvolumeclaims", ONE);
                if let Some(q) = quantity(&obj["spec"]["resources"]["requests"]["storage"]) {
                    add(&mut u, "requests.storage", q);
                }
            }
            p @ ("configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas") => {
                add(&mut u, p, ONE)
            }
            _ => {}
        }
    }
    u
}

/// Compute resources a pod must declare for a quota that tracks them: "must specify ...".
fn missing(ri: &ResourceInfo, obj: &Value, hard: &serde_json::Map<String, Value>) -> Vec<String> {
    if !(ri.group.is_empty() && ri.kind == "Pod") {
        return Vec::new();
    }
    let mut out = Vec::new();
    for res in hard.keys() {
        let (field, name) = match res.as_str() {
            "cpu" | "memory" => ("requests", res.as_str()),
            r => match r.split_once('.') {
                Some(("requests", n @ ("cpu" | "memory"))) => ("requests", n),
                Some(("limits", n @ ("cpu" | "memory"))) => ("limits", n),
                _ => continue,
            },
        };
        let lacking: Vec<&str> = obj["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["resources"][field].get(name).is_none())
            .filter_map(|c| c["name"].as_str())
            .collect();
        if !lacking.is_empty() {
            out.push(format!("{res} for: {}", lacking.join(",")));
        }
    }
    out
}

fn pretty(u: &Usage) -> String {
    u.iter()
        .map(|(k, v)| format!("{k}={}", v.format()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Check that `delta` (a new object's usage) fits `quota` given the namespace's current
/// `used`. Only resources the quota lists count.
pub fn check(
    ri: &ResourceInfo,
    obj: &Value,
    quota: &Value,
    used: &Usage,
    delta: &Usage,
) -> Result<(), String> {
    let name = quota["metadata"]["name"].as_str().unwrap_or_default();
    let Some(hard) = quota["spec"]["hard"].as_object() else {
        return Ok(());
    };
    let lacking = missing(ri, obj, hard);
    if !lacking.is_empty() {
        return Err(format!(
            "failed quota: {name}: must specify {}",
            lacking.join("; ")
        ));
    }
    let mut requested = Usage::new();
    let mut using = Usage::new();
    let mut limited = Usage::new();
    for (res, limit) in hard {
        let Some(d) = delta.get(res).filter(|d| d.0 > 0) else {
            continue;
        };
        let Some(limit) = quantity(limit) else {
            continue;
        };
        let u = used.get(res).copied().unwrap_or_default();
        if u + *d > limit {
            requested.insert(res.clone(), *d);
            using.insert(res.clone(), u);
            limited.insert(res.clone(), limit);
        }
    }
    if requested.is_empty() {
        return Ok(());
    }
    Err(format!(
        "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
        pretty(&requested),
        pretty(&using),
        pretty(&limited)
    ))
}

/// `status` for a quota given the namespace's usage: `hard` as the spec's, `used` for each
/// listed resource.
pub fn status(quota: &Value, used: &Usage) -> Value {
    let hard = quota["spec"]["hard"].clone();
    let mut u = serde_json::Map::new();
    for res in hard.as_object().into_iter().flat_map(|h| h.keys()) {
        let v = used.get(res).copied().unwrap_or_default();
        u.insert(res.clone(), Value::String(v.format()));
    }
    serde_json::json!({"hard": hard, "used": u})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::builtin;
    use serde_json::json;

    fn pods() -> &'static ResourceInfo {
        builtin().iter().find(|r| r.plural == "pods").unwrap()
    }

    #[test]
    fn pod_usage_and_exceeded_message() {
        let pod = json!({"spec": {"containers": [{"name": "c", "resources": {
            "requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m"}}}]}});
        let u = usage(pods(), &pod);
        assert_eq!(u["pods"], Milli(1000));
        assert_eq!(u["requests.cpu"], Milli(250));
        assert_eq!(u["cpu"], Milli(250));
        assert_eq!(u["limits.cpu"], Milli(500));
        let quota = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"}}});
        assert!(check(pods(), &pod, &quota, &Usage::new(), &u).is_ok());
        let err = check(pods(), &pod, &quota, &u, &u).unwrap_err();
        assert_eq!(
            err,
            "exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1"
        );
        let cpu = json!({"metadata": {"name": "c"}, "spec": {"hard": {"limits.memory": "1Gi"}}});
        assert_eq!(
            check(pods(), &pod, &cpu, &Usage::new(), &u).unwrap_err(),
            "failed quota: c: must specify limits.memory for: c"
        );
        assert_eq!(
            status(&quota, &u),
            json!({"hard": {"pods": "1"}, "used": {"pods": "1"}})
        );
        let done = json!({"status": {"phase": "Succeeded"}, "spec": {"containers": []}});
        assert!(usage(pods(), &done).is_empty());
    }
}
