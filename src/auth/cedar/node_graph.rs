//! The node authorizer's graph (upstream's `NodeAuthorizer` graph): which node each pod is
//! bound to and which secrets, configmaps, PVCs and service accounts those pods reference.
//!
//! It feeds the precomputed `resource.boundNodes` fact, so the node-restriction policies can
//! say "a node reads a secret only if a pod bound to it uses it" in Cedar, which cannot walk a
//! graph itself. Kept current by the API server (`apiserver/followers/node_graph.rs` watches pods
//! and PersistentVolumeClaims).
//!
//! PersistentVolumes follow upstream's pod → pvc → pv edges: a PV is bound to the nodes whose
//! pods use a claim whose `spec.volumeName` names it, so a kubelet can read the volume its
//! pod's claim is bound to and no other.
//!
//! Invariant: a reference counts per (pod, object) so two pods on one node using the same
//! secret keep it readable until both are gone.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::auth::Attributes;

/// The kinds of objects a pod can give its node access to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Secret,
    ConfigMap,
    Pvc,
    ServiceAccount,
}

type ObjectKey = (Kind, String, String);

#[derive(Default)]
struct Graph {
    /// (namespace, pod) → (node, referenced objects).
    pods: HashMap<(String, String), (String, Vec<ObjectKey>)>,
    /// object → node → number of bound pods referencing it.
    refs: HashMap<ObjectKey, HashMap<String, usize>>,
    /// (namespace, claim) → the PersistentVolume it is bound to (`spec.volumeName`).
    claims: HashMap<(String, String), String>,
    /// PersistentVolume → the claims bound to it (normally one).
    volumes: HashMap<String, Vec<(String, String)>>,
}

#[derive(Default)]
pub struct NodeGraph {
    graph: RwLock<Graph>,
}

