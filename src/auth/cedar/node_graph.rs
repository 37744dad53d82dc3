//! The node authorizer's graph (upstream's `NodeAuthorizer` graph): which node each pod is
//! bound to and which secrets, configmaps, PVCs and service accounts those pods reference.
//!
//! It feeds the precomputed `resource.boundNodes` fact, so the node-restriction policies can
//! say "a node reads a secret only if a pod bound to it uses it" in Cedar, which cannot walk a
//! graph itself. Kept current by the API server (`apiserver/followers/node_graph.rs` watches pods).
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
            *g = Graph::default();
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
