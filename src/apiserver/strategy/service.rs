//! The Service strategy (upstream's `pkg/registry/core/service`): allocated values survive
//! updates that omit them, type changes drop the fields the old type needed, the requested
//! ClusterIP and node ports are checked before admission, and the claims themselves
//! (`apiserver::strategy::service_claims`) are made only after validation and admission, right before the
//! store write, and given back if it fails.

use serde_json::Value;

use crate::apiserver::strategy::service_claims::{
    self, needs_health_check_port, needs_node_ports, wants_cluster_ip,
};

const IP_FIELDS: [&str; 4] = ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"];

fn missing(v: Option<&Value>) -> bool {
    v.is_none_or(|v| v.is_null() || v == "" || v.as_array().is_some_and(Vec::is_empty))
}

/// Upstream's `PrepareForUpdate`: `patchAllocatedValues` then `dropTypeDependentFields`.
pub fn prepare_update(old: &Value, new: &mut Value) {
    // Allocated values survive updates that omit them (kubectl apply of a manifest without
    // clusterIP or nodePort must not re-allocate).
    if wants_cluster_ip(new) && wants_cluster_ip(old) {
        for f in IP_FIELDS {
            if missing(new["spec"].get(f)) && old["spec"].get(f).is_some() {
                new["spec"][f] = old["spec"][f].clone();
            }
        }
    }
    if needs_node_ports(new) && needs_node_ports(old) {
        if let Some(ports) = new["spec"]["ports"].as_array_mut() {
            for p in ports
                .iter_mut()
                .filter(|p| p["nodePort"].as_i64().is_none_or(|n| n == 0))
            {
                let same = old["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"]);
                if let Some(np) = same.and_then(|o| o.get("nodePort")) {
                    p["nodePort"] = np.clone();
                }
            }
        }
    }
    // The health check node port likewise survives, and goes with the Local policy or the
    // LoadBalancer type (upstream's `dropTypeDependentFields`).
    let old_hc = old["spec"]["healthCheckNodePort"].clone();
    if needs_health_check_port(old) {
        if needs_health_check_port(new) && missing(new["spec"].get("healthCheckNodePort")) {
            new["spec"]["healthCheckNodePort"] = old_hc;
        } else if !needs_health_check_port(new) && new["spec"]["healthCheckNodePort"] == old_hc {
            if let Some(spec) = new["spec"].as_object_mut() {
                spec.remove("healthCheckNodePort");
            }
        }
    }
    // A type that no longer needs a ClusterIP or node ports loses them, unless the update
    // changed them itself (then validation tells the user).
    if wants_cluster_ip(old) && !wants_cluster_ip(new) && new["spec"]["clusterIP"] != "None" {
        let unchanged = IP_FIELDS
            .iter()
            .all(|f| missing(new["spec"].get(*f)) || new["spec"][*f] == old["spec"][*f]);
        if unchanged {
            if let Some(spec) = new["spec"].as_object_mut() {
                for f in IP_FIELDS {
                    spec.remove(f);
                }
            }
        }
    }
    if needs_node_ports(old) && !needs_node_ports(new) {
        let old_ports = service_claims::held_by(old).ports;
        if let Some(ports) = new["spec"]["ports"].as_array_mut() {
            for p in ports.iter_mut() {
                if p["nodePort"]
                    .as_i64()
                    .is_some_and(|n| old_ports.contains(&n))
                {
                    if let Some(o) = p.as_object_mut() {
                        o.remove("nodePort");
                    }
                }
            }
        }
    }
}

