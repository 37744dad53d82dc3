//! Upstream's `Covers` (pkg/registry/rbac/validation/policy_comparator.go): whether the
//! rules a user holds include every permission of the rules they want to grant. Servant
//! rules are broken down into single (group, resource, verb[, name]) and (url, verb) tuples;
//! each tuple must be covered by one owner rule.

use super::Rule;

/// `(covered, the uncovered tuples)`.
pub fn covers(owner: &[Rule], servant: &[Rule]) -> (bool, Vec<Rule>) {
    let missing: Vec<Rule> = servant
        .iter()
        .flat_map(breakdown)
        .filter(|sub| !owner.iter().any(|o| rule_covers(o, sub)))
        .collect();
    (missing.is_empty(), missing)
}

fn one(s: &str) -> Vec<String> {
    vec![s.to_string()]
}

/// Upstream's `BreakdownRule`.
pub fn breakdown(rule: &Rule) -> Vec<Rule> {
    let mut out = Vec::new();
    for g in &rule.api_groups {
        for r in &rule.resources {
            for v in &rule.verbs {
                let base = Rule {
                    api_groups: one(g),
                    resources: one(r),
                    verbs: one(v),
                    ..Default::default()
                };
                if rule.resource_names.is_empty() {
                    out.push(base);
                } else {
                    for n in &rule.resource_names {
                        out.push(Rule {
                            resource_names: one(n),
                            ..base.clone()
                        });
                    }
                }
            }
        }
    }
    for u in &rule.non_resource_urls {
        for v in &rule.verbs {
            out.push(Rule {
                non_resource_urls: one(u),
                verbs: one(v),
                ..Default::default()
            });
        }
    }
    out
}

fn has(set: &[String], e: &str) -> bool {
    set.iter().any(|s| s == e)
}

fn has_all(set: &[String], want: &[String]) -> bool {
    want.iter().all(|w| has(set, w))
}

fn resource_covers_all(set: &[String], want: &[String]) -> bool {
    if has(set, "*") || has_all(set, want) {
        return true;
    }
    want.iter().all(|path| {
        has(set, path)
            || path
                .split_once('/')
                .is_some_and(|(_, sub)| has(set, &format!("*/{sub}")))
    })
}

fn url_covers(owner: &str, sub: &str) -> bool {
    owner == sub || (owner.ends_with('*') && sub.starts_with(owner.trim_end_matches('*')))
}

/// Upstream's `ruleCovers`: `sub` holds at most one verb, resource and name.
fn rule_covers(owner: &Rule, sub: &Rule) -> bool {
    let verbs = has(&owner.verbs, "*") || has_all(&owner.verbs, &sub.verbs);
    let groups = has(&owner.api_groups, "*") || has_all(&owner.api_groups, &sub.api_groups);
    let resources = resource_covers_all(&owner.resources, &sub.resources);
    let urls = sub
        .non_resource_urls
        .iter()
        .all(|p| owner.non_resource_urls.iter().any(|o| url_covers(o, p)));
    let names = if sub.resource_names.is_empty() {
        owner.resource_names.is_empty()
    } else {
        owner.resource_names.is_empty() || has_all(&owner.resource_names, &sub.resource_names)
    };
    verbs && groups && resources && names && urls
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> Rule {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        Rule {
            api_groups: v(groups),
            resources: v(resources),
            verbs: v(verbs),
            resource_names: v(names),
            ..Default::default()
        }
    }

    fn url(urls: &[&str], verbs: &[&str]) -> Rule {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        Rule {
            non_resource_urls: v(urls),
            verbs: v(verbs),
            ..Default::default()
        }
    }

    #[test]
    fn covers_like_upstream() {
        let star = r(&["*"], &["*"], &["*"], &[]);
        let pods_read = r(&[""], &["pods"], &["get", "list"], &[]);
        let cases: Vec<(Vec<Rule>, Vec<Rule>, bool)> = vec![
            (vec![star.clone()], vec![pods_read.clone()], true),
            (
                vec![pods_read.clone()],
                vec![r(&[""], &["pods"], &["get"], &[])],
                true,
            ),
            (
                vec![pods_read.clone()],
                vec![r(&[""], &["pods"], &["delete"], &[])],
                false,
            ),
            (
                vec![pods_read.clone()],
                vec![r(&[""], &["secrets"], &["get"], &[])],
                false,
            ),
            (
                vec![pods_read.clone()],
                vec![r(&["apps"], &["pods"], &["get"], &[])],
                false,
            ),
            // Subresources: exact or */sub.
            (
                vec![pods_read.clone()],
                vec![r(&[""], &["pods/log"], &["get"], &[])],
                false,
            ),
            (
                vec![r(&[""], &["*/log"], &["get"], &[])],
                vec![r(&[""], &["pods/log"], &["get"], &[])],
                true,
            ),
            // resourceNames: an unrestricted owner covers named; named covers only named.
            (
                vec![pods_read.clone()],
                vec![r(&[""], &["pods"], &["get"], &["a"])],
                true,
            ),
            (
                vec![r(&[""], &["pods"], &["get"], &["a"])],
                vec![r(&[""], &["pods"], &["get"], &[])],
                false,
            ),
            (
                vec![r(&[""], &["pods"], &["get"], &["a", "b"])],
                vec![r(&[""], &["pods"], &["get"], &["b"])],
                true,
            ),
            // Split across owner rules per tuple.
            (
                vec![
                    r(&[""], &["pods"], &["get"], &[]),
                    r(&[""], &["pods"], &["list"], &[]),
                ],
                vec![pods_read.clone()],
                true,
            ),
            // Non-resource URLs.
            (
                vec![url(&["/healthz/*"], &["get"])],
                vec![url(&["/healthz/ping"], &["get"])],
                true,
            ),
            (
                vec![url(&["/healthz"], &["get"])],
                vec![url(&["/healthz/ping"], &["get"])],
                false,
            ),
            (
                vec![url(&["*"], &["*"])],
                vec![url(&["/metrics"], &["get"])],
                true,
            ),
            (
                vec![star.clone()],
                vec![url(&["/metrics"], &["get"])],
                false,
            ),
            (vec![], vec![], true),
        ];
        for (i, (owner, servant, want)) in cases.into_iter().enumerate() {
            let (ok, missing) = covers(&owner, &servant);
            assert_eq!(ok, want, "case {i}: missing {missing:?}");
            assert_eq!(missing.is_empty(), want, "case {i}");
        }
    }

    #[test]
    fn uncovered_tuples_are_reported() {
        let (_, missing) = covers(
            &[r(&[""], &["pods"], &["get"], &[])],
            &[r(&[""], &["pods", "secrets"], &["get", "list"], &[])],
        );
        let text: Vec<String> = missing.iter().map(Rule::compact).collect();
        assert_eq!(
            text,
            [
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["list"]}"#,
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}"#,
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["list"]}"#,
            ]
        );
    }
}
