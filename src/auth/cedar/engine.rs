//! The authorizer: every request is one Cedar evaluation over the slice of policies that can
//! apply to its principal.
//!
//! Policies arrive in named *sources* (`system` and `authz` files, `rbac` compiled from RBAC
//! objects, ...), each policy tagged with the subjects it can apply to (a user, group, service
//! account or node entity; none = anyone). A request evaluates the global policies plus those of
//! its principal and groups — so latency depends on what applies to the caller, not on how many
//! bindings exist (Cedar evaluates every policy in the set it is given). The slice is further
//! cut to the policies whose action scope admits the request's verb; the assembled set is
//! cached per (principal, groups, verb) until a source changes.
//!
//! Decisions are cached too (`decisions.rs`, bounded in bytes), keyed only on what the slice's
//! policies can look at (`depends.rs`): a slice that never reads `resource.name` or the path
//! shares one entry for every name and path, so made-up names cannot fill the cache.
//!
//! Semantics (Cedar's, which are upstream RBAC's plus deny): `forbid` beats `permit`, no permit
//! means deny. Unlike Cedar's default, a policy that errors makes the whole request **fail
//! closed** — an erroring `forbid` would otherwise be skipped and let the request through.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use cedar_policy::{
    ActionConstraint, Context, Entities, EntityUid, Policy, PolicySet, PrincipalConstraint,
    Request, Response, Schema,
};

use super::decisions::Decisions;
use super::depends::Depends;
use super::entities::{self, Principal};
use super::node_graph::NodeGraph;
use crate::auth::{Attributes, Decision};

/// A compiled policy and the subjects it can apply to (empty: evaluated for every request).
#[derive(Debug, Clone)]
pub struct Compiled {
    pub policy: Policy,
    pub subjects: Vec<EntityUid>,
}

impl Compiled {
    /// Index a hand-written policy by its principal scope: `principal == X` / `principal in X`
    /// apply to X's slice, anything else to everyone.
    pub fn from_scope(policy: Policy) -> Self {
        let subjects = match policy.principal_constraint() {
            PrincipalConstraint::Eq(uid)
            | PrincipalConstraint::In(uid)
            | PrincipalConstraint::IsIn(_, uid) => vec![uid],
            PrincipalConstraint::Any | PrincipalConstraint::Is(_) => Vec::new(),
        };
        Self { policy, subjects }
    }
}

/// An assembled set's key: the caller's sorted subject keys and the request's action.
type SliceKey = (Vec<EntityUid>, EntityUid);

/// One caller's policies for one verb, and what their decisions can depend on.
struct Slice {
    set: PolicySet,
    depends: Depends,
}

/// Assembled policy sets by caller; rebuilt whenever a source changes.
struct Slices {
    global: Vec<Policy>,
    by_subject: HashMap<EntityUid, Vec<Policy>>,
    cache: Mutex<HashMap<SliceKey, Arc<Slice>>>,
    /// Decisions already evaluated against exactly these policies (see `decision_key`).
    decisions: Decisions,
}

impl Slices {
    fn new(global: Vec<Policy>, by_subject: HashMap<EntityUid, Vec<Policy>>) -> Self {
        Slices {
            global,
            by_subject,
            cache: Mutex::new(HashMap::new()),
            decisions: Decisions::default(),
        }
    }
}

/// Everything a non-node decision depends on besides the policies: the caller and groups and
/// the request attributes the slice's policies can read (`depends`), each length-prefixed so
/// no two requests share a key. The name and the path are left out when no policy of the
/// slice can see them, so requests differing only there share one entry.
fn decision_key(a: &Attributes<'_>, depends: &Depends) -> String {
    let (name, path) = if a.resource_request {
        (
            if depends.name { a.name } else { "" },
            if depends.resource_uid { a.path } else { "" },
        )
    } else {
        ("", if depends.url_path { a.path } else { "" })
    };
    let mut k = String::with_capacity(160);
    for part in [
        a.user.name.as_str(),
        a.verb,
        if a.resource_request { "r" } else { "n" },
        a.api_group,
        a.resource,
        a.subresource,
        a.namespace,
        name,
        path,
    ] {
        push_part(&mut k, part);
    }
    for g in &a.user.groups {
        push_part(&mut k, g);
    }
    // uid and extra are principal facts policies may test; "#" cannot start a length prefix.
    k.push('#');
    push_part(&mut k, &a.user.uid);
    for (key, values) in &a.user.extra {
        push_part(&mut k, key);
        push_part(&mut k, &values.len().to_string());
        for v in values {
            push_part(&mut k, v);
        }
    }
    k
}

