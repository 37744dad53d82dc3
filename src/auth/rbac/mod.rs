//! Kubernetes RBAC (Role, ClusterRole, RoleBinding, ClusterRoleBinding) honoured through Cedar.
//!
//! RBAC objects are compiled into Cedar `permit` policies, one per (binding, rule of the bound
//! role), with ids naming their source (`rbac/RoleBinding/<ns>/<name>/rule-<n>`,
//! `rbac/ClusterRoleBinding/<name>/rule-<n>`; `n` is the 0-based index of the rule in the
//! role's `rules`), and handed to the authorizer as the `rbac` source, indexed by the
//! binding's subjects. The semantics are upstream's `RBACAuthorizer` (`RuleAllows`,
//! `appliesTo`): verbs, apiGroups, resources (`res/sub`, `*`, `*/sub`), resourceNames,
//! nonResourceURLs (exact or `prefix*`, only through ClusterRoleBindings), a RoleBinding
//! limited to its namespace, a missing role granting nothing.
//!
//! * `compile`: objects → policies + the subject index.
//! * `index`: subject → effective rules (`rules_for`, SelfSubjectRulesReview and escalation).
//! * `covers`: upstream's `Covers` (escalation check).
//! * `watch`: the live state kept current from store events, recompiled with a short debounce.

pub mod compile;
pub mod covers;
pub mod index;
pub mod watch;

use std::collections::BTreeMap;

use serde_json::Value;

pub use compile::compile;
pub use covers::covers;
pub use index::Index;
pub use watch::Rbac;

pub const GROUP: &str = "rbac.authorization.k8s.io";

/// One RBAC policy rule (`rbac/v1 PolicyRule`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    pub fn from_value(v: &Value) -> Self {
        Self {
            verbs: strings(&v["verbs"]),
            api_groups: strings(&v["apiGroups"]),
            resources: strings(&v["resources"]),
            resource_names: strings(&v["resourceNames"]),
            non_resource_urls: strings(&v["nonResourceURLs"]),
        }
    }

    pub fn to_value(&self) -> Value {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: &Vec<String>| {
            if !v.is_empty() {
                m.insert(k.into(), serde_json::json!(v));
            }
        };
        put("apiGroups", &self.api_groups);
        put("nonResourceURLs", &self.non_resource_urls);
        put("resourceNames", &self.resource_names);
        put("resources", &self.resources);
        m.insert("verbs".into(), serde_json::json!(self.verbs));
        Value::Object(m)
    }

    /// Upstream's `CompactString` form, used in escalation messages.
    pub fn compact(&self) -> String {
        let list = |v: &Vec<String>| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut parts = Vec::new();
        for (name, v) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("ResourceNames", &self.resource_names),
            ("NonResourceURLs", &self.non_resource_urls),
            ("Verbs", &self.verbs),
        ] {
            if !v.is_empty() {
                parts.push(format!("{name}:[{}]", list(v)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }
}

/// The rules of a role object.
pub fn rules_of(obj: &Value) -> Vec<Rule> {
    obj["rules"]
        .as_array()
        .map(|a| a.iter().map(Rule::from_value).collect())
        .unwrap_or_default()
}

/// A binding subject (`rbac/v1 Subject`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

/// What a binding refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    Role,
    ClusterRole,
}

/// A RoleBinding (`namespace` set) or ClusterRoleBinding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub namespace: Option<String>,
    pub name: String,
    pub role_kind: RoleKind,
    pub role_name: String,
    pub subjects: Vec<Subject>,
}

impl Binding {
    pub fn from_value(v: &Value, namespaced: bool) -> Option<Self> {
        let meta = &v["metadata"];
        let name = meta["name"].as_str()?.to_string();
        let namespace = if namespaced {
            Some(meta["namespace"].as_str()?.to_string())
        } else {
            None
        };
        let role_kind = match v["roleRef"]["kind"].as_str()? {
            "Role" if namespaced => RoleKind::Role,
            "ClusterRole" => RoleKind::ClusterRole,
            _ => return None,
        };
        let subjects = v["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                Some(Subject {
                    kind: s["kind"].as_str()?.to_string(),
                    name: s["name"].as_str()?.to_string(),
                    namespace: s["namespace"].as_str().unwrap_or_default().to_string(),
                })
            })
            .collect();
        Some(Self {
            namespace,
            name,
            role_kind,
            role_name: v["roleRef"]["name"].as_str()?.to_string(),
            subjects,
        })
    }

    /// The policy id prefix naming this binding.
    pub fn id(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("rbac/RoleBinding/{ns}/{}", self.name),
            None => format!("rbac/ClusterRoleBinding/{}", self.name),
        }
    }
}

/// Every RBAC object, parsed. Keys are (namespace, name); namespace "" for cluster objects.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub roles: BTreeMap<(String, String), Vec<Rule>>,
    pub cluster_roles: BTreeMap<String, Vec<Rule>>,
    pub bindings: BTreeMap<(String, String, String), Binding>,
}

fn ns_name(v: &Value) -> (String, String) {
    let m = &v["metadata"];
    (
        m["namespace"].as_str().unwrap_or_default().to_string(),
        m["name"].as_str().unwrap_or_default().to_string(),
    )
}

impl Objects {
    /// Record (or replace) an RBAC object; anything else is ignored.
    pub fn apply(&mut self, v: &Value) {
        let (ns, name) = ns_name(v);
        if name.is_empty() {
            return;
        }
        match v["kind"].as_str().unwrap_or_default() {
            "Role" => {
                self.roles.insert((ns, name), rules_of(v));
            }
            "ClusterRole" => {
                self.cluster_roles.insert(name, rules_of(v));
            }
            kind @ ("RoleBinding" | "ClusterRoleBinding") => {
                let key = (kind.to_string(), ns, name);
                match Binding::from_value(v, kind == "RoleBinding") {
                    Some(b) => {
                        self.bindings.insert(key, b);
                    }
                    None => {
                        self.bindings.remove(&key);
                    }
                }
            }
            _ => {}
        }
    }

    pub fn remove(&mut self, v: &Value) {
        let (ns, name) = ns_name(v);
        match v["kind"].as_str().unwrap_or_default() {
            "Role" => {
                self.roles.remove(&(ns, name));
            }
            "ClusterRole" => {
                self.cluster_roles.remove(&name);
            }
            kind @ ("RoleBinding" | "ClusterRoleBinding") => {
                self.bindings.remove(&(kind.to_string(), ns, name));
            }
            _ => {}
        }
    }

    /// The rules a binding grants (none when its role does not exist).
    pub fn role_rules(&self, b: &Binding) -> Option<&Vec<Rule>> {
        match (b.role_kind, &b.namespace) {
            (RoleKind::Role, Some(ns)) => self.roles.get(&(ns.clone(), b.role_name.clone())),
            (RoleKind::Role, None) => None,
            (RoleKind::ClusterRole, _) => self.cluster_roles.get(&b.role_name),
        }
    }
}

#[cfg(test)]
mod tests;
