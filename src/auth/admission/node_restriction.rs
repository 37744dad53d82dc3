//! NodeRestriction (upstream's admission plugin): what a kubelet (a `Node` principal) may
//! write, judged on the object itself, which authorization cannot see (a create's name is in
//! the body). A node may create and modify only its own Node object (and may not set
//! `node-restriction.kubernetes.io/` labels or change its taints after creation), only its own
//! Lease in `kube-node-lease`, only mirror pods bound to itself, and only the status of, or
//! the deletion of, pods bound to it. Messages are upstream's.

use serde_json::Value;

use super::engine::Operation;
use crate::api::ResourceInfo;

const RESTRICTED_LABEL_PREFIX: &str = "node-restriction.kubernetes.io/";

fn labels(obj: Option<&Value>, prefix: &str) -> Vec<(String, Value)> {
    obj.and_then(|o| o["metadata"]["labels"].as_object())
        .into_iter()
        .flatten()
        .filter(|(k, _)| {
            k.split_once('/')
                .is_some_and(|(domain, _)| format!("{domain}/").ends_with(prefix))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Check a write by node `node`. `obj` is the new object (the stored one on delete).
pub fn check(
    node: &str,
    op: Operation,
    ri: &ResourceInfo,
    subresource: &str,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), String> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    match (ri.group.as_str(), ri.plural.as_str()) {
        ("", "nodes") => {
            if name != node {
                return Err(format!(
                    "node {node:?} is not allowed to modify node {name:?}"
                ));
            }
            if op == Operation::Delete {
                return Ok(());
            }
            let new = labels(Some(obj), RESTRICTED_LABEL_PREFIX);
            let before = labels(old, RESTRICTED_LABEL_PREFIX);
            let mut changed: Vec<String> = new
                .iter()
                .filter(|l| !before.contains(l))
                .chain(before.iter().filter(|l| !new.contains(l)))
                .map(|(k, _)| k.clone())
                .collect();
            changed.sort();
            changed.dedup();
            if !changed.is_empty() {
                return Err(format!(
                    "node {node:?} is not allowed to modify labels: {}",
                    changed.join(", ")
                ));
            }
            if let Some(old) = old {
                if subresource.is_empty() && old["spec"]["taints"] != obj["spec"]["taints"] {
                    return Err(format!("node {node:?} is not allowed to modify taints"));
                }
            }
            Ok(())
        }
        ("coordination.k8s.io", "leases") => {
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
            if ns != "kube-node-lease" {
                return Err(format!(
                    "node {node:?} can only access leases in the kube-node-lease namespace"
                ));
            }
            if name != node {
                return Err(format!(
                    "node {node:?} can only access node lease with the same name as the requesting node"
                ));
            }
            Ok(())
        }
        ("", "pods") => {
            let bound = obj["spec"]["nodeName"].as_str().unwrap_or_default();
            let old_bound = old
                .map(|o| o["spec"]["nodeName"].as_str().unwrap_or_default())
                .unwrap_or(bound);
            match (op, subresource) {
                (Operation::Create, "") => {
                    let mirror = obj["metadata"]["annotations"]
                        .get("kubernetes.io/config.mirror")
                        .is_some();
                    if !mirror {
                        return Err(format!("pod does not have \"kubernetes.io/config.mirror\" annotation, node {node:?} can only create mirror pods"));
                    }
                    if bound != node {
                        return Err(format!("node {node:?} can only create pods with spec.nodeName set to itself"));
                    }
                    Ok(())
                }
                (Operation::Update, "status") if old_bound == node => Ok(()),
                (Operation::Update, "status") => Err(format!(
                    "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
                )),
                (Operation::Delete, _) if bound == node => Ok(()),
                (Operation::Delete, _) => Err(format!(
                    "node {node:?} can only delete pods with spec.nodeName set to itself"
                )),
                (Operation::Create, "eviction") if bound == node => Ok(()),
                (Operation::Create, "eviction") => Err(format!(
                    "node {node:?} can only evict pods with spec.nodeName set to itself"
                )),
                _ => Err(format!("node {node:?} is not allowed to modify pods except their status")),
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::builtin;
    use serde_json::json;

    fn ri(plural: &str) -> &'static ResourceInfo {
        builtin().iter().find(|r| r.plural == plural).unwrap()
    }

    #[test]
    fn nodes_touch_only_themselves() {
        let own = json!({"metadata": {"name": "n1", "labels": {"a": "b"}}});
        assert!(check("n1", Operation::Create, ri("nodes"), "", &own, None).is_ok());
        let other = json!({"metadata": {"name": "n2"}});
        assert_eq!(
            check("n1", Operation::Create, ri("nodes"), "", &other, None).unwrap_err(),
            "node \"n1\" is not allowed to modify node \"n2\""
        );
        let labelled = json!({"metadata": {"name": "n1", "labels": {"node-restriction.kubernetes.io/x": "y"}}});
        assert!(check(
            "n1",
            Operation::Update,
            ri("nodes"),
            "",
            &labelled,
            Some(&own)
        )
        .unwrap_err()
        .contains("not allowed to modify labels: node-restriction.kubernetes.io/x"));
        let lease = json!({"metadata": {"name": "n2", "namespace": "kube-node-lease"}});
        assert!(check("n1", Operation::Update, ri("leases"), "", &lease, None).is_err());
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n2"}});
        assert!(check(
            "n1",
            Operation::Update,
            ri("pods"),
            "status",
            &pod,
            Some(&pod)
        )
        .is_err());
        let mine = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}});
        assert!(check(
            "n1",
            Operation::Update,
            ri("pods"),
            "status",
            &mine,
            Some(&mine)
        )
        .is_ok());
        assert!(check("n1", Operation::Update, ri("pods"), "", &mine, Some(&mine)).is_err());
    }
}
