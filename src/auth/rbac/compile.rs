//! RBAC objects → Cedar policies, as upstream's `RBACAuthorizer` decides.
//!
//! One `permit` per (binding, rule of its role), id `<binding id>/rule-<n>` (n = the rule's
//! 0-based index in the role). The policy *text* is generated and parsed, so what runs is
//! exactly what `rampart policy` would show; every string that came from a client is escaped
//! as a Cedar string literal (and `*` as well inside `like` patterns). A rule becomes:
//!
//! ```text
//! permit (principal, action in [k8s::Action::"get", ...], resource is k8s::Resource)
//! when { (principal in k8s::Group::"devs" || principal in [k8s::User::"bob", k8s::User::"ann"]) &&
//!        resource.namespace == "ns" && (resource.apiGroup == "apps") &&
//!        (((resource.resource == "deployments") && resource.subresource == "") ||
//!         (resource.resource == "deployments" && resource.subresource == "scale")) &&
//!        (resource.name == "web") };
//! ```
//!
//! Lists of up to eight names are `==` chains rather than set literals, and one subject is
//! `principal in X`: Cedar rebuilds a set literal on every evaluation.
//!
//! Upstream details kept: `*` verbs/groups/resources match anything; `*/sub` matches any
//! resource's `sub`; resourceNames never match a request without a name (collections,
//! creates); nonResourceURLs match exactly or by `prefix*`, and only through
//! ClusterRoleBindings (a RoleBinding's rules apply only to requests in its namespace, and
//! non-resource requests have none); verbs the schema does not know never match.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cedar_policy::{EntityUid, Policy, PolicyId};

use super::index::{Grant, Index};
use super::{Binding, Objects, Rule};
use crate::auth::cedar::entities::{uid, Principal, ACTIONS};
use crate::auth::cedar::Compiled;

/// The compiled policies and the subject index built from the same snapshot.
pub struct Output {
    pub policies: Vec<Compiled>,
    pub index: Index,
}

/// A Cedar string literal (quotes included).
pub fn literal(s: &str) -> String {
    escape(s, false)
}

/// A Cedar `like` pattern matching strings that start with `prefix`.
fn prefix_pattern(prefix: &str) -> String {
    let mut p = escape(prefix, true);
    p.insert(p.len() - 1, '*');
    p
}