fn push_part(k: &mut String, part: &str) {
    k.push_str(&part.len().to_string());
    k.push(':');
    k.push_str(part);
}

/// Cached assembled sets are dropped past this many distinct callers.
const CACHE_LIMIT: usize = 4096;

pub struct Authorizer {
    schema: Schema,
    sources: Mutex<BTreeMap<String, Arc<Vec<Compiled>>>>,
    slices: RwLock<Arc<Slices>>,
    nodes: Arc<NodeGraph>,
    cedar: cedar_policy::Authorizer,
}

impl Authorizer {
    pub fn new(schema: Schema, nodes: Arc<NodeGraph>) -> Self {
        Self {
            schema,
            sources: Mutex::new(BTreeMap::new()),
            slices: RwLock::new(Arc::new(Slices::new(Vec::new(), HashMap::new()))),
            nodes,
            cedar: cedar_policy::Authorizer::new(),
        }
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    pub fn node_graph(&self) -> &Arc<NodeGraph> {
        &self.nodes
    }

    /// Replace every policy of one source. Ids must be unique across sources; a duplicate
    /// (which only a bug could produce) keeps the first and is logged.
    pub fn set_source(&self, source: &str, policies: Vec<Compiled>) {
        let Ok(mut sources) = self.sources.lock() else {
            return;
        };
        sources.insert(source.to_string(), Arc::new(policies));
        let mut global = Vec::new();
        let mut by_subject: HashMap<EntityUid, Vec<Policy>> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for (name, list) in sources.iter() {
            for c in list.iter() {
                if !seen.insert(c.policy.id().clone()) {
                    tracing::error!(source = %name, id = %c.policy.id(), "duplicate policy id ignored");
                    continue;
                }
                if c.subjects.is_empty() {
                    global.push(c.policy.clone());
                }
                for s in &c.subjects {
                    by_subject
                        .entry(s.clone())
                        .or_default()
                        .push(c.policy.clone());
                }
            }
        }
        let slices = Arc::new(Slices::new(global, by_subject));
        if let Ok(mut s) = self.slices.write() {
            *s = slices;
        }
    }

    /// The number of policies in each source (metrics, `rampart policy` diagnostics).
    pub fn source_sizes(&self) -> Vec<(String, usize)> {
        self.sources
            .lock()
            .map(|s| s.iter().map(|(k, v)| (k.clone(), v.len())).collect())
            .unwrap_or_default()
    }

    /// The policy set that applies to `principal` (global + its own + its groups') for
    /// `action`: only policies whose action scope admits the verb (see [`may_apply`]).
    fn slice_for(
        &self,
        slices: &Slices,
        mut keys: Vec<EntityUid>,
        action: &EntityUid,
    ) -> Arc<Slice> {
        keys.sort();
        let key = (keys, action.clone());
        if let Ok(cache) = slices.cache.lock() {
            if let Some(set) = cache.get(&key) {
                return set.clone();
            }
        }
        let mut policies: Vec<Policy> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let candidates = slices.global.iter().chain(
            key.0
                .iter()
                .flat_map(|k| slices.by_subject.get(k).into_iter().flatten()),
        );
        for p in candidates {
            if may_apply(p, action) && seen.insert(p.id().clone()) {
                policies.push(p.clone());
            }
        }
        let depends = Depends::of(&policies);
        let set = Arc::new(Slice {
            set: PolicySet::from_policies(policies).unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot assemble a policy set; denying");
                PolicySet::new()
            }),
            depends,
        });
        if let Ok(mut cache) = slices.cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key, set.clone());
        }
        set
    }

    /// Every policy that can apply to `user` (its slice over all actions), for analysis
    /// (`SelfSubjectRulesReview`), never for decisions.
    pub fn policies_for(&self, user: &crate::auth::UserInfo) -> Vec<Policy> {
        let Ok(slices) = self.slices.read().map(|s| s.clone()) else {
            return Vec::new();
        };
        let mut seen = std::collections::HashSet::new();
        slices
            .global
            .iter()
            .chain(
                Principal::of(user)
                    .subject_keys_for(user)
                    .iter()
                    .flat_map(|k| slices.by_subject.get(k).into_iter().flatten()),
            )
            .filter(|p| seen.insert(p.id().clone()))
            .cloned()
            .collect()
    }

    /// Decide one request.
    pub fn authorize(&self, attrs: &Attributes<'_>) -> Decision {
        let Ok(slices) = self.slices.read().map(|s| s.clone()) else {
            return Decision::deny(Vec::new(), "the policy store is unavailable".into());
        };
        let principal = Principal::of(attrs.user);
        let Some(action) = entities::action(attrs.verb) else {
            return unknown_verb(attrs.verb);
        };
        let slice = self.slice_for(&slices, principal.subject_keys_for(attrs.user), &action);
        // A decision is a pure function of the policies and the request's entities, so an
        // identical request against the same policy generation reuses the evaluation. Not for
        // nodes: their `boundNodes` fact follows the pod graph, not the policies.
        if matches!(principal, Principal::Node(_)) {
            return self.evaluate(
                &slice,
                &principal,
                action,
                principal.entities(attrs.user),
                attrs,
            );
        }
        let key = decision_key(attrs, &slice.depends);
        if let Some(d) = slices.decisions.get(&key) {
            return d;
        }
        let decision = self.evaluate(
            &slice,
            &principal,
            action,
            principal.entities(attrs.user),
            attrs,
        );
        slices.decisions.insert(key, decision.clone());
        decision
    }

    /// One Cedar evaluation, bypassing the decision cache (what the benchmark measures).
    pub fn evaluate_uncached(&self, attrs: &Attributes<'_>) -> Decision {
        let Ok(slices) = self.slices.read().map(|s| s.clone()) else {
            return Decision::deny(Vec::new(), "the policy store is unavailable".into());
        };
        let principal = Principal::of(attrs.user);
        let Some(action) = entities::action(attrs.verb) else {
            return unknown_verb(attrs.verb);
        };
        let slice = self.slice_for(&slices, principal.subject_keys_for(attrs.user), &action);
        self.evaluate(
            &slice,
            &principal,
            action,
            principal.entities(attrs.user),
            attrs,
        )
    }

    /// Bytes and entries held by the decision cache (for tests and diagnostics).
    pub fn decision_cache_size(&self) -> (usize, usize) {
        self.slices
            .read()
            .map(|s| (s.decisions.bytes(), s.decisions.entries()))
            .unwrap_or_default()
    }

    /// A prober for `SelfSubjectRulesReview`: the decisions [`Self::authorize`] would make for
    /// `user`, without reading or filling the decision cache (a review asks about hundreds of
    /// combinations nobody requests), with the principal's entities built once, and answering
    /// without evaluation when no `permit` of the verb's slice can apply to the kind of
    /// resource asked about.
    pub fn prober<'a>(&'a self, user: &'a crate::auth::UserInfo) -> Prober<'a> {
        let principal = Principal::of(user);
        Prober {
            authz: self,
            slices: self.slices.read().map(|s| s.clone()).ok(),
            entities: principal.entities(user),
            keys: principal.subject_keys_for(user),
            principal,
            by_verb: HashMap::new(),
            evaluations: 0,
        }
    }

    fn evaluate(
        &self,
        slice: &Slice,
        principal: &Principal,
        action: EntityUid,
        mut ents: Vec<cedar_policy::Entity>,
        attrs: &Attributes<'_>,
    ) -> Decision {
        let bound = match principal {
            Principal::Node(name) => self.nodes.bound_nodes(attrs, name),
            _ => Vec::new(),
        };
        let (resource, resource_entity) = entities::resource(attrs, &bound);
        ents.push(resource_entity);
        let entities = match Entities::from_entities(ents, None) {
            Ok(e) => e,
            Err(e) => return Decision::deny(Vec::new(), format!("cannot build entities: {e}")),
        };
        let request = match Request::new(principal.uid(), action, resource, Context::empty(), None)
        {
            Ok(r) => r,
            Err(e) => return Decision::deny(Vec::new(), format!("cannot build the request: {e}")),
        };
        let response = self.cedar.is_authorized(&request, &slice.set, &entities);
        decide(&response)
    }
}

