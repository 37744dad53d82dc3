//! The Cedar half of admission: the policy set (shipped `admission/*.cedar` files, operators'
//! `--policy-dir` files and `CedarPolicy` objects) and one evaluation per write.
//!
//! Semantics: deny-by-forbid. A built-in `permit` (`admission/default-permit`) allows whatever
//! no `forbid` matches; a policy that errors at evaluation denies the write (fail closed: an
//! erroring `forbid` would otherwise be skipped). Every policy is validated strictly against
//! the schema before it is loaded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};

use cedar_policy::{
    Context, Entities, Entity, EntityUid, Policy, PolicyId, PolicySet, Request,
    RestrictedExpression, Schema,
};
use serde_json::Value;

use super::facts::{FactsKey, PodFacts};
use crate::api::ResourceInfo;
use crate::auth::cedar::entities::{uid, Principal};
use crate::auth::cedar::{Error, PolicyFiles};
use crate::auth::UserInfo;

const DEFAULT_PERMIT: &str = "admission/default-permit";

/// The write being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    fn action(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

/// One admission request.
pub struct AdmissionRequest<'a> {
    pub user: &'a UserInfo,
    pub operation: Operation,
    pub ri: &'a ResourceInfo,
    pub subresource: &'a str,
    /// The object as it would be stored (the stored object, on delete).
    pub object: &'a Value,
    /// The object before an update.
    pub old: Option<&'a Value>,
    /// The Pod Security level enforced for a pod ("privileged", "baseline", "restricted").
    pub pod_level: &'a str,
    /// `<level>:<version>` as upstream names the policy (`baseline:latest`).
    pub pod_policy: &'a str,
}

/// Admission's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// The forbidding policies (or the erroring ones) when denied; empty when allowed.
    pub policies: Vec<String>,
    /// Why, after upstream's `<resource> "<name>" is forbidden: ` prefix.
    pub message: String,
}

pub struct Admission {
    schema: Schema,
    /// (id, text) of the policies shipped in `policies/admission/` (see [`Slices::facts_only`]).
    shipped: HashSet<(String, String)>,
    sources: Mutex<BTreeMap<String, Vec<Policy>>>,
    set: RwLock<Arc<Slices>>,
    cedar: cedar_policy::Authorizer,
}

/// The policy set cut by (resource is a Pod, operation), as the authorizer cuts by verb: a
/// policy whose scope names another entity type or other actions can neither forbid nor
/// error for the request, so leaving it out never changes a verdict. A slice holding only
/// the built-in permit admits without building entities at all (a ConfigMap write in a
/// cluster whose only admission policies are the Pod Security Standards).
#[derive(Default)]
struct Slices {
    /// `[is_pod][operation]`.
    sets: [[Arc<PolicySet>; 3]; 2],
    /// Every policy, for annotations (`@reason`) and diagnostics.
    all: Arc<PolicySet>,
    /// `[operation]`: the pods' slice holds only the shipped Pod Security policies (and the
    /// built-in permit). Those read nothing but the pod's facts and its enforced level, so
    /// their verdict is a function of (operation, level, facts) and is remembered in
    /// `verdicts` — a ReplicaSet's 1,000 pods are evaluated once. The memo lives in the
    /// slices, so any policy change (which builds new slices) forgets it.
    facts_only: [bool; 3],
    verdicts: Mutex<HashMap<(usize, String, FactsKey), Vec<String>>>,
}

/// Verdicts remembered per policy set, at most (then the memo starts over).
const MAX_VERDICTS: usize = 4096;

const OPERATIONS: [Operation; 3] = [Operation::Create, Operation::Update, Operation::Delete];

impl Operation {
    fn index(self) -> usize {
        match self {
            Operation::Create => 0,
            Operation::Update => 1,
            Operation::Delete => 2,
        }
    }
}

