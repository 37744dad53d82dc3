//! The access review APIs of `authorization.k8s.io/v1`: `SelfSubjectAccessReview` ("may I?",
//! `kubectl auth can-i`), `SubjectAccessReview` ("may they?"), `LocalSubjectAccessReview` (the
//! same, scoped to the URL's namespace) and `SelfSubjectRulesReview` (`kubectl auth can-i
//! --list`). Create-only, as upstream: nothing is stored, the answer is the response's status.
//!
//! Each access review is the same decision the API server makes for a real request: one call
//! to the Cedar authorizer with the reviewed subject and attributes. `status.reason` names the
//! deciding policy ids only (`allowed by policy system/masters`), never other users' data;
//! `status.denied` is set when a `forbid` decided; a policy that errors fails closed and is
//! reported in `status.evaluationError`. Who may ask about others is itself a policy decision
//! made before this module runs (creating `subjectaccessreviews`): `system:masters` may, a
//! plain user may not; the self reviews are open to every authenticated user
//! (`system/basic-user`).
//!
//! Differences from upstream, both forced by Cedar: a verb of `*` is allowed only when every
//! verb is (upstream RBAC matches it against rules with `*` verbs, which a policy language
//! cannot express), and `SelfSubjectRulesReview` cannot read rules back out of arbitrary
//! policies, so it **probes**: it asks the authorizer about every served resource (and its
//! subresources) × verb in the namespace with no object name, and about a fixed list of
//! non-resource URLs, and reports the allowed combinations as rules; RBAC's own rules are added
//! from the compiled snapshot, and grants limited to named objects in Cedar policies are found
//! by probing again with every name the caller's policies compare `resource.name` with
//! (`auth::cedar::names`). Grants that depend on other facts (name patterns, labels, a node's
//! bound objects) cannot be found that way, so the answer is marked `incomplete: true` unless
//! the caller may do everything (reported as upstream's `*` rules, as for cluster-admin) — as
//! upstream marks the rules of authorizers it cannot enumerate (webhooks).

use std::collections::BTreeMap;

use k8s_openapi::api::authorization::v1 as authz;
use serde_json::{json, Value};

use crate::api::ResourceInfo;
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::State;
use crate::auth::cedar::entities::ACTIONS;
use crate::auth::{Attributes, Decision, UserInfo};

/// The kinds served here (all in `authorization.k8s.io`).
pub const KINDS: &[&str] = &[
    "SelfSubjectAccessReview",
    "SubjectAccessReview",
    "LocalSubjectAccessReview",
    "SelfSubjectRulesReview",
];

/// Verbs probed on subresources (their verbs are not in the resource table).
const SUBRESOURCE_VERBS: &[&str] = &["get", "create", "update", "patch"];