fn escape(s: &str, like: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '*' if like => out.push_str("\\*"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `expr` equals one of `items`. Short lists become `==` chains: Cedar builds (and hashes) a
/// set literal on every evaluation, which made a matching RBAC rule cost several times a
/// non-matching one; a chain of comparisons stops at the first hit.
fn one_of(expr: &str, items: &[&str]) -> String {
    if items.len() <= SHORT_LIST {
        let parts: Vec<String> = items
            .iter()
            .map(|s| format!("{expr} == {}", literal(s)))
            .collect();
        return format!("({})", parts.join(" || "));
    }
    let parts: Vec<String> = items.iter().map(|s| literal(s)).collect();
    format!("[{}].contains({expr})", parts.join(", "))
}

/// Up to this many alternatives are compared one by one (see [`one_of`]).
const SHORT_LIST: usize = 8;

/// The entity a binding subject names (`None` for kinds RBAC ignores).
pub fn subject_uid(s: &super::Subject, binding_ns: Option<&str>) -> Option<EntityUid> {
    match s.kind.as_str() {
        "User" => Some(Principal::subject_for_user_name(&s.name)),
        "Group" => Some(uid("k8s::Group", &s.name)),
        "ServiceAccount" => {
            // Upstream defaults the namespace to the binding's.
            let ns = if s.namespace.is_empty() {
                binding_ns.unwrap_or_default()
            } else {
                &s.namespace
            };
            (!ns.is_empty() && !s.name.is_empty())
                .then(|| uid("k8s::ServiceAccount", &format!("{ns}/{}", s.name)))
        }
        _ => None,
    }
}

/// The `principal in ...` condition over `subjects`, grouped by entity type (Cedar's strict
/// validation wants sets of one type).
fn principal_clause(subjects: &[EntityUid]) -> String {
    let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in subjects {
        by_type
            .entry(s.type_name().to_string())
            .or_default()
            .push(format!(
                "{}::{}",
                s.type_name(),
                literal(s.id().unescaped())
            ));
    }
    let parts: Vec<String> = by_type
        .values()
        .map(|v| match v.as_slice() {
            // One subject (the common case) needs no set literal either.
            [one] => format!("principal in {one}"),
            _ => format!("principal in [{}]", v.join(", ")),
        })
        .collect();
    format!("({})", parts.join(" || "))
}

/// The Cedar text for one rule granted to `subjects` (`namespace`: a RoleBinding's), or
/// `None` when the rule can never match.
pub fn rule_policy(rule: &Rule, subjects: &[EntityUid], namespace: Option<&str>) -> Option<String> {
    if subjects.is_empty() {
        return None;
    }
    let action = if rule.verbs.iter().any(|v| v == "*") {
        "action".to_string()
    } else {
        let known: Vec<String> = rule
            .verbs
            .iter()
            .filter(|v| ACTIONS.contains(&v.as_str()))
            .map(|v| format!("k8s::Action::{}", literal(v)))
            .collect();
        if known.is_empty() {
            return None;
        }
        format!("action in [{}]", known.join(", "))
    };
    let mut conds = vec![principal_clause(subjects)];
    let resource_type = if !rule.resources.is_empty() {
        if let Some(ns) = namespace {
            conds.push(format!("resource.namespace == {}", literal(ns)));
        }
        if !rule.api_groups.iter().any(|g| g == "*") {
            if rule.api_groups.is_empty() {
                return None;
            }
            let groups: Vec<&str> = rule.api_groups.iter().map(String::as_str).collect();
            conds.push(one_of("resource.apiGroup", &groups));
        }
        if !rule.resources.iter().any(|r| r == "*") {
            conds.push(resources_clause(&rule.resources)?);
        }
        if !rule.resource_names.is_empty() {
            let names: Vec<&str> = rule.resource_names.iter().map(String::as_str).collect();
            conds.push(one_of("resource.name", &names));
        }
        "k8s::Resource"
    } else if !rule.non_resource_urls.is_empty() && namespace.is_none() {
        if !rule.non_resource_urls.iter().any(|u| u == "*") {
            let alts: Vec<String> = rule
                .non_resource_urls
                .iter()
                .map(|u| match u.strip_suffix('*') {
                    Some(_) => format!(
                        "resource.path like {}",
                        prefix_pattern(u.trim_end_matches('*'))
                    ),
                    None => format!("resource.path == {}", literal(u)),
                })
                .collect();
            conds.push(format!("({})", alts.join(" || ")));
        }
        "k8s::NonResourceURL"
    } else {
        return None;
    };
    Some(format!(
        "permit (principal, {action}, resource is {resource_type})\nwhen {{\n  {}\n}};",
        conds.join(" &&\n  ")
    ))
}

/// upstream's `ResourceMatches` over the rule's resources (none of them `*`).
fn resources_clause(resources: &[String]) -> Option<String> {
    let mut plain: Vec<&str> = Vec::new();
    let mut alts: Vec<String> = Vec::new();
    for r in resources {
        match r.split_once('/') {
            None => plain.push(r),
            Some(("*", sub)) if !sub.is_empty() => {
                alts.push(format!("resource.subresource == {}", literal(sub)))
            }
            // `*/` matches nothing upstream.
            Some(("*", _)) => {}
            Some((res, sub)) => alts.push(format!(
                "(resource.resource == {} && resource.subresource == {})",
                literal(res),
                literal(sub)
            )),
        }
    }
    if !plain.is_empty() {
        alts.insert(
            0,
            format!(
                "({} && resource.subresource == \"\")",
                one_of("resource.resource", &plain)
            ),
        );
    }
    if alts.is_empty() {
        return None;
    }
    Some(format!("({})", alts.join(" || ")))
}

/// Compile every binding × rule. Bindings whose role is missing compile to nothing.
pub fn compile(objs: &Objects) -> Output {
    compile_cached(objs, &mut Cache::default())
}

/// Per-binding results of the previous compile: a binding whose object and role rules are
/// unchanged reuses its policies instead of generating and parsing them again, so a change
/// among 10,000 bindings costs one binding's parse.
#[derive(Default)]
pub struct Cache {
    entries: HashMap<String, (Binding, Vec<Rule>, Vec<Compiled>)>,
}

/// [`compile`], reusing (and refreshing) `cache`.
pub fn compile_cached(objs: &Objects, cache: &mut Cache) -> Output {
    let mut policies = Vec::new();
    let mut index = Index::default();
    let mut next = HashMap::with_capacity(objs.bindings.len());
    for b in objs.bindings.values() {
        let Some(rules) = objs.role_rules(b) else {
            continue;
        };
        let subjects = subjects_of(b);
        if subjects.is_empty() {
            continue;
        }
        let id = b.id();
        index.insert(
            &subjects,
            Arc::new(Grant {
                binding: id.clone(),
                namespace: b.namespace.clone(),
                rules: Arc::new(rules.clone()),
            }),
        );
        let compiled = match cache.entries.remove(&id) {
            Some((cb, cr, c)) if cb == *b && cr == *rules => c,
            _ => compile_binding(&id, b, rules, &subjects),
        };
        policies.extend(compiled.iter().cloned());
        next.insert(id, (b.clone(), rules.clone(), compiled));
    }
    cache.entries = next;
    Output { policies, index }
}

fn compile_binding(id: &str, b: &Binding, rules: &[Rule], subjects: &[EntityUid]) -> Vec<Compiled> {
    let mut out = Vec::new();
    for (n, rule) in rules.iter().enumerate() {
        let Some(text) = rule_policy(rule, subjects, b.namespace.as_deref()) else {
            continue;
        };
        let pid = format!("{id}/rule-{n}");
        match Policy::parse(Some(PolicyId::new(&pid)), &text) {
            Ok(policy) => out.push(Compiled {
                policy,
                subjects: subjects.to_vec(),
            }),
            // Only a bug in this module could get here: the text is generated and escaped.
            Err(e) => tracing::error!(id = %pid, error = %e, "cannot compile an RBAC rule"),
        }
    }
    out
}

fn subjects_of(b: &Binding) -> Vec<EntityUid> {
    let mut out: Vec<EntityUid> = b
        .subjects
        .iter()
        .filter_map(|s| subject_uid(s, b.namespace.as_deref()))
        .collect();
    out.sort();
    out.dedup();
    out
}
