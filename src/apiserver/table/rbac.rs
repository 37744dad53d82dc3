//! rbac.authorization.k8s.io/v1 printers: `RoleBinding` and
//! `ClusterRoleBinding`.
//!
//! Copies upstream `printRoleBinding`/`printClusterRoleBinding` with
//! `rbac.SubjectsStrings`. `Role` and `ClusterRole` have no printer
//! upstream; they fall through to the default NAME/CREATED AT convertor.
//!
//! Invariants: USERS, GROUPS and SERVICEACCOUNTS are joined with `", "`;
//! service accounts print as `namespace/name`; subjects of other kinds are
//! not shown (upstream computes but discards them).

use jiff::Timestamp;
use serde_json::Value;

use super::column::{self, string, ColumnDefinition};
use super::object::{items, name, str_at};
use super::{age, Printer};

pub(super) fn printer(kind: &str) -> Option<Printer> {
    match kind {
        "RoleBinding" => Some(Printer {
            columns: role_binding_columns,
            cells,
        }),
        "ClusterRoleBinding" => Some(Printer {
            columns: cluster_role_binding_columns,
            cells,
        }),
        _ => None,
    }
}

const ROLE_REF_DESCRIPTION: &str = "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This field is immutable.";

fn binding_columns(what: &str, role_ref: &str) -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string("Role", role_ref),
        column::age(),
        string("Users", &format!("Users in the {what}")).wide(),
        string("Groups", &format!("Groups in the {what}")).wide(),
        string("ServiceAccounts", &format!("ServiceAccounts in the {what}")).wide(),
    ]
}

fn role_binding_columns() -> Vec<ColumnDefinition> {
    binding_columns("roleBinding", ROLE_REF_DESCRIPTION)
}

fn cluster_role_binding_columns() -> Vec<ColumnDefinition> {
    binding_columns(
        "clusterRoleBinding",
        "RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This field is immutable.",
    )
}

fn cells(binding: &Value, now: Timestamp) -> Vec<Value> {
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut service_accounts = Vec::new();
    for subject in items(binding, &["subjects"]) {
        let subject_name = str_at(subject, &["name"]);
        match str_at(subject, &["kind"]) {
            "ServiceAccount" => service_accounts.push(format!(
                "{}/{subject_name}",
                str_at(subject, &["namespace"])
            )),
            "User" => users.push(subject_name.to_string()),
            "Group" => groups.push(subject_name.to_string()),
            _ => {}
        }
    }
    let role_ref = format!(
        "{}/{}",
        str_at(binding, &["roleRef", "kind"]),
        str_at(binding, &["roleRef", "name"])
    );
    vec![
        name(binding).into(),
        role_ref.into(),
        age::of_object(binding, now).into(),
        users.join(", ").into(),
        groups.join(", ").into(),
        service_accounts.join(", ").into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn binding_subjects_split_by_kind() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().unwrap();
        let rb = json!({"metadata": {"name": "admins", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": [
                {"kind": "User", "name": "alice"}, {"kind": "User", "name": "bob"},
                {"kind": "Group", "name": "ops"},
                {"kind": "ServiceAccount", "namespace": "ci", "name": "deployer"},
                {"kind": "Robot", "name": "r2"}]});
        assert_eq!(
            cells(&rb, now),
            vec![
                json!("admins"),
                json!("ClusterRole/admin"),
                json!("60m"),
                json!("alice, bob"),
                json!("ops"),
                json!("ci/deployer"),
            ]
        );
        assert_eq!(
            cells(&json!({}), now)[1..],
            [
                json!("/"),
                json!("<unknown>"),
                json!(""),
                json!(""),
                json!("")
            ]
        );
    }
}
