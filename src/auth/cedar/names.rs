//! Which object names a set of policies singles out: the string literals a policy compares
//! `resource.name` with (`resource.name == "x"`, `["x", "y"].contains(resource.name)`).
//!
//! `SelfSubjectRulesReview` probes the authorizer to list what a caller may do; probing with
//! no object name cannot find a grant limited to named objects, so it also probes with these
//! names. The analysis only proposes names — every reported rule is still a real decision of
//! the authorizer, so a name found here that grants nothing is never reported.

use std::collections::BTreeSet;

use cedar_policy::Policy;
use serde_json::Value;

/// At most this many names are proposed (each costs one probe per resource and verb).
pub const LIMIT: usize = 32;

/// The names `policies` compare `resource.name` with, sorted, at most [`LIMIT`].
pub fn resource_names(policies: &[Policy]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for p in policies {
        if let Ok(json) = p.to_json() {
            walk(&json, &mut out);
        }
    }
    out.into_iter().take(LIMIT).collect()
}

fn is_resource_name(v: &Value) -> bool {
    v.get(".").is_some_and(|dot| {
        dot["attr"] == "name" && dot["left"].get("Var").and_then(Value::as_str) == Some("resource")
    })
}

fn string_value(v: &Value) -> Option<&str> {
    v.get("Value").and_then(Value::as_str)
}

fn walk(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            if let Some(eq) = map.get("==") {
                let (l, r) = (&eq["left"], &eq["right"]);
                for (a, b) in [(l, r), (r, l)] {
                    if let (true, Some(name)) = (is_resource_name(a), string_value(b)) {
                        out.insert(name.to_string());
                    }
                }
            }
            if let Some(c) = map.get("contains") {
                if is_resource_name(&c["right"]) {
                    for item in c["left"]["Set"].as_array().into_iter().flatten() {
                        if let Some(name) = string_value(item) {
                            out.insert(name.to_string());
                        }
                    }
                }
            }
            map.values().for_each(|x| walk(x, out));
        }
        Value::Array(items) => items.iter().for_each(|x| walk(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy::PolicyId;

    fn p(text: &str) -> Policy {
        Policy::parse(Some(PolicyId::new("t")), text).expect("parses")
    }

    #[test]
    fn finds_names_compared_with_resource_name() {
        let names = resource_names(&[
            p(
                r#"permit (principal, action, resource) when { resource.name == "web" && resource.namespace == "ns" };"#,
            ),
            p(
                r#"permit (principal, action, resource) when { ["a", "b"].contains(resource.name) || "z" == resource.name };"#,
            ),
            p(r#"permit (principal, action, resource) when { resource.resource == "pods" };"#),
        ]);
        assert_eq!(names, vec!["a", "b", "web", "z"]);
    }
}