/// What must hold before anything is claimed (upstream's `ValidateService` and
/// `ValidateServiceUpdate` parts about allocated values).
pub fn validate(obj: &Value, old: Option<&Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let spec = &obj["spec"];
    if wants_cluster_ip(obj) {
        if let Some(ip) = spec["clusterIP"].as_str().filter(|s| !s.is_empty()) {
            let unchanged = old.is_some_and(|o| service_claims::held_by(o).ips.contains(ip));
            if !unchanged {
                if let Err(why) = service_claims::ip_in_range(ip) {
                    out.push((
                        "spec.clusterIPs".into(),
                        format!("Invalid value: [\"{ip}\"]: {why}"),
                    ));
                }
            }
        }
        if let Some(old) = old.filter(|o| wants_cluster_ip(o)) {
            let (was, now) = (&old["spec"]["clusterIP"], &spec["clusterIP"]);
            if was.as_str().is_some_and(|s| !s.is_empty()) && !missing(Some(now)) && was != now {
                out.push((
                    "spec.clusterIPs[0]".into(),
                    format!("Invalid value: [{now}]: may not change once set"),
                ));
            }
        }
    }
    if let Some(hc) = spec["healthCheckNodePort"].as_i64().filter(|n| *n != 0) {
        if !needs_health_check_port(obj) {
            out.push((
                "spec.healthCheckNodePort".into(),
                "Invalid value: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'".into(),
            ));
        } else if !service_claims::NODE_PORTS.contains(&hc) {
            out.push(("spec.healthCheckNodePort".into(), format!("Invalid value: {hc}: provided port is not in the valid range. The range of valid ports is 30000-32767")));
        }
    }
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    let mut seen: Vec<(i64, &str)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let Some(np) = p["nodePort"].as_i64().filter(|n| *n != 0) else {
            continue;
        };
        let field = format!("spec.ports[{i}].nodePort");
        if !needs_node_ports(obj) {
            let ty = spec["type"].as_str().unwrap_or("ClusterIP");
            out.push((
                field,
                format!("Forbidden: may not be used when `type` is '{ty}'"),
            ));
            continue;
        }
        if !service_claims::NODE_PORTS.contains(&np) {
            out.push((field, format!("Invalid value: {np}: provided port is not in the valid range. The range of valid ports is 30000-32767")));
            continue;
        }
        let protocol = p["protocol"].as_str().unwrap_or("TCP");
        if seen.contains(&(np, protocol)) {
            out.push((field, format!("Duplicate value: {np}")));
        }
        seen.push((np, protocol));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn allocated_values_survive_and_type_changes_drop_them() {
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.7", "clusterIPs": ["10.43.0.7"],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}});
        let mut new =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        prepare_update(&old, &mut new);
        assert_eq!(new["spec"]["clusterIP"], "10.43.0.7");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
        let mut to_cluster_ip = old.clone();
        to_cluster_ip["spec"]["type"] = json!("ClusterIP");
        prepare_update(&old, &mut to_cluster_ip);
        assert!(to_cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
        assert_eq!(to_cluster_ip["spec"]["clusterIP"], "10.43.0.7");
        let mut to_external = old.clone();
        to_external["spec"]["type"] = json!("ExternalName");
        to_external["spec"]["externalName"] = json!("example.com");
        prepare_update(&old, &mut to_external);
        assert!(to_external["spec"].get("clusterIP").is_none());

        let lb = json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "healthCheckNodePort": 31001, "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}});
        let mut same = json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "ports": [{"port": 80, "protocol": "TCP"}]}});
        prepare_update(&lb, &mut same);
        assert_eq!(same["spec"]["healthCheckNodePort"], 31001);
        let mut to_cluster = lb.clone();
        to_cluster["spec"]["externalTrafficPolicy"] = json!("Cluster");
        prepare_update(&lb, &mut to_cluster);
        assert!(to_cluster["spec"].get("healthCheckNodePort").is_none());
    }

    #[test]
    fn node_port_rules() {
        let causes = |svc: Value| {
            validate(&svc, None)
                .into_iter()
                .map(|(f, m)| format!("{f}: {m}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            causes(
                json!({"spec": {"type": "ClusterIP", "ports": [{"port": 1, "nodePort": 30001}]}})
            ),
            ["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
        );
        assert_eq!(
            causes(
                json!({"spec": {"type": "NodePort", "ports": [{"port": 1, "nodePort": 30001}, {"port": 2, "nodePort": 30001}]}})
            ),
            ["spec.ports[1].nodePort: Duplicate value: 30001"]
        );
        assert!(causes(json!({"spec": {"type": "NodePort", "ports": [{"port": 53, "protocol": "UDP", "nodePort": 30053}, {"port": 53, "protocol": "TCP", "nodePort": 30053}]}})).is_empty());
        assert_eq!(
            causes(json!({"spec": {"type": "NodePort", "ports": [{"port": 1, "nodePort": 80}]}}))
                .len(),
            1
        );
        assert_eq!(
            causes(json!({"spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 1}]}})).len(),
            1
        );
        assert_eq!(
            causes(json!({"spec": {"type": "NodePort", "healthCheckNodePort": 31000, "ports": [{"port": 1}]}})),
            ["spec.healthCheckNodePort: Invalid value: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"]
        );
        let old = json!({"spec": {"clusterIP": "10.43.0.3", "ports": [{"port": 1}]}});
        assert_eq!(
            validate(
                &json!({"spec": {"clusterIP": "10.43.0.4", "ports": [{"port": 1}]}}),
                Some(&old)
            )
            .len(),
            1
        );
    }
}