fn unknown_verb(verb: &str) -> Decision {
    Decision::deny(
        Vec::new(),
        format!("the verb {verb:?} is not known to the authorizer"),
    )
}

/// See [`Authorizer::prober`].
pub struct Prober<'a> {
    authz: &'a Authorizer,
    slices: Option<Arc<Slices>>,
    principal: Principal,
    entities: Vec<cedar_policy::Entity>,
    keys: Vec<EntityUid>,
    by_verb: HashMap<String, Arc<Slice>>,
    /// Cedar evaluations made so far (probes answered from the slice's shape are free).
    pub evaluations: usize,
}

impl Prober<'_> {
    /// Whether `attrs` (whose user must be the prober's) would be allowed.
    pub fn allowed(&mut self, attrs: &Attributes<'_>) -> bool {
        let Some(slices) = &self.slices else {
            return false;
        };
        let Some(action) = entities::action(attrs.verb) else {
            return false;
        };
        let slice = match self.by_verb.get(attrs.verb) {
            Some(s) => s.clone(),
            None => {
                let s = self.authz.slice_for(slices, self.keys.clone(), &action);
                self.by_verb.insert(attrs.verb.to_string(), s.clone());
                s
            }
        };
        let could = if attrs.resource_request {
            slice.depends.permits_resources
        } else {
            slice.depends.permits_urls
        };
        if !could {
            return false;
        }
        self.evaluations += 1;
        self.authz
            .evaluate(
                &slice,
                &self.principal,
                action,
                self.entities.clone(),
                attrs,
            )
            .is_allowed()
    }
}

