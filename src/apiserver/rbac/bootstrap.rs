//! The default RBAC roles and bindings (`policies/rbac/bootstrap.yaml`), reconciled into the
//! store at every start, as upstream's `rbac/bootstrap-roles` post-start hook: missing objects
//! are created; existing ones annotated `rbac.authorization.kubernetes.io/autoupdate: "true"`
//! get back any default rule (or subject, or aggregationRule) they lost, keeping additions;
//! objects with autoupdate "false" are never touched.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::apiserver::{storage, State};
use crate::auth::rbac::GROUP;

const DEFAULTS: &str = include_str!("../../../policies/rbac/bootstrap.yaml");
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
const BOOTSTRAPPING: &str = "kubernetes.io/bootstrapping";

/// The default objects, stamped with apiVersion, annotation and label.
pub fn defaults() -> Vec<Value> {
    let doc: Value = match serde_yaml_ng::from_str(DEFAULTS) {
        Ok(d) => d,
        Err(e) => {
            // The file is compiled in and covered by a unit test.
            tracing::error!(error = %e, "the embedded default RBAC roles do not parse");
            return Vec::new();
        }
    };
    doc["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o.is_object() && o["metadata"].is_object())
        .map(|mut o| {
            o["apiVersion"] = json!(format!("{GROUP}/v1"));
            o["metadata"]["annotations"][AUTOUPDATE] = json!("true");
            o["metadata"]["labels"][BOOTSTRAPPING] = json!("rbac-defaults");
            o
        })
        .collect()
}

fn plural(kind: &str) -> &'static str {
    match kind {
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "Role" => "roles",
        _ => "rolebindings",
    }
}

/// Merge the default `want` into the stored `have`; `None` when nothing changes.
fn reconcile(have: &Value, want: &Value) -> Option<Value> {
    if have["metadata"]["annotations"][AUTOUPDATE] == "false" {
        return None;
    }
    // Indexing assignments below would panic on a malformed stored object: leave it alone.
    let shape_ok = have.is_object()
        && have["metadata"].is_object()
        && ["labels", "annotations"]
            .iter()
            .all(|f| matches!(have["metadata"][f], Value::Null | Value::Object(_)));
    if !shape_ok {
        return None;
    }
    let mut out = have.clone();
    let add_missing = |out: &mut Value, field: &str| {
        let mut list = have[field].as_array().cloned().unwrap_or_default();
        for item in want[field].as_array().into_iter().flatten() {
            if !list.contains(item) {
                list.push(item.clone());
            }
        }
        out[field] = Value::Array(list);
    };
    if want.get("aggregationRule").is_some() {
        // The aggregation controller owns `rules`.
        out["aggregationRule"] = want["aggregationRule"].clone();
    } else if want.get("rules").is_some() {
        add_missing(&mut out, "rules");
    }
    if want.get("subjects").is_some() {
        add_missing(&mut out, "subjects");
        out["roleRef"] = want["roleRef"].clone();
    }
    for (k, v) in want["metadata"]["labels"].as_object().into_iter().flatten() {
        out["metadata"]["labels"][k] = v.clone();
    }
    for (k, v) in want["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
    {
        out["metadata"]["annotations"][k] = v.clone();
    }
    (out != *have).then_some(out)
}

pub async fn run(state: &Arc<State>) -> Result<(), crate::store::Error> {
    for mut want in defaults() {
        let kind = want["kind"].as_str().unwrap_or_default().to_string();
        let name = want["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        // Roles and RoleBindings name their namespace (kube-system); cluster objects none.
        let namespace = want["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let Some(ri) = state.registry.lookup(GROUP, "v1", plural(&kind)) else {
            continue;
        };
        let key = storage::key(&ri, &namespace, &name);
        match state.store.get(&key, None).await? {
            None => {
                want["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
                want["metadata"]["creationTimestamp"] = json!(crate::apiserver::now_rfc3339());
                let bytes = serde_json::to_vec(&want).unwrap_or_default();
                match state.store.create(&key, bytes.into()).await {
                    Ok(_) | Err(crate::store::Error::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Some(kv) => {
                let Ok(have) = storage::decode_object(&kv) else {
                    continue;
                };
                if let Some(fixed) = reconcile(&have, &want) {
                    let Ok(bytes) = storage::encode(&fixed) else {
                        continue;
                    };
                    // One attempt, not a retry loop: see the comment on a conflict below.
                    match state.store.update(&key, bytes, kv.mod_revision).await {
                        // Someone else wrote it meanwhile: theirs wins until the next start.
                        Ok(_) | Err(crate::store::Error::Conflict { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_compile() {
        let d = defaults();
        let names: Vec<&str> = d
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap_or_default())
            .collect();
        for want in [
            "cluster-admin",
            "admin",
            "edit",
            "view",
            "system:basic-user",
            "system:node",
            "extension-apiserver-authentication-reader",
            "system::extension-apiserver-authentication-reader",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let mut objs = crate::auth::rbac::Objects::default();
        for o in &d {
            assert_eq!(o["metadata"]["annotations"][AUTOUPDATE], "true");
            objs.apply(o);
        }
        let out = crate::auth::rbac::compile(&objs);
        assert!(out.policies.len() >= 6, "{}", out.policies.len());
        let schema = crate::auth::cedar::PolicyFiles::embedded()
            .schema()
            .expect("schema");
        let set =
            cedar_policy::PolicySet::from_policies(out.policies.into_iter().map(|c| c.policy))
                .expect("set");
        let v = cedar_policy::Validator::new(schema)
            .validate(&set, cedar_policy::ValidationMode::Strict);
        assert!(v.validation_errors().next().is_none());
    }

    #[test]
    fn reconcile_keeps_edits_and_respects_autoupdate() {
        let want = json!({"kind": "ClusterRole", "metadata": {"name": "x", "annotations": {AUTOUPDATE: "true"}},
                          "rules": [{"verbs": ["get"]}]});
        let mut have = json!({"kind": "ClusterRole", "metadata": {"name": "x", "annotations": {AUTOUPDATE: "true"}},
                              "rules": [{"verbs": ["list"]}]});
        let fixed = reconcile(&have, &want).expect("changes");
        assert_eq!(
            fixed["rules"],
            json!([{"verbs": ["list"]}, {"verbs": ["get"]}])
        );
        assert!(reconcile(&fixed, &want).is_none());
        have["metadata"]["annotations"][AUTOUPDATE] = json!("false");
        assert!(reconcile(&have, &want).is_none());
    }
}