/// Whether `policy` can apply to a request on a Pod (`is_pod`) or another object for `op`.
fn may_apply(policy: &Policy, is_pod: bool, op: Operation) -> bool {
    use cedar_policy::{ActionConstraint, ResourceConstraint};
    let wanted = if is_pod {
        "k8s::admission::Pod"
    } else {
        "k8s::admission::Object"
    };
    let resource_ok = match policy.resource_constraint() {
        ResourceConstraint::Any | ResourceConstraint::In(_) => true,
        ResourceConstraint::Eq(uid) => uid.type_name().to_string() == wanted,
        ResourceConstraint::Is(ty) | ResourceConstraint::IsIn(ty, _) => ty.to_string() == wanted,
    };
    let action = uid("k8s::admission::Action", op.action());
    let action_ok = match policy.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(a) => a == action,
        ActionConstraint::In(list) => list.contains(&action),
    };
    resource_ok && action_ok
}

impl Slices {
    fn new(all: Vec<Policy>, shipped: &HashSet<(String, String)>) -> Slices {
        let set_of = |list: Vec<Policy>| {
            PolicySet::from_policies(list).unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot assemble the admission policy set");
                PolicySet::new()
            })
        };
        let mut sets: [[Arc<PolicySet>; 3]; 2] = Default::default();
        let mut facts_only = [false; 3];
        for (p, row) in sets.iter_mut().enumerate() {
            for op in OPERATIONS {
                let slice: Vec<Policy> = all
                    .iter()
                    .filter(|x| x.id().to_string() == DEFAULT_PERMIT || may_apply(x, p == 1, op))
                    .cloned()
                    .collect();
                if p == 1 {
                    facts_only[op.index()] = slice.iter().all(|x| {
                        let id = x.id().to_string();
                        id == DEFAULT_PERMIT || shipped.contains(&(id, x.to_string()))
                    });
                }
                row[op.index()] = Arc::new(set_of(slice));
            }
        }
        Slices {
            sets,
            all: Arc::new(set_of(all)),
            facts_only,
            verdicts: Mutex::new(HashMap::new()),
        }
    }
}

