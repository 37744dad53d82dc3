//! Which request facts a set of policies can look at, so the decision cache keys only on those.
//!
//! An attacker chooses object names and URL paths freely (a 403 for a made-up name costs them
//! nothing); if the decision cache keyed on them, every such request would add an entry. But a
//! decision can depend on the name only through `resource.name`, and on the path only through
//! `resource.path` or the resource entity's uid (which is the path): a policy set that never
//! mentions them decides every name and path alike, and its decisions are cached without them.
//!
//! The analysis reads each policy's JSON form (Cedar's EST) and is conservative: any use of the
//! `resource` variable other than reading one of its attributes (`resource == ...`,
//! `resource in ...`, tags, a scope naming a resource entity) counts as depending on the uid.
//! A policy whose scope is `resource is k8s::NonResourceURL` cannot apply to an API object
//! request and vice versa, so it does not make the other kind's keys longer.

use cedar_policy::Policy;
use serde_json::Value;

/// What the decisions of a policy set may depend on beyond the attributes every key has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depends {
    /// API object requests: `resource.name`.
    pub name: bool,
    /// API object requests: the resource entity's uid (the request path).
    pub resource_uid: bool,
    /// Non-resource requests: `resource.path` or the entity's uid (also the path).
    pub url_path: bool,
    /// Some `permit` can apply to API object requests.
    pub permits_resources: bool,
    /// Some `permit` can apply to non-resource requests.
    pub permits_urls: bool,
}

/// What policies mention about the resource, whatever its type.
#[derive(Default)]
struct Mentions {
    name: bool,
    path: bool,
    uid: bool,
}

impl Depends {
    /// The union over `policies`.
    pub fn of<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Depends {
        let mut d = Depends::default();
        for p in policies {
            d.add(p);
        }
        d
    }

    fn add(&mut self, policy: &Policy) {
        let Ok(json) = policy.to_json() else {
            // Cannot read it: assume it looks at everything.
            *self = Depends {
                name: true,
                resource_uid: true,
                url_path: true,
                permits_resources: true,
                permits_urls: true,
            };
            return;
        };
        let scope = &json["resource"];
        let (objects, urls) = match (scope["op"].as_str(), scope["entity_type"].as_str()) {
            (Some("is"), Some(t)) if t.ends_with("NonResourceURL") => (false, true),
            (Some("is"), Some(t)) if t.ends_with("Resource") => (true, false),
            _ => (true, true),
        };
        let mut m = Mentions::default();
        // A scope naming an entity (`resource == k8s::Resource::"..."`, `in`, `is ... in`).
        if scope.get("entity").is_some() || scope.get("in").is_some() {
            m.uid = true;
        }
        for c in json["conditions"].as_array().into_iter().flatten() {
            walk(&c["body"], &mut m);
        }
        let permit = json["effect"].as_str() == Some("permit");
        if objects {
            self.name |= m.name;
            self.resource_uid |= m.uid;
            self.permits_resources |= permit;
        }
        if urls {
            self.url_path |= m.path || m.uid;
            self.permits_urls |= permit;
        }
    }
}

fn is_resource_var(v: &Value) -> bool {
    v.get("Var").and_then(Value::as_str) == Some("resource")
}

fn walk(v: &Value, m: &mut Mentions) {
    match v {
        Value::Object(map) => {
            for op in [".", "has"] {
                if let Some(access) = map.get(op) {
                    if is_resource_var(&access["left"]) {
                        match access["attr"].as_str() {
                            Some("name") => m.name = true,
                            Some("path") => m.path = true,
                            Some(_) => {}
                            None => m.uid = true,
                        }
                        return;
                    }
                }
            }
            // `resource is T` tests only the type, which every key already fixes.
            if let Some(is) = map.get("is") {
                if is_resource_var(&is["left"]) && is.get("in").is_none() {
                    return;
                }
            }
            if is_resource_var(v) {
                m.uid = true;
                return;
            }
            map.values().for_each(|x| walk(x, m));
        }
        Value::Array(items) => items.iter().for_each(|x| walk(x, m)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy::PolicyId;

    fn deps(text: &str) -> Depends {
        let p = Policy::parse(Some(PolicyId::new("t")), text).expect("parses");
        Depends::of([&p])
    }

    #[test]
    fn attribute_reads_other_than_name_and_path_add_nothing() {
        let d = deps(
            r#"permit (principal, action, resource is k8s::Resource) when { resource.namespace == "a" && resource.resource == "pods" && principal.name == "x" };"#,
        );
        assert_eq!(
            d,
            Depends {
                permits_resources: true,
                ..Default::default()
            }
        );
    }

    #[test]
    fn names_paths_and_uids_are_found() {
        let d = deps(
            r#"permit (principal, action, resource is k8s::Resource) when { resource has name && resource.name == "web" };"#,
        );
        assert!(d.name && !d.resource_uid && !d.url_path);
        let d = deps(
            r#"permit (principal, action, resource is k8s::NonResourceURL) when { resource.path like "/api/*" };"#,
        );
        assert!(!d.name && d.url_path && !d.permits_resources && d.permits_urls);
        let d = deps(r#"forbid (principal, action, resource == k8s::Resource::"/api/v1/x");"#);
        assert!(d.resource_uid && d.url_path && !d.permits_resources);
        let d = deps(
            r#"permit (principal, action, resource) when { resource == k8s::NonResourceURL::"/x" };"#,
        );
        assert!(d.resource_uid && d.url_path);
        let d = deps(
            r#"permit (principal, action, resource) when { (if true then resource else principal) has name };"#,
        );
        assert!(
            d.resource_uid,
            "a resource used in another way counts as its uid"
        );
    }

    #[test]
    fn the_system_discovery_policy_keeps_object_keys_short() {
        let files = crate::auth::cedar::PolicyFiles::embedded();
        let schema = files.authz_schema().expect("schema");
        let system = files.policies("system", &schema).expect("system policies");
        let d = Depends::of(system.iter().filter(|p| {
            ["system/discovery", "system/basic-user"].contains(&p.id().to_string().as_str())
        }));
        assert!(d.url_path, "discovery reads resource.path");
        assert!(!d.name && !d.resource_uid, "{d:?}");
    }
}