impl NodeGraph {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The nodes the requested object is bound to (empty when none or not applicable).
    pub fn bound_nodes(&self, attrs: &Attributes<'_>, _node: &str) -> Vec<String> {
        if !attrs.resource_request || attrs.name.is_empty() || !attrs.api_group.is_empty() {
            return Vec::new();
        }
        let Ok(g) = self.graph.read() else {
            return Vec::new();
        };
        if attrs.resource == "persistentvolumes" {
            // pv ← pvc ← pod → node: the nodes of the pods using a claim bound to it.
            let mut nodes: Vec<String> = g
                .volumes
                .get(attrs.name)
                .into_iter()
                .flatten()
                .filter_map(|(ns, claim)| {
                    g.refs
                        .get(&(Kind::Pvc, ns.clone(), claim.clone()))
                        .map(|m| m.keys().cloned().collect::<Vec<_>>())
                })
                .flatten()
                .collect();
            nodes.sort();
            nodes.dedup();
            return nodes;
        }
        let ns = attrs.namespace.to_string();
        let name = attrs.name.to_string();
        let kind = match attrs.resource {
            "pods" => {
                return g
                    .pods
                    .get(&(ns, name))
                    .filter(|(node, _)| !node.is_empty())
                    .map(|(node, _)| vec![node.clone()])
                    .unwrap_or_default();
            }
            "secrets" => Kind::Secret,
            "configmaps" => Kind::ConfigMap,
            "persistentvolumeclaims" => Kind::Pvc,
            "serviceaccounts" => Kind::ServiceAccount,
            _ => return Vec::new(),
        };
        g.refs
            .get(&(kind, ns, name))
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn remove_locked(g: &mut Graph, key: &(String, String)) {
        let Some((node, objs)) = g.pods.remove(key) else {
            return;
        };
        for o in objs {
            if let Some(m) = g.refs.get_mut(&o) {
                if let Some(n) = m.get_mut(&node) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        m.remove(&node);
                    }
                }
                if m.is_empty() {
                    g.refs.remove(&o);
                }
            }
        }
    }

    /// Record (or replace) a pod.
    pub fn apply(&self, pod: &Value) {
        let meta = &pod["metadata"];
        let ns = meta["namespace"].as_str().unwrap_or_default().to_string();
        let name = meta["name"].as_str().unwrap_or_default().to_string();
        let node = pod["spec"]["nodeName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let objs = if node.is_empty() {
            Vec::new()
        } else {
            references(pod, &ns)
        };
        let Ok(mut g) = self.graph.write() else {
            return;
        };
        let key = (ns, name);
        Self::remove_locked(&mut g, &key);
        for o in &objs {
            *g.refs
                .entry(o.clone())
                .or_default()
                .entry(node.clone())
                .or_default() += 1;
        }
        g.pods.insert(key, (node, objs));
    }

    pub fn remove(&self, pod: &Value) {
        let meta = &pod["metadata"];
        let key = (
            meta["namespace"].as_str().unwrap_or_default().to_string(),
            meta["name"].as_str().unwrap_or_default().to_string(),
        );
        if let Ok(mut g) = self.graph.write() {
            Self::remove_locked(&mut g, &key);
        }
    }

    /// Forget everything (before a relist).
    pub fn clear(&self) {
        if let Ok(mut g) = self.graph.write() {
            let claims = std::mem::take(&mut g.claims);
            let volumes = std::mem::take(&mut g.volumes);
            *g = Graph::default();
            // Claims have their own follower and relist; pods relisting keeps them.
            g.claims = claims;
            g.volumes = volumes;
        }
    }

    fn remove_claim_locked(g: &mut Graph, key: &(String, String)) {
        let Some(pv) = g.claims.remove(key) else {
            return;
        };
        if let Some(list) = g.volumes.get_mut(&pv) {
            list.retain(|k| k != key);
            if list.is_empty() {
                g.volumes.remove(&pv);
            }
        }
    }

    /// Record (or replace) a PersistentVolumeClaim: its pvc → pv edge.
    pub fn apply_claim(&self, pvc: &Value) {
        let meta = &pvc["metadata"];
        let key = (
            meta["namespace"].as_str().unwrap_or_default().to_string(),
            meta["name"].as_str().unwrap_or_default().to_string(),
        );
        let pv = pvc["spec"]["volumeName"].as_str().unwrap_or_default();
        let Ok(mut g) = self.graph.write() else {
            return;
        };
        Self::remove_claim_locked(&mut g, &key);
        if pv.is_empty() || key.1.is_empty() {
            return;
        }
        g.volumes
            .entry(pv.to_string())
            .or_default()
            .push(key.clone());
        g.claims.insert(key, pv.to_string());
    }

    pub fn remove_claim(&self, pvc: &Value) {
        let meta = &pvc["metadata"];
        let key = (
            meta["namespace"].as_str().unwrap_or_default().to_string(),
            meta["name"].as_str().unwrap_or_default().to_string(),
        );
        if let Ok(mut g) = self.graph.write() {
            Self::remove_claim_locked(&mut g, &key);
        }
    }

    /// Forget every claim (before the claims' relist).
    pub fn clear_claims(&self) {
        if let Ok(mut g) = self.graph.write() {
            g.claims.clear();
            g.volumes.clear();
        }
    }
}