impl Admission {
    /// The admission policies of `files` (`admission/*.cedar`), validated strictly.
    pub fn load(files: &PolicyFiles) -> Result<Admission, Error> {
        let schema = files.schema()?;
        let policies = files.policies("admission", &schema)?;
        let shipped = PolicyFiles::embedded()
            .policies("admission", &schema)
            .unwrap_or_default()
            .iter()
            .map(|p| (p.id().to_string(), p.to_string()))
            .collect();
        let adm = Admission {
            schema,
            shipped,
            sources: Mutex::new(BTreeMap::new()),
            set: RwLock::new(Arc::new(Slices::default())),
            cedar: cedar_policy::Authorizer::new(),
        };
        adm.set_source("files", policies);
        Ok(adm)
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Replace one source's policies (`files`, `CedarPolicy/<name>`). A duplicate id (two
    /// objects cannot produce one: ids carry the object's name) keeps the first.
    pub fn set_source(&self, source: &str, policies: Vec<Policy>) {
        let Ok(mut sources) = self.sources.lock() else {
            return;
        };
        if policies.is_empty() {
            sources.remove(source);
        } else {
            sources.insert(source.to_string(), policies);
        }
        let mut all = Vec::new();
        let mut seen = HashSet::new();
        if let Ok(p) = Policy::from_str("permit (principal, action, resource);") {
            seen.insert(PolicyId::new(DEFAULT_PERMIT));
            all.push(p.new_id(PolicyId::new(DEFAULT_PERMIT)));
        }
        for (name, list) in sources.iter() {
            for p in list {
                if seen.insert(p.id().clone()) {
                    all.push(p.clone());
                } else {
                    tracing::error!(source = %name, id = %p.id(), "duplicate admission policy id ignored");
                }
            }
        }
        let slices = Slices::new(all, &self.shipped);
        if let Ok(mut s) = self.set.write() {
            *s = Arc::new(slices);
        }
    }

    /// Remove one source.
    pub fn remove_source(&self, source: &str) {
        self.set_source(source, Vec::new());
    }

    /// The names of the loaded sources.
    pub fn source_names(&self) -> Vec<String> {
        self.sources
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The ids of every loaded policy (diagnostics).
    pub fn policy_ids(&self) -> Vec<String> {
        self.set
            .read()
            .map(|s| s.all.policies().map(|p| p.id().to_string()).collect())
            .unwrap_or_default()
    }

    /// Compile a `CedarPolicy` object's text: strict validation, ids
    /// `CedarPolicy/<name>/<@id or #n>`. The error names `CedarPolicy/<name>:<line>`.
    pub fn compile_object(&self, name: &str, text: &str) -> Result<Vec<Policy>, Error> {
        let path = format!("CedarPolicy/{name}");
        let parsed = crate::auth::cedar::files::parse_file(&path, text, &self.schema)?;
        Ok(parsed
            .into_iter()
            .map(|p| {
                let id = p.id().to_string();
                let local = id.strip_prefix(&path).unwrap_or(&id).to_string();
                let local = local.trim_start_matches('/');
                p.new_id(PolicyId::new(format!("{path}/{local}")))
            })
            .collect())
    }

    /// Evaluate the policy set for `req`: the deciding policy ids when denied (`Ok(ids)`,
    /// empty when allowed), or the fail-closed verdict when evaluation itself failed.
    fn evaluate(
        &self,
        req: &AdmissionRequest<'_>,
        facts: Option<&PodFacts>,
    ) -> Result<(Vec<String>, Arc<PolicySet>), Verdict> {
        let slices = match self.set.read() {
            Ok(s) => s.clone(),
            Err(_) => {
                return Err(deny(
                    Vec::new(),
                    "the admission policy set is unavailable".into(),
                ))
            }
        };
        let set = slices.sets[usize::from(facts.is_some())][req.operation.index()].clone();
        if set.num_of_policies() == 1 && set.policy(&PolicyId::new(DEFAULT_PERMIT)).is_some() {
            // Only the built-in permit: nothing can forbid.
            return Ok((Vec::new(), slices.all.clone()));
        }
        let memo = match facts {
            Some(f) if slices.facts_only[req.operation.index()] => {
                let key = (req.operation.index(), req.pod_level.to_string(), f.key());
                let known = slices
                    .verdicts
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&key).cloned());
                if let Some(ids) = known {
                    return Ok((ids, slices.all.clone()));
                }
                Some(key)
            }
            _ => None,
        };
        let remember = |ids: &Vec<String>| {
            if let (Some(key), Ok(mut m)) = (memo.clone(), slices.verdicts.lock()) {
                if m.len() >= MAX_VERDICTS {
                    m.clear();
                }
                m.insert(key, ids.clone());
            }
        };
        let principal = Principal::of(req.user);
        let mut ents = principal.entities(req.user);
        let resource = object_entity(req, req.object, facts, "", &mut ents);
        let mut context = HashMap::new();
        if let Some(old) = req.old {
            let old_uid = object_entity(req, old, None, "old:", &mut ents);
            context.insert(
                "old".to_string(),
                RestrictedExpression::new_entity_uid(old_uid),
            );
        }
        let action = uid("k8s::admission::Action", req.operation.action());
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            deny(
                Vec::new(),
                format!("cannot build the admission {what}: {e}"),
            )
        };
        let entities = Entities::from_entities(ents, None).map_err(|e| failed("entities", &e))?;
        let context = Context::from_pairs(context).map_err(|e| failed("context", &e))?;
        let request = Request::new(principal.uid(), action, resource, context, None)
            .map_err(|e| failed("request", &e))?;
        let response = self.cedar.is_authorized(&request, &set, &entities);
        if let Err(denied) = crate::auth::cedar::fail_closed::check(&response, "admission policy") {
            let message = denied.reason().to_string();
            return Err(deny(denied.into_policies(), message));
        }
        if response.decision() == cedar_policy::Decision::Allow {
            remember(&Vec::new());
            return Ok((Vec::new(), slices.all.clone()));
        }
        let mut ids: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        ids.sort_by_key(|id| (pss_rank(id), id.clone()));
        remember(&ids);
        Ok((ids, slices.all.clone()))
    }

    /// Decide one write.
    pub fn admit(&self, req: &AdmissionRequest<'_>) -> Verdict {
        let is_pod =
            req.ri.group.is_empty() && req.ri.kind == "Pod" && req.subresource != "binding";
        let facts = is_pod.then(|| PodFacts::of(req.object));
        let (ids, set) = match self.evaluate(req, facts.as_ref()) {
            Ok(r) => r,
            Err(v) => return v,
        };
        if ids.is_empty() {
            return Verdict {
                allowed: true,
                policies: Vec::new(),
                message: String::new(),
            };
        }
        let (pss, other): (Vec<&String>, Vec<&String>) =
            ids.iter().partition(|id| id.starts_with("pss/"));
        let mut parts = Vec::new();
        if !pss.is_empty() {
            parts.push(format!(
                "violates PodSecurity {:?}: {}",
                req.pod_policy,
                pss_checks(&set, &pss, facts.as_ref())
            ));
        }
        for id in other {
            let r = reason(&set, id);
            parts.push(if r.is_empty() {
                format!("denied by admission policy {id}")
            } else {
                format!("denied by admission policy {id}: {r}")
            });
        }
        let message = format!("{} (policies: {})", parts.join("; "), ids.join(", "));
        deny(ids, message)
    }

    /// Pod Security's checks of `pod` (a pod, or a workload's template pod) at `level`
    /// without enforcing (upstream's warn and audit modes): upstream's `would violate
    /// PodSecurity "<level>:<version>": ...` text, or `None` when the pod meets the level.
    /// A policy that fails to evaluate is reported as a violation.
    pub fn pod_security_violations(
        &self,
        req: &AdmissionRequest<'_>,
        pod: &Value,
        level: &str,
        policy: &str,
    ) -> Option<String> {
        let facts = PodFacts::of(pod);
        let probe = AdmissionRequest {
            object: pod,
            old: None,
            pod_level: level,
            pod_policy: policy,
            ..*req
        };
        let (ids, set) = match self.evaluate(&probe, Some(&facts)) {
            Ok(r) => r,
            Err(v) => {
                return Some(format!(
                    "would violate PodSecurity {policy:?}: {}",
                    v.message
                ))
            }
        };
        let pss: Vec<&String> = ids.iter().filter(|id| id.starts_with("pss/")).collect();
        if pss.is_empty() {
            return None;
        }
        Some(format!(
            "would violate PodSecurity {policy:?}: {}",
            pss_checks(&set, &pss, Some(&facts))
        ))
    }
}