/// Non-resource URLs probed for `SelfSubjectRulesReview`, as upstream's default roles name them.
const NON_RESOURCE_URLS: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/healthz/*",
    "/livez",
    "/livez/*",
    "/readyz",
    "/readyz/*",
    "/version",
    "/version/",
    "/openapi",
    "/openapi/*",
    "/.well-known/openid-configuration",
    "/openid/v1/jwks",
    "/metrics",
];

/// Verbs a non-resource URL can be requested with (lower-case HTTP methods).
const NON_RESOURCE_VERBS: &[&str] = &["get", "head", "post", "put", "patch", "delete", "options"];

/// Answer one review. `ri` is the served kind, `url_namespace` the request's namespace (for
/// `LocalSubjectAccessReview`), `obj` the decoded body (type already checked).
pub fn review(
    state: &State,
    caller: &UserInfo,
    ri: &ResourceInfo,
    url_namespace: &str,
    mut obj: Value,
) -> ApiResult<Value> {
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = match ri.kind.as_str() {
        "SelfSubjectAccessReview" => {
            let spec: authz::SelfSubjectAccessReviewSpec = parse(ri, spec)?;
            let attrs = one_of(ri, spec.resource_attributes, spec.non_resource_attributes)?;
            access_status(state, caller, &attrs)
        }
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let spec: authz::SubjectAccessReviewSpec = parse(ri, spec)?;
            let user = spec.user.unwrap_or_default();
            let groups = spec.groups.unwrap_or_default();
            if user.is_empty() && groups.is_empty() {
                return Err(ApiError::invalid(
                    ri,
                    "",
                    vec![(
                        "spec.user".into(),
                        "Invalid value: \"\": at least one of user or group must be specified"
                            .into(),
                    )],
                ));
            }
            if ri.kind == "LocalSubjectAccessReview" {
                check_local(
                    ri,
                    &obj,
                    &spec.resource_attributes,
                    &spec.non_resource_attributes,
                    url_namespace,
                )?;
            }
            let attrs = one_of(ri, spec.resource_attributes, spec.non_resource_attributes)?;
            let subject = UserInfo {
                name: user,
                uid: spec.uid.unwrap_or_default(),
                groups,
                extra: spec.extra.unwrap_or_default(),
            };
            access_status(state, &subject, &attrs)
        }
        "SelfSubjectRulesReview" => {
            let spec: authz::SelfSubjectRulesReviewSpec = parse(ri, spec)?;
            rules_status(state, caller, spec.namespace.as_deref().unwrap_or(""))
        }
        other => {
            return Err(ApiError::method_not_allowed(format!(
                "{other} is not an access review"
            )))
        }
    };
    let meta = obj
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| json!({})));
    if let Some(Value::Object(m)) = meta {
        m.insert(
            "creationTimestamp".into(),
            json!(crate::apiserver::now_rfc3339()),
        );
        if ri.namespaced {
            m.insert("namespace".into(), json!(url_namespace));
        }
    }
    obj["status"] = status;
    Ok(obj)
}

fn parse<T: serde::de::DeserializeOwned>(ri: &ResourceInfo, spec: Value) -> ApiResult<T> {
    serde_json::from_value(spec)
        .map_err(|e| ApiError::bad_request(format!("cannot decode the {} spec: {e}", ri.kind)))
}

/// The attributes under review: exactly one of resourceAttributes / nonResourceAttributes.
enum Reviewed {
    Resource(Box<authz::ResourceAttributes>),
    NonResource(authz::NonResourceAttributes),
}

fn one_of(
    ri: &ResourceInfo,
    resource: Option<authz::ResourceAttributes>,
    non_resource: Option<authz::NonResourceAttributes>,
) -> ApiResult<Reviewed> {
    match (resource, non_resource) {
        (Some(r), None) => Ok(Reviewed::Resource(Box::new(r))),
        (None, Some(n)) => Ok(Reviewed::NonResource(n)),
        (r, _) => Err(ApiError::invalid(
            ri,
            "",
            vec![(
                if r.is_some() {
                    "spec.nonResourceAttributes".into()
                } else {
                    "spec.resourceAttributes".into()
                },
                "Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified".into(),
            )],
        )),
    }
}

/// Upstream's rules for the namespaced review: resource attributes only, in the URL's
/// namespace.
fn check_local(
    ri: &ResourceInfo,
    obj: &Value,
    resource: &Option<authz::ResourceAttributes>,
    non_resource: &Option<authz::NonResourceAttributes>,
    url_namespace: &str,
) -> ApiResult<()> {
    if url_namespace.is_empty() {
        return Err(ApiError::bad_request("namespace is required on this type"));
    }
    if non_resource.is_some() {
        return Err(ApiError::invalid(
            ri,
            "",
            vec![(
                "spec.nonResourceAttributes".into(),
                "Invalid value: disallowed on this kind of request".into(),
            )],
        ));
    }
    let meta_ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
    let spec_ns = resource
        .as_ref()
        .and_then(|r| r.namespace.as_deref())
        .unwrap_or("");
    if (!meta_ns.is_empty() && meta_ns != url_namespace) || spec_ns != url_namespace {
        return Err(ApiError::bad_request(format!(
            "spec.resourceAttributes.namespace must match namespace: {url_namespace}"
        )));
    }
    Ok(())
}

/// Ask the authorizer (all verbs when the verb is `*`).
fn decide(state: &State, attrs: &Attributes<'_>) -> Decision {
    if attrs.verb != "*" {
        return state.enforcement.authorize(attrs);
    }
    let mut ids = Vec::new();
    for verb in ACTIONS {
        let d = state.enforcement.authorize(&Attributes {
            verb,
            ..attrs.clone()
        });
        if !d.is_allowed() {
            return d;
        }
        for id in d.into_policies() {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    Decision::allow(ids)
}

fn access_status(state: &State, user: &UserInfo, reviewed: &Reviewed) -> Value {
    let decision = match reviewed {
        Reviewed::Resource(r) => {
            let s = |v: &Option<String>| v.clone().unwrap_or_default();
            let (group, resource, sub, ns, name) = (
                s(&r.group),
                s(&r.resource),
                s(&r.subresource),
                s(&r.namespace),
                s(&r.name),
            );
            let verb = s(&r.verb);
            // The entity id only needs to be unique per object; it reads like the URL.
            let path = format!("{group}/{resource}/{sub}@{ns}/{name}");
            decide(
                state,
                &Attributes {
                    user,
                    verb: &verb,
                    resource_request: true,
                    api_group: &group,
                    resource: &resource,
                    subresource: &sub,
                    namespace: &ns,
                    name: &name,
                    path: &path,
                },
            )
        }
        Reviewed::NonResource(n) => {
            let path = n.path.clone().unwrap_or_default();
            let verb = n.verb.clone().unwrap_or_default();
            decide(
                state,
                &Attributes {
                    user,
                    verb: &verb,
                    resource_request: false,
                    api_group: "",
                    resource: "",
                    subresource: "",
                    namespace: "",
                    name: "",
                    path: &path,
                },
            )
        }
    };
    status_of(state, &decision)
}

/// `SubjectAccessReviewStatus` for a decision.
fn status_of(state: &State, d: &Decision) -> Value {
    if d.is_allowed() {
        let reason = if state.enforcement.authorizer().is_none() {
            "authorization is disabled".to_string()
        } else {
            format!("allowed by policy {}", d.policies().join(", "))
        };
        return json!({"allowed": true, "reason": reason});
    }
    if d.is_evaluation_error() {
        return json!({"allowed": false, "evaluationError": d.reason()});
    }
    let mut status = json!({"allowed": false, "reason": d.reason()});
    if !d.policies().is_empty() {
        status["denied"] = json!(true);
    }
    status
}

/// The probes of one `SelfSubjectRulesReview`: decisions from the authorizer's prober (which
/// neither reads nor fills the decision cache and answers for free when no permit of the
/// verb's slice can apply), at most [`MAX_EVALUATIONS`] Cedar evaluations per review.
struct Probes<'a> {
    prober: Option<crate::auth::cedar::Prober<'a>>,
    /// The budget ran out: later probes answered "no" and the review says so.
    exhausted: bool,
}

/// Cedar evaluations one review may make (a few milliseconds); with a large registry (many
/// CRDs) the rest is reported as not evaluated rather than costing more.
const MAX_EVALUATIONS: usize = 4096;

impl<'a> Probes<'a> {
    fn new(state: &'a State, user: &'a UserInfo) -> Self {
        Probes {
            prober: state.enforcement.authorizer().map(|a| a.prober(user)),
            exhausted: false,
        }
    }

    fn allowed(&mut self, attrs: &Attributes<'_>) -> bool {
        let Some(p) = &mut self.prober else {
            return true;
        };
        if p.evaluations >= MAX_EVALUATIONS {
            self.exhausted = true;
            return false;
        }
        p.allowed(attrs)
    }
}

/// Allowed for this probe (on the collection, no object name)?
fn probe(
    probes: &mut Probes<'_>,
    user: &UserInfo,
    verb: &str,
    group: &str,
    resource: &str,
    sub: &str,
    ns: &str,
) -> bool {
    probe_named(probes, user, verb, group, resource, sub, ns, "")
}

/// Allowed for this probe on the object `name`?
#[allow(clippy::too_many_arguments)]
fn probe_named(
    probes: &mut Probes<'_>,
    user: &UserInfo,
    verb: &str,
    group: &str,
    resource: &str,
    sub: &str,
    ns: &str,
    name: &str,
) -> bool {
    let path = format!("{group}/{resource}/{sub}@{ns}/{name}");
    probes.allowed(&Attributes {
        user,
        verb,
        resource_request: true,
        api_group: group,
        resource,
        subresource: sub,
        namespace: ns,
        name,
        path: &path,
    })
}

/// Verbs that address one object by name (what a name-scoped grant can allow).
const NAMED_VERBS: &[&str] = &["get", "update", "patch", "delete"];

/// Rules for grants limited to named objects in Cedar policies (not RBAC's, which
/// `rules_for` reports): probe each served resource with every name a policy in the caller's
/// slice compares `resource.name` with (`auth::cedar::names`), keeping what is allowed for the
/// name but not for the collection.
fn named_rules(
    state: &State,
    probes: &mut Probes<'_>,
    user: &UserInfo,
    namespace: &str,
) -> Vec<Value> {
    let Some(authz) = state.enforcement.authorizer() else {
        return Vec::new();
    };
    let policies: Vec<_> = authz
        .policies_for(user)
        .into_iter()
        .filter(|p| !p.id().to_string().starts_with("rbac/"))
        .collect();
    let names = crate::auth::cedar::names::resource_names(&policies);
    // (group, verbs, name) → resources
    let mut rules: BTreeMap<(String, Vec<String>, String), Vec<String>> = BTreeMap::new();
    for name in &names {
        for ri in state.registry.all() {
            let ns = if ri.namespaced { namespace } else { "" };
            let mut verbs: Vec<String> = Vec::new();
            for v in NAMED_VERBS
                .iter()
                .filter(|v| ri.verbs.iter().any(|rv| rv == *v))
            {
                if !probe(probes, user, v, &ri.group, &ri.plural, "", ns)
                    && probe_named(probes, user, v, &ri.group, &ri.plural, "", ns, name)
                {
                    verbs.push(v.to_string());
                }
            }
            if !verbs.is_empty() {
                let resources = rules
                    .entry((ri.group.clone(), verbs, name.clone()))
                    .or_default();
                if !resources.contains(&ri.plural) {
                    resources.push(ri.plural.clone());
                }
            }
        }
    }
    rules
        .into_iter()
        .map(|((group, verbs, name), resources)| {
            json!({"verbs": verbs, "apiGroups": [group], "resources": resources, "resourceNames": [name]})
        })
        .collect()
}

fn probe_url(probes: &mut Probes<'_>, user: &UserInfo, verb: &str, path: &str) -> bool {
    probes.allowed(&Attributes {
        user,
        verb,
        resource_request: false,
        api_group: "",
        resource: "",
        subresource: "",
        namespace: "",
        name: "",
        path,
    })
}

/// `SubjectRulesReviewStatus` by probing (see the module docs).
fn rules_status(state: &State, user: &UserInfo, namespace: &str) -> Value {
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    let mut probes = Probes::new(state, user);
    let t0 = std::time::Instant::now();

    // What the caller may do to anything ("*" resources in "*" groups): cluster-admin's rule.
    let wild: Vec<&str> = ACTIONS
        .iter()
        .copied()
        .filter(|v| probe(&mut probes, user, v, "*", "*", "", namespace))
        .collect();
    let everything = wild.len() == ACTIONS.len();
    if everything {
        resource_rules.push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
    } else {
        if !wild.is_empty() {
            resource_rules.push(json!({"verbs": wild, "apiGroups": ["*"], "resources": ["*"]}));
        }
        // (group, verbs) → resources, so the list reads like a role.
        let mut rules: BTreeMap<(String, Vec<String>), Vec<String>> = BTreeMap::new();
        for ri in state.registry.all() {
            let ns = if ri.namespaced { namespace } else { "" };
            let mut targets: Vec<(String, Vec<&str>)> = vec![(
                ri.plural.clone(),
                ri.verbs.iter().map(String::as_str).collect(),
            )];
            for sub in &ri.subresources {
                targets.push((format!("{}/{sub}", ri.plural), SUBRESOURCE_VERBS.to_vec()));
            }
            for (name, verbs) in targets {
                let (resource, sub) = name.split_once('/').unwrap_or((&name, ""));
                let allowed: Vec<&str> = verbs
                    .into_iter()
                    .filter(|v| !wild.contains(v))
                    .filter(|v| probe(&mut probes, user, v, &ri.group, resource, sub, ns))
                    .collect();
                if !allowed.is_empty() {
                    let mut allowed: Vec<String> = allowed.into_iter().map(String::from).collect();
                    allowed.sort_unstable();
                    allowed.dedup();
                    let resources = rules.entry((ri.group.clone(), allowed)).or_default();
                    if !resources.contains(&name) {
                        resources.push(name);
                    }
                }
            }
        }
        for ((group, verbs), resources) in rules {
            resource_rules
                .push(json!({"verbs": verbs, "apiGroups": [group], "resources": resources}));
        }
    }

    let wild_urls: Vec<&str> = NON_RESOURCE_VERBS
        .iter()
        .copied()
        .filter(|v| probe_url(&mut probes, user, v, "*"))
        .collect();
    if wild_urls.len() == NON_RESOURCE_VERBS.len() {
        non_resource_rules.push(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
    } else {
        let mut by_verbs: BTreeMap<Vec<&str>, Vec<&str>> = BTreeMap::new();
        for url in NON_RESOURCE_URLS {
            let verbs: Vec<&str> = NON_RESOURCE_VERBS
                .iter()
                .copied()
                .filter(|v| probe_url(&mut probes, user, v, url))
                .collect();
            if !verbs.is_empty() {
                by_verbs.entry(verbs).or_default().push(url);
            }
        }
        for (verbs, urls) in by_verbs {
            non_resource_rules.push(json!({"verbs": verbs, "nonResourceURLs": urls}));
        }
    }
    // RBAC's own rules too, from the same snapshot the authorizer uses: probing cannot see
    // grants limited to resourceNames. Cedar policies' name-scoped grants are found by
    // probing with the names they mention.
    if !everything {
        for v in named_rules(state, &mut probes, user, namespace) {
            if !resource_rules.contains(&v) {
                resource_rules.push(v);
            }
        }
        if let Some(rbac) = state.enforcement.rbac() {
            let (rr, nr) = rbac.rules_for(user, namespace);
            for v in rr.iter().filter_map(|r| serde_json::to_value(r).ok()) {
                if !resource_rules.contains(&v) {
                    resource_rules.push(v);
                }
            }
            for v in nr.iter().filter_map(|r| serde_json::to_value(r).ok()) {
                if !non_resource_rules.contains(&v) {
                    non_resource_rules.push(v);
                }
            }
        }
    }
    tracing::debug!(
        user = %user.name,
        evaluations = probes.prober.as_ref().map_or(0, |p| p.evaluations),
        elapsed_us = t0.elapsed().as_micros() as u64,
        "SelfSubjectRulesReview probed"
    );
    let mut status = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": !everything,
    });
    if !everything {
        let mut why = "rules are RBAC's plus those found by probing the Cedar policies (also with the object names they mention): Cedar grants that depend on other facts (name patterns, labels, bound nodes) are not listed".to_string();
        if probes.exhausted {
            why.push_str(&format!(
                "; probing stopped after {MAX_EVALUATIONS} evaluations, so some resources were not probed"
            ));
        }
        status["evaluationError"] = json!(why);
    }
    status
}
