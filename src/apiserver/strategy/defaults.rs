//! Defaulting for built-in kinds, the values upstream's `SetDefaults_*` functions fill in, so
//! objects read back the way users and tools expect (`kubectl get -o yaml` shows
//! `restartPolicy: Always`, a Deployment has `replicas: 1` and a RollingUpdate strategy, ...).

use serde_json::{json, Value};

use crate::api::ResourceInfo;

fn default(obj: &mut Value, field: &str, v: Value) {
    if obj.is_object() && obj.get(field).is_none_or(Value::is_null) {
        obj[field] = v;
    }
}

fn container(c: &mut Value) {
    let image = c["image"].as_str().unwrap_or_default();
    let tag = image.rsplit('/').next().unwrap_or_default();
    let latest = !image.contains('@') && (!tag.contains(':') || tag.ends_with(":latest"));
    default(
        c,
        "imagePullPolicy",
        json!(if latest { "Always" } else { "IfNotPresent" }),
    );
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    for p in c["ports"].as_array_mut().into_iter().flatten() {
        default(p, "protocol", json!("TCP"));
    }
}

pub fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "securityContext", json!({}));
    default(spec, "enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            container(c);
        }
    }
}

fn template(spec: &mut Value) {
    if spec["template"]["spec"].is_object() {
        pod_spec(&mut spec["template"]["spec"]);
    }
}

/// Upstream's Secret conversion: `stringData` is write-only; each entry is base64-encoded into
/// `data`, overriding a key of the same name, and `stringData` itself is never stored. Left in
/// place when it holds non-strings, so validation reports them.
fn merge_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(map) = obj.get("stringData").and_then(Value::as_object) else {
        if obj.get("stringData").is_some_and(Value::is_null) {
            if let Some(o) = obj.as_object_mut() {
                o.remove("stringData");
            }
        }
        return;
    };
    if !map.values().all(Value::is_string) {
        return;
    }
    let encoded: Vec<(String, String)> = map
        .iter()
        .map(|(k, v)| {
            let text = v.as_str().unwrap_or_default();
            (
                k.clone(),
                base64::engine::general_purpose::STANDARD.encode(text),
            )
        })
        .collect();
    let Some(o) = obj.as_object_mut() else {
        return;
    };
    o.remove("stringData");
    let data = o.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    if let Some(d) = data.as_object_mut() {
        for (k, v) in encoded {
            d.insert(k, Value::String(v));
        }
    }
}