fn reason(set: &PolicySet, id: &str) -> String {
    set.annotation(&PolicyId::new(id), "reason")
        .unwrap_or("")
        .to_string()
}

/// Upstream's list of failed checks: `summary (detail), ...`.
fn pss_checks(set: &PolicySet, ids: &[&String], facts: Option<&PodFacts>) -> String {
    ids.iter()
        .map(|id| {
            let summary = reason(set, id);
            let summary = if summary.is_empty() {
                id.to_string()
            } else {
                summary
            };
            match facts.and_then(|f| f.detail(id)) {
                Some(d) => format!("{summary} ({d})"),
                None => summary,
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Baseline checks first, then restricted, then the rest, as upstream lists them.
fn pss_rank(id: &str) -> u8 {
    if id.starts_with("pss/baseline/") {
        0
    } else if id.starts_with("pss/restricted/") {
        1
    } else {
        2
    }
}

fn deny(policies: Vec<String>, message: String) -> Verdict {
    Verdict {
        allowed: false,
        policies,
        message,
    }
}

/// Every container image of a pod spec (or a workload's pod template).
fn images(obj: &Value) -> Vec<String> {
    let spec = if obj["spec"]["containers"].is_array() {
        &obj["spec"]
    } else if obj["spec"]["template"]["spec"].is_object() {
        &obj["spec"]["template"]["spec"]
    } else {
        &obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    };
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|l| spec[*l].as_array().into_iter().flatten())
        .filter_map(|c| c["image"].as_str().map(str::to_string))
        .collect()
}

fn tags(map: &Value) -> HashMap<String, RestrictedExpression> {
    map.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            v.as_str()
                .map(|s| (k.clone(), RestrictedExpression::new_string(s.to_string())))
        })
        .collect()
}

/// Build the entity for `obj` (a Pod with facts, else an Object) and its annotations entity;
/// push them to `out` and return the object's uid.
fn object_entity(
    req: &AdmissionRequest<'_>,
    obj: &Value,
    facts: Option<&PodFacts>,
    prefix: &str,
    out: &mut Vec<Entity>,
) -> EntityUid {
    let meta = &obj["metadata"];
    let ns = meta["namespace"].as_str().unwrap_or_default();
    let name = meta["name"].as_str().unwrap_or_default();
    let id = format!("{prefix}{}/{}/{ns}/{name}", req.ri.group, req.ri.plural);
    let ty = if facts.is_some() {
        "k8s::admission::Pod"
    } else {
        "k8s::admission::Object"
    };
    let object_uid = uid(ty, &id);
    let ann_uid = uid("k8s::admission::Annotations", &id);
    if let Ok(e) = Entity::new_with_tags(
        ann_uid.clone(),
        HashMap::new(),
        HashSet::new(),
        tags(&meta["annotations"]),
    ) {
        out.push(e);
    }
    let s = |v: &str| RestrictedExpression::new_string(v.to_string());
    let strings = |v: &mut dyn Iterator<Item = &String>| {
        RestrictedExpression::new_set(v.map(|x| RestrictedExpression::new_string(x.clone())))
    };
    let mut attrs = HashMap::from([
        ("apiGroup".to_string(), s(&req.ri.group)),
        ("kind".to_string(), s(&req.ri.kind)),
        ("resource".to_string(), s(&req.ri.plural)),
        ("subresource".to_string(), s(req.subresource)),
        ("namespace".to_string(), s(ns)),
        ("name".to_string(), s(name)),
        (
            "annotations".to_string(),
            RestrictedExpression::new_entity_uid(ann_uid),
        ),
        ("images".to_string(), strings(&mut images(obj).iter())),
    ]);
    if let Some(f) = facts {
        let b = RestrictedExpression::new_bool;
        attrs.extend([
            ("level".to_string(), s(req.pod_level)),
            ("hostNetwork".to_string(), b(f.host_network)),
            ("hostPID".to_string(), b(f.host_pid)),
            ("hostIPC".to_string(), b(f.host_ipc)),
            ("hostProcess".to_string(), b(f.host_process)),
            ("anyPrivileged".to_string(), b(f.any_privileged)),
            (
                "addedCapabilities".to_string(),
                strings(&mut f.added_capabilities.iter()),
            ),
            ("allDropAll".to_string(), b(f.all_drop_all)),
            (
                "volumeTypes".to_string(),
                strings(&mut f.volume_types.iter()),
            ),
            (
                "hostPorts".to_string(),
                RestrictedExpression::new_set(
                    f.host_ports
                        .iter()
                        .map(|p| RestrictedExpression::new_long(*p)),
                ),
            ),
            (
                "seccompTypes".to_string(),
                strings(&mut f.seccomp_types.iter()),
            ),
            (
                "allSeccompRestricted".to_string(),
                b(f.all_seccomp_restricted),
            ),
            (
                "appArmorProfiles".to_string(),
                strings(&mut f.apparmor_profiles.iter()),
            ),
            (
                "seLinuxTypes".to_string(),
                strings(&mut f.selinux_types.iter()),
            ),
            ("seLinuxUserOrRole".to_string(), b(f.selinux_user_or_role)),
            ("procMounts".to_string(), strings(&mut f.proc_mounts.iter())),
            ("sysctls".to_string(), strings(&mut f.sysctls.iter())),
            ("allRunAsNonRoot".to_string(), b(f.all_run_as_non_root)),
            ("anyRunAsRoot".to_string(), b(f.any_run_as_root)),
            (
                "allNoPrivilegeEscalation".to_string(),
                b(f.all_no_privilege_escalation),
            ),
        ]);
    }
    match Entity::new_with_tags(
        object_uid.clone(),
        attrs,
        HashSet::new(),
        tags(&meta["labels"]),
    ) {
        Ok(e) => out.push(e),
        Err(e) => tracing::error!(error = %e, "cannot build the admission object entity"),
    }
    object_uid
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::builtin;
    use serde_json::json;

    fn admit(adm: &Admission, pod: &Value, level: &str) -> Verdict {
        let ri = builtin().iter().find(|r| r.plural == "pods").unwrap();
        let user = UserInfo {
            name: "alice".into(),
            groups: vec!["system:authenticated".into()],
            ..Default::default()
        };
        let policy = format!("{level}:latest");
        adm.admit(&AdmissionRequest {
            user: &user,
            operation: Operation::Create,
            ri,
            subresource: "",
            object: pod,
            old: None,
            pod_level: level,
            pod_policy: &policy,
        })
    }

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default", "labels": {"app": "web"}}, "spec": spec})
    }

    #[test]
    fn pss_levels_decide_with_upstream_messages() {
        let adm = Admission::load(&PolicyFiles::embedded()).unwrap();
        let plain = pod(json!({"containers": [{"name": "c", "image": "nginx"}]}));
        assert!(admit(&adm, &plain, "baseline").allowed);
        let bad = pod(
            json!({"hostNetwork": true, "containers": [{"name": "c", "image": "nginx",
            "securityContext": {"privileged": true}}]}),
        );
        let v = admit(&adm, &bad, "baseline");
        assert!(!v.allowed);
        assert_eq!(
            v.policies,
            vec!["pss/baseline/host-namespaces", "pss/baseline/privileged"]
        );
        assert!(v.message.starts_with(
            "violates PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true), privileged (container \"c\" must not set securityContext.privileged=true)"
        ), "{}", v.message);
        assert!(admit(&adm, &bad, "privileged").allowed);
        let v = admit(&adm, &plain, "restricted");
        assert!(
            !v.allowed
                && v.policies
                    .contains(&"pss/restricted/run-as-non-root".to_string())
        );
        let ok = pod(
            json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "nginx", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}),
        );
        assert!(admit(&adm, &ok, "restricted").allowed);
    }

    #[test]
    fn object_policies_see_tags_and_images() {
        let adm = Admission::load(&PolicyFiles::embedded()).unwrap();
        let text = r#"@id("registry") @reason("images must come from registry.example/")
forbid (principal, action, resource is k8s::admission::Pod)
when { resource.hasTag("app") && resource.getTag("app") == "web" &&
       !(resource.images.contains("registry.example/nginx")) };"#;
        let compiled = adm.compile_object("images", text).unwrap();
        assert_eq!(compiled[0].id().to_string(), "CedarPolicy/images/registry");
        adm.set_source("CedarPolicy/images", compiled);
        let v = admit(
            &adm,
            &pod(json!({"containers": [{"name": "c", "image": "nginx"}]})),
            "baseline",
        );
        assert_eq!(v.policies, vec!["CedarPolicy/images/registry"]);
        assert!(
            v.message
                .contains("images must come from registry.example/"),
            "{}",
            v.message
        );
        let bad = adm
            .compile_object(
                "broken",
                "forbid (principal, action, resource)\nwhen { resource.nope };",
            )
            .unwrap_err()
            .to_string();
        assert!(bad.contains("CedarPolicy/broken:2"), "{bad}");
        adm.remove_source("CedarPolicy/images");
        assert!(
            admit(
                &adm,
                &pod(json!({"containers": [{"name": "c", "image": "nginx"}]})),
                "baseline"
            )
            .allowed
        );
    }

    #[test]
    fn pod_security_verdicts_are_remembered_only_for_the_shipped_policies() {
        let adm = Admission::load(&PolicyFiles::embedded()).unwrap();
        let facts_only = |adm: &Admission| adm.set.read().unwrap().facts_only;
        assert_eq!(facts_only(&adm), [true, true, true]);
        let bad =
            pod(json!({"hostNetwork": true, "containers": [{"name": "c", "image": "nginx"}]}));
        let first = admit(&adm, &bad, "baseline");
        let again = admit(&adm, &bad, "baseline");
        assert!(!first.allowed);
        assert_eq!(first, again);
        // Same facts at another level: another entry, another verdict.
        assert!(admit(&adm, &bad, "privileged").allowed);
        assert_eq!(adm.set.read().unwrap().verdicts.lock().unwrap().len(), 2);
        // An operator's pod policy reads more than the facts: no memo while it is loaded.
        let text = r#"@id("no-web") forbid (principal, action, resource is k8s::admission::Pod)
when { resource.hasTag("app") && resource.getTag("app") == "web" };"#;
        adm.set_source(
            "CedarPolicy/no-web",
            adm.compile_object("no-web", text).unwrap(),
        );
        assert_eq!(facts_only(&adm), [false, false, false]);
        let plain = pod(json!({"containers": [{"name": "c", "image": "nginx"}]}));
        assert!(!admit(&adm, &plain, "baseline").allowed);
        assert!(!admit(&adm, &plain, "baseline").allowed);
        adm.remove_source("CedarPolicy/no-web");
        assert_eq!(facts_only(&adm), [true, true, true]);
        assert!(admit(&adm, &plain, "baseline").allowed);
    }

    #[test]
    fn slices_keep_every_verdict() {
        let adm = Admission::load(&PolicyFiles::embedded()).unwrap();
        let text = r#"@id("labels") @reason("objects need an owner label")
forbid (principal, action == k8s::admission::Action::"create", resource is k8s::admission::Object)
when { !resource.hasTag("owner") };"#;
        adm.set_source(
            "CedarPolicy/labels",
            adm.compile_object("labels", text).unwrap(),
        );
        let cm = builtin().iter().find(|r| r.plural == "configmaps").unwrap();
        let user = UserInfo {
            name: "alice".into(),
            ..Default::default()
        };
        let obj = json!({"metadata": {"name": "c", "namespace": "default"}});
        let req = |op| AdmissionRequest {
            user: &user,
            operation: op,
            ri: cm,
            subresource: "",
            object: &obj,
            old: None,
            pod_level: "privileged",
            pod_policy: "privileged:latest",
        };
        let v = adm.admit(&req(Operation::Create));
        assert_eq!(v.policies, vec!["CedarPolicy/labels/labels"]);
        assert!(
            v.message.contains("objects need an owner label"),
            "{}",
            v.message
        );
        assert!(adm.admit(&req(Operation::Update)).allowed);
        assert!(adm.admit(&req(Operation::Delete)).allowed);
        // The Object policy is not in the pods' slice: a labelled-less pod is judged by PSS only.
        let plain = pod(json!({"containers": [{"name": "c", "image": "nginx"}]}));
        assert!(admit(&adm, &plain, "baseline").allowed);
    }
}