/// Whether `policy` can apply to a request for `action`. Request entities are built without
/// the schema's action hierarchy, so for Cedar `action in [a, b]` holds exactly when the
/// request's action is `a` or `b`: leaving out the policies whose scope names other actions
/// never changes a decision (they can neither permit, forbid, nor error), and a verb's
/// slice is a fraction of the caller's policies.
fn may_apply(policy: &Policy, action: &EntityUid) -> bool {
    match policy.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(a) => &a == action,
        ActionConstraint::In(list) => list.contains(action),
    }
}

/// Turn Cedar's response into our decision, failing closed on evaluation errors.
fn decide(response: &Response) -> Decision {
    let ids: Vec<String> = response
        .diagnostics()
        .reason()
        .map(|id| id.to_string())
        .collect();
    if let Err(denied) = super::fail_closed::check(response, "policy") {
        return denied;
    }
    match response.decision() {
        cedar_policy::Decision::Allow => Decision::allow(ids),
        cedar_policy::Decision::Deny if ids.is_empty() => {
            Decision::deny(ids, "no policy permits it".into())
        }
        cedar_policy::Decision::Deny => {
            let reason = format!("forbidden by policy {}", ids.join(", "));
            Decision::deny(ids, reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::cedar::PolicyFiles;
    use crate::auth::UserInfo;
    use cedar_policy::PolicyId;

    fn policy(id: &str, text: &str) -> Compiled {
        Compiled::from_scope(Policy::parse(Some(PolicyId::new(id)), text).expect("policy parses"))
    }

    fn decide_for(authz: &Authorizer, user: &UserInfo, verb: &str) -> Decision {
        authz.evaluate_uncached(&Attributes {
            user,
            verb,
            resource_request: true,
            api_group: "",
            resource: "pods",
            subresource: "",
            namespace: "default",
            name: "",
            path: "/api/v1/namespaces/default/pods",
        })
    }

    #[test]
    fn verb_slices_keep_every_decision() {
        let schema = PolicyFiles::embedded().authz_schema().expect("schema");
        let authz = Authorizer::new(schema, NodeGraph::new());
        authz.set_source(
            "t",
            vec![
                policy(
                    "t/read",
                    r#"permit (principal == k8s::User::"alice", action in [k8s::Action::"get", k8s::Action::"list"], resource);"#,
                ),
                policy(
                    "t/no-list",
                    r#"forbid (principal, action == k8s::Action::"list", resource) when { principal.name == "alice" };"#,
                ),
                policy(
                    "t/any",
                    r#"permit (principal == k8s::User::"alice", action, resource) when { resource has name && resource.name == "x" };"#,
                ),
            ],
        );
        let alice = UserInfo {
            name: "alice".into(),
            ..Default::default()
        };
        let get = decide_for(&authz, &alice, "get");
        assert!(get.is_allowed(), "{get:?}");
        assert_eq!(get.policies(), vec!["t/read".to_string()]);
        let list = decide_for(&authz, &alice, "list");
        assert!(!list.is_allowed());
        assert_eq!(list.policies(), vec!["t/no-list".to_string()]);
        let watch = decide_for(&authz, &alice, "watch");
        assert!(!watch.is_allowed());
        assert!(watch.policies().is_empty(), "{watch:?}");
    }
}