pub fn apply(ri: &ResourceInfo, obj: &mut Value) {
    match (ri.group.as_str(), ri.kind.as_str()) {
        ("", "Pod") => pod_spec(&mut obj["spec"]),
        ("", "Service") => {
            let spec = &mut obj["spec"];
            if !spec.is_object() {
                return;
            }
            default(spec, "type", json!("ClusterIP"));
            default(spec, "sessionAffinity", json!("None"));
            for p in spec["ports"].as_array_mut().into_iter().flatten() {
                default(p, "protocol", json!("TCP"));
                let port = p["port"].clone();
                default(p, "targetPort", port);
            }
        }
        ("", "Secret") => {
            default(obj, "type", json!("Opaque"));
            merge_string_data(obj);
        }
        ("", "ReplicationController") => {
            default(&mut obj["spec"], "replicas", json!(1));
            template(&mut obj["spec"]);
        }
        ("apps", "Deployment") => {
            let spec = &mut obj["spec"];
            if !spec.is_object() {
                return;
            }
            default(spec, "replicas", json!(1));
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
            default(
                spec,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
            template(spec);
        }
        ("apps", "ReplicaSet") => {
            default(&mut obj["spec"], "replicas", json!(1));
            template(&mut obj["spec"]);
        }
        ("apps", "StatefulSet") => {
            let spec = &mut obj["spec"];
            if !spec.is_object() {
                return;
            }
            default(spec, "replicas", json!(1));
            default(spec, "podManagementPolicy", json!("OrderedReady"));
            default(spec, "revisionHistoryLimit", json!(10));
            default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            template(spec);
        }
        ("apps", "DaemonSet") => {
            let spec = &mut obj["spec"];
            if !spec.is_object() {
                return;
            }
            default(spec, "revisionHistoryLimit", json!(10));
            default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            template(spec);
        }
        ("batch", "Job") => {
            let spec = &mut obj["spec"];
            if !spec.is_object() {
                return;
            }
            default(spec, "parallelism", json!(1));
            default(spec, "completions", json!(1));
            default(spec, "backoffLimit", json!(6));
            default(spec, "completionMode", json!("NonIndexed"));
            default(spec, "suspend", json!(false));
            template(spec);
        }
        ("batch", "CronJob") => {
            let spec = &mut obj["spec"];
            if !spec.is_object() {
                return;
            }
            default(spec, "concurrencyPolicy", json!("Allow"));
            default(spec, "suspend", json!(false));
            default(spec, "successfulJobsHistoryLimit", json!(3));
            default(spec, "failedJobsHistoryLimit", json!(1));
            if spec["jobTemplate"]["spec"].is_object() {
                template(&mut spec["jobTemplate"]["spec"]);
            }
        }
        _ => {}
    }
}

/// Status fields upstream sets when an object is created (after user status was dropped).
pub fn status_on_create(ri: &ResourceInfo, obj: &mut Value) {
    if ri.group.is_empty() && ri.kind == "Pod" {
        let qos = qos_class(&obj["spec"]);
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    }
    empty_status(ri, obj);
}

/// The status Go always writes for a kind whose `status` is a struct (never omitted, even
/// empty) with fields that are structs or integers without `omitempty`, plus upstream's
/// status defaulting (PVC and PV phase `Pending`). Clients compare against it: the Python
/// client's e2e suite asserts a new Service's `status == {"loadBalancer": {}}`.
fn empty_status_of(group: &str, kind: &str) -> Option<Value> {
    Some(match (group, kind) {
        ("", "Service") | ("networking.k8s.io", "Ingress") => json!({"loadBalancer": {}}),
        ("", "PersistentVolumeClaim" | "PersistentVolume") => json!({"phase": "Pending"}),
        ("", "ReplicationController") | ("apps", "ReplicaSet") => json!({"replicas": 0}),
        ("apps", "StatefulSet") => json!({"replicas": 0, "availableReplicas": 0}),
        ("apps", "DaemonSet") => json!({"currentNumberScheduled": 0, "numberMisscheduled": 0,
                                        "desiredNumberScheduled": 0, "numberReady": 0}),
        ("policy", "PodDisruptionBudget") => json!({"disruptionsAllowed": 0, "currentHealthy": 0,
                                                    "desiredHealthy": 0, "expectedPods": 0}),
        ("apps", "Deployment")
        | ("batch", "Job" | "CronJob")
        | ("", "ResourceQuota")
        | ("certificates.k8s.io", "CertificateSigningRequest") => json!({}),
        _ => return None,
    })
}

/// Fill in what [`empty_status_of`] says is missing (kept fields win).
pub fn empty_status(ri: &ResourceInfo, obj: &mut Value) {
    let Some(Value::Object(defaults)) = empty_status_of(&ri.group, &ri.kind) else {
        return;
    };
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    if let Some(status) = obj["status"].as_object_mut() {
        for (k, v) in defaults {
            status.entry(k).or_insert(v);
        }
    }
}

/// Upstream's QoS classification from requests and limits.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|l| spec[*l].as_array().into_iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = c["resources"]["requests"].as_object();
        let lim = c["resources"]["limits"].as_object();
        if req.is_some_and(|r| !r.is_empty()) || lim.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        let full = |r: Option<&serde_json::Map<String, Value>>| {
            r.is_some_and(|m| m.contains_key("cpu") && m.contains_key("memory"))
        };
        let lim_full = full(lim);
        let req_eq =
            req.is_none_or(|r| r.iter().all(|(k, v)| lim.and_then(|l| l.get(k)) == Some(v)));
        if !(lim_full && req_eq) {
            guaranteed = false;
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::builtin;

    #[test]
    fn deployments_and_pods_get_upstream_defaults() {
        let deploy = builtin().iter().find(|r| r.kind == "Deployment").unwrap();
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}}}});
        apply(deploy, &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        let mut latest = json!({"name": "c", "image": "busybox"});
        container(&mut latest);
        assert_eq!(latest["imagePullPolicy"], "Always");
    }

    #[test]
    fn secret_string_data_is_merged_into_data() {
        let mut s = json!({"stringData": {"a": "x", "b": "y"}, "data": {"a": "b2xk", "c": "Yw=="}});
        merge_string_data(&mut s);
        assert_eq!(s, json!({"data": {"a": "eA==", "b": "eQ==", "c": "Yw=="}}));
        let mut bad = json!({"stringData": {"a": 1}});
        merge_string_data(&mut bad);
        assert_eq!(bad, json!({"stringData": {"a": 1}}));
    }

    #[test]
    fn qos() {
        assert_eq!(
            qos_class(&json!({"containers": [{"name": "a"}]})),
            "BestEffort"
        );
        assert_eq!(
            qos_class(
                &json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]})
            ),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]})),
            "Burstable"
        );
    }
}
