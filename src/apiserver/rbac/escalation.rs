//! The bind/escalate checks on RBAC writes (upstream's `ConfirmNoEscalation`,
//! `BindingAuthorized`, `RoleEscalationAuthorized` and `EscalationAllowed` in
//! pkg/registry/rbac): nobody grants more than they hold.
//!
//! * Role/ClusterRole create or update: allowed if the writer's effective RBAC rules in the
//!   request namespace cover every rule (`Covers`), or the authorizer permits `escalate` on
//!   that role.
//! * RoleBinding/ClusterRoleBinding create or update: allowed if the authorizer permits `bind`
//!   on the referenced role (resource roles/clusterroles, its name, the binding's namespace),
//!   or the writer holds every rule of that role (which must exist).
//! * Members of `system:masters` always pass (upstream's privileged group), and updates that
//!   only touch garbage-collection fields (ownerReferences, finalizers) are not checked.
//!
//! A refusal is upstream's 403: `<gr> "<name>" is forbidden: user "bob" (groups=[...]) is
//! attempting to grant RBAC permissions not currently held:\n{APIGroups:[...], ...}`.

use serde_json::{json, Value};

use crate::apiserver::context::Ctx;
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::storage;
use crate::auth::rbac::{covers, rules_of, Rule, GROUP};
use crate::auth::{Attributes, UserInfo};

pub async fn check(ctx: &Ctx, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    if ctx.ri.group != GROUP {
        return Ok(());
    }
    let Some(rbac) = ctx.state.enforcement.rbac() else {
        return Ok(());
    };
    if ctx.user.groups.iter().any(|g| g == "system:masters") {
        return Ok(());
    }
    if old.is_some_and(|old| only_gc_fields(old, obj)) {
        return Ok(());
    }
    let namespace = ctx.namespace().to_string();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let forbidden = |why: String| {
        ApiError::forbidden(format!(
            "{} \"{name}\" is forbidden: {why}",
            ctx.ri.group_resource()
        ))
        .with_details(json!({"group": GROUP, "kind": ctx.ri.plural, "name": name}))
    };
    let wanted: Vec<Rule> = match ctx.ri.kind.as_str() {
        "Role" | "ClusterRole" => {
            if permits(ctx, "escalate", &ctx.ri.plural, &namespace, name) {
                return Ok(());
            }
            rules_of(obj)
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let role_name = obj["roleRef"]["name"].as_str().unwrap_or_default();
            let role_plural = match obj["roleRef"]["kind"].as_str() {
                Some("Role") => "roles",
                Some("ClusterRole") => "clusterroles",
                // Validation rejects other kinds; nothing to grant here.
                _ => return Ok(()),
            };
            if permits(ctx, "bind", role_plural, &namespace, role_name) {
                return Ok(());
            }
            match role_rules(ctx, role_plural, &namespace, role_name).await? {
                Some(rules) => rules,
                None => {
                    return Err(forbidden(format!(
                        "{role_plural}.{GROUP} \"{role_name}\" not found"
                    )))
                }
            }
        }
        _ => return Ok(()),
    };
    let held = rbac.rules(&ctx.user, &namespace);
    let (ok, missing) = covers(&held, &wanted);
    if ok {
        return Ok(());
    }
    let mut lines: Vec<String> = missing.iter().map(Rule::compact).collect();
    lines.sort();
    lines.dedup();
    Err(forbidden(format!(
        "user {:?} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        ctx.user.name,
        groups(&ctx.user),
        lines.join("\n")
    )))
}

/// Go's `%q` of a string slice: `["a" "b"]`.
fn groups(u: &UserInfo) -> String {
    let q: Vec<String> = u.groups.iter().map(|g| format!("{g:?}")).collect();
    format!("[{}]", q.join(" "))
}

fn permits(ctx: &Ctx, verb: &str, plural: &str, namespace: &str, name: &str) -> bool {
    let path = format!("/apis/{GROUP}/v1/{plural}/{name}");
    ctx.state
        .enforcement
        .authorize(&Attributes {
            user: &ctx.user,
            verb,
            resource_request: true,
            api_group: GROUP,
            resource: plural,
            subresource: "",
            namespace,
            name,
            path: &path,
        })
        .is_allowed()
}

/// The rules of a role, read from the store as upstream's `GetRoleReferenceRules` does.
async fn role_rules(
    ctx: &Ctx,
    plural: &str,
    namespace: &str,
    name: &str,
) -> ApiResult<Option<Vec<Rule>>> {
    let Some(ri) = ctx.state.registry.lookup(GROUP, "v1", plural) else {
        return Ok(None);
    };
    let ns = if ri.namespaced { namespace } else { "" };
    let kv = ctx
        .state
        .store
        .get(&storage::key(&ri, ns, name), None)
        .await
        .map_err(|e| ApiError::from_store(e, &ri, name))?;
    Ok(kv
        .and_then(|kv| storage::decode_object(&kv).ok())
        .map(|v| rules_of(&v)))
}

/// Upstream's `IsOnlyMutatingGCFields`.
fn only_gc_fields(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in [
                "ownerReferences",
                "finalizers",
                "managedFields",
                "resourceVersion",
            ] {
                m.remove(f);
            }
        }
        v
    };
    strip(old) == strip(new)
}
