//! Building Cedar entities for a request in code (several times cheaper than JSON).
//!
//! Principal mapping, as upstream's user naming conventions: `system:serviceaccount:<ns>:<n>`
//! is `k8s::ServiceAccount::"<ns>/<n>"`; `system:node:<n>` *in the group `system:nodes`* is
//! `k8s::Node::"<n>"` (the group check stops a user merely named like a node from getting node
//! rights); anyone else is `k8s::User::"<name>"`. Groups are `k8s::Group::"<name>"` parents.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};

use crate::auth::{Attributes, UserInfo};

/// The verbs the schema declares as actions.
pub const ACTIONS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "impersonate",
    "bind",
    "escalate",
    "approve",
    "sign",
    "use",
    "proxy",
    "attest",
    "post",
    "put",
    "head",
    "options",
];

/// The schema's type names, parsed once: Cedar's name parser costs microseconds per call, and a
/// request needs several names.
const TYPES: &[&str] = &[
    "k8s::User",
    "k8s::Group",
    "k8s::ServiceAccount",
    "k8s::Node",
    "k8s::Resource",
    "k8s::NonResourceURL",
    "k8s::Action",
];

fn type_name(ty: &str) -> EntityTypeName {
    static PARSED: std::sync::OnceLock<Vec<Option<EntityTypeName>>> = std::sync::OnceLock::new();
    let parsed = PARSED.get_or_init(|| {
        TYPES
            .iter()
            .map(|t| EntityTypeName::from_str(t).ok())
            .collect()
    });
    if let Some(Some(t)) = TYPES.iter().position(|t| *t == ty).map(|i| &parsed[i]) {
        return t.clone();
    }
    // Other names (admission's) are parsed on demand; they are ours, so they parse.
    EntityTypeName::from_str(ty).unwrap_or_else(|_| fallback_type_name(parsed))
}

/// Only reached for a type name of ours that does not parse (a typo in this crate, caught by
/// every authorizer test): `k8s::User` parsed at start. Cedar has no infallible constructor
/// for a type name, so this one `expect` stays, on a literal no request controls.
#[cold]
#[allow(clippy::expect_used)]
fn fallback_type_name(parsed: &[Option<EntityTypeName>]) -> EntityTypeName {
    parsed
        .first()
        .cloned()
        .flatten()
        .expect("k8s::User is a valid type name")
}

pub fn uid(ty: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name(ty), EntityId::new(id))
}

/// The action entity for a verb, `None` for verbs the schema does not know.
pub fn action(verb: &str) -> Option<EntityUid> {
    ACTIONS.contains(&verb).then(|| uid("k8s::Action", verb))
}

/// The request principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User(String),
    ServiceAccount { namespace: String, name: String },
    Node(String),
}

impl Principal {
    pub fn of(user: &UserInfo) -> Self {
        if let Some(rest) = user.name.strip_prefix("system:serviceaccount:") {
            if let Some((ns, name)) = rest.split_once(':') {
                if !ns.is_empty() && !name.is_empty() && !name.contains(':') {
                    return Principal::ServiceAccount {
                        namespace: ns.into(),
                        name: name.into(),
                    };
                }
            }
        }
        if let Some(node) = user.name.strip_prefix("system:node:") {
            if !node.is_empty() && user.groups.iter().any(|g| g == "system:nodes") {
                return Principal::Node(node.into());
            }
        }
        Principal::User(user.name.clone())
    }

    /// The entity for an RBAC subject of kind User: service accounts and nodes may be named by
    /// their user names in bindings, as upstream.
    pub fn subject_for_user_name(name: &str) -> EntityUid {
        let groups = if name.starts_with("system:node:") {
            vec!["system:nodes".to_string()]
        } else {
            Vec::new()
        };
        Principal::of(&UserInfo {
            name: name.into(),
            groups,
            ..Default::default()
        })
        .uid()
    }

    pub fn uid(&self) -> EntityUid {
        match self {
            Principal::User(n) => uid("k8s::User", n),
            Principal::ServiceAccount { namespace, name } => {
                uid("k8s::ServiceAccount", &format!("{namespace}/{name}"))
            }
            Principal::Node(n) => uid("k8s::Node", n),
        }
    }

    /// The keys of the policy slices this principal evaluates: itself and its groups.
    pub fn subject_keys_for(&self, user: &UserInfo) -> Vec<EntityUid> {
        let mut keys = vec![self.uid()];
        keys.extend(user.groups.iter().map(|g| uid("k8s::Group", g)));
        keys
    }

    /// The principal entity with its groups as parents, and the group entities.
    pub fn entities(&self, user: &UserInfo) -> Vec<Entity> {
        let parents: HashSet<EntityUid> =
            user.groups.iter().map(|g| uid("k8s::Group", g)).collect();
        let mut attrs = HashMap::new();
        let name = match self {
            Principal::User(n) | Principal::Node(n) => n.clone(),
            Principal::ServiceAccount { namespace, name } => {
                attrs.insert(
                    "namespace".to_string(),
                    RestrictedExpression::new_string(namespace.clone()),
                );
                name.clone()
            }
        };
        attrs.insert("name".to_string(), RestrictedExpression::new_string(name));
        attrs.insert(
            "uid".to_string(),
            RestrictedExpression::new_string(user.uid.clone()),
        );
        let tags = user.extra.iter().map(|(k, values)| {
            (
                k.clone(),
                RestrictedExpression::new_set(
                    values
                        .iter()
                        .map(|v| RestrictedExpression::new_string(v.clone())),
                ),
            )
        });
        let mut out = Vec::with_capacity(user.groups.len() + 1);
        match Entity::new_with_tags(self.uid(), attrs, parents, tags) {
            Ok(e) => out.push(e),
            Err(e) => tracing::error!(error = %e, "cannot build the principal entity"),
        }
        for g in &user.groups {
            let attrs = HashMap::from([(
                "name".to_string(),
                RestrictedExpression::new_string(g.clone()),
            )]);
            if let Ok(e) = Entity::new(uid("k8s::Group", g), attrs, HashSet::new()) {
                out.push(e);
            }
        }
        out
    }
}

/// The resource entity for a request: an API object or a non-resource URL.
pub fn resource(attrs: &Attributes<'_>, bound_nodes: &[String]) -> (EntityUid, Entity) {
    if !attrs.resource_request {
        let id = uid("k8s::NonResourceURL", attrs.path);
        let a = HashMap::from([(
            "path".to_string(),
            RestrictedExpression::new_string(attrs.path.to_string()),
        )]);
        let e = Entity::new(id.clone(), a, HashSet::new())
            .unwrap_or_else(|_| Entity::with_uid(id.clone()));
        return (id, e);
    }
    let id = uid("k8s::Resource", attrs.path);
    let s = |v: &str| RestrictedExpression::new_string(v.to_string());
    let a = HashMap::from([
        ("apiGroup".to_string(), s(attrs.api_group)),
        ("resource".to_string(), s(attrs.resource)),
        ("subresource".to_string(), s(attrs.subresource)),
        ("namespace".to_string(), s(attrs.namespace)),
        ("name".to_string(), s(attrs.name)),
        (
            "boundNodes".to_string(),
            RestrictedExpression::new_set(
                bound_nodes
                    .iter()
                    .map(|n| RestrictedExpression::new_entity_uid(uid("k8s::Node", n))),
            ),
        ),
    ]);
    let e =
        Entity::new(id.clone(), a, HashSet::new()).unwrap_or_else(|_| Entity::with_uid(id.clone()));
    (id, e)
}