/// Everything a bound pod lets its node read, as upstream's graph populator.
fn references(pod: &Value, ns: &str) -> Vec<ObjectKey> {
    let mut out = Vec::new();
    let mut add = |kind: Kind, name: &Value| {
        if let Some(n) = name.as_str().filter(|n| !n.is_empty()) {
            out.push((kind, ns.to_string(), n.to_string()));
        }
    };
    let spec = &pod["spec"];
    let sa = spec["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    add(Kind::ServiceAccount, &Value::String(sa.into()));
    for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
        add(Kind::Secret, &s["name"]);
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        add(Kind::Secret, &v["secret"]["secretName"]);
        add(Kind::ConfigMap, &v["configMap"]["name"]);
        add(Kind::Pvc, &v["persistentVolumeClaim"]["claimName"]);
        for src in v["projected"]["sources"].as_array().into_iter().flatten() {
            add(Kind::Secret, &src["secret"]["name"]);
            add(Kind::ConfigMap, &src["configMap"]["name"]);
        }
        for key in [
            "cephfs",
            "cinder",
            "flexVolume",
            "rbd",
            "scaleIO",
            "storageos",
            "azureFile",
            "iscsi",
        ] {
            add(Kind::Secret, &v[key]["secretRef"]["name"]);
        }
        add(Kind::Secret, &v["csi"]["nodePublishSecretRef"]["name"]);
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                add(Kind::Secret, &e["valueFrom"]["secretKeyRef"]["name"]);
                add(Kind::ConfigMap, &e["valueFrom"]["configMapKeyRef"]["name"]);
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                add(Kind::Secret, &e["secretRef"]["name"]);
                add(Kind::ConfigMap, &e["configMapRef"]["name"]);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserInfo;
    use serde_json::json;

    fn bound(g: &NodeGraph, resource: &str, ns: &str, name: &str) -> Vec<String> {
        let user = UserInfo::default();
        g.bound_nodes(
            &Attributes {
                user: &user,
                verb: "get",
                resource_request: true,
                api_group: "",
                resource,
                subresource: "",
                namespace: ns,
                name,
                path: "",
            },
            "n1",
        )
    }

    fn pod(name: &str, node: &str, claim: &str) -> Value {
        json!({"metadata": {"namespace": "ns", "name": name},
               "spec": {"nodeName": node, "volumes": [
                   {"name": "d", "persistentVolumeClaim": {"claimName": claim}}]}})
    }

    fn claim(name: &str, pv: Option<&str>) -> Value {
        json!({"metadata": {"namespace": "ns", "name": name}, "spec": {"volumeName": pv}})
    }

    /// pod → pvc → pv: a node reaches exactly the claims its pods use and the volumes those
    /// claims are bound to, and loses them with the pod or the binding.
    #[test]
    fn claims_and_volumes_follow_pods() {
        let g = NodeGraph::new();
        g.apply(&pod("p1", "n1", "data"));
        g.apply(&pod("p2", "n2", "other"));
        g.apply_claim(&claim("data", Some("pv-data")));
        g.apply_claim(&claim("other", Some("pv-other")));
        g.apply_claim(&claim("unused", Some("pv-unused")));
        g.apply_claim(&claim("pending", None));
        let n1 = vec!["n1".to_string()];
        let none: Vec<String> = Vec::new();
        let table: &[(&str, &str, &str, &Vec<String>)] = &[
            ("persistentvolumeclaims", "ns", "data", &n1),
            ("persistentvolumes", "", "pv-data", &n1),
            ("persistentvolumes", "", "pv-unused", &none),
            ("persistentvolumes", "", "missing", &none),
            ("persistentvolumeclaims", "ns", "unused", &none),
            ("persistentvolumeclaims", "other-ns", "data", &none),
        ];
        for (resource, ns, name, want) in table {
            assert_eq!(
                &bound(&g, resource, ns, name),
                *want,
                "{resource} {ns}/{name}"
            );
        }
        assert_eq!(bound(&g, "persistentvolumes", "", "pv-other"), vec!["n2"]);
        // A pod relist keeps the claims' edges.
        g.clear();
        g.apply(&pod("p1", "n1", "data"));
        assert_eq!(bound(&g, "persistentvolumes", "", "pv-data"), n1);
        // The claim re-bound elsewhere: the old volume is out of reach.
        g.apply_claim(&claim("data", Some("pv-new")));
        assert_eq!(bound(&g, "persistentvolumes", "", "pv-data"), none);
        assert_eq!(bound(&g, "persistentvolumes", "", "pv-new"), n1);
        g.remove(&pod("p1", "n1", "data"));
        assert_eq!(bound(&g, "persistentvolumes", "", "pv-new"), none);
        g.apply(&pod("p1", "n1", "data"));
        g.remove_claim(&claim("data", None));
        assert_eq!(bound(&g, "persistentvolumes", "", "pv-new"), none);
        assert_eq!(bound(&g, "persistentvolumeclaims", "ns", "data"), n1);
    }
}
