//! `rampart policy check` and `rampart policy test`: the policy author's tools, offline.
//!
//! `check FILE...` parses each Cedar file and validates it strictly against the schema (the
//! embedded one, or `--policy-dir`'s), exactly as the server does at start-up, printing
//! `FILE: N policies OK` or the first error as `FILE:LINE: message` (exit 1).
//!
//! `test CASES.yaml...` evaluates request cases against the system and `authz/` policies
//! (embedded, overlaid by `--policy-dir`) with the server's own authorizer, no server needed.
//! A case file:
//!
//! ```yaml
//! kind: authz              # the default; `admission` for admission cases (below)
//! policies: |              # optional Cedar added for every case in the file
//!   @id("test/alice") permit (principal == k8s::User::"alice", action, resource);
//! cases:
//!   - name: a node reads a secret a pod bound to it uses
//!     principal: {user: "system:node:n1", groups: [system:nodes, system:authenticated]}
//!                          # optional uid: "..." and extra: {key: [values]} (principal tags)
//!     verb: get
//!     resource: {apiGroup: "", resource: secrets, namespace: default, name: s1}
//!     boundNodes: [n1]     # nodes running a pod that uses the object (node graph)
//!     expect: allow        # or deny
//!     expectPolicies: [system/node/bound-objects]   # optional: exactly these decided
//!   - name: discovery
//!     principal: {user: bob, groups: [system:authenticated]}
//!     verb: get
//!     path: /apis          # a non-resource URL instead of `resource`
//!     policies: |          # optional Cedar for this case only
//!       ...
//!     expect: allow
//! ```
//!
//! `boundNodes` is fed through the real node graph (as pods bound to those nodes that use the
//! object), so it applies where the node authorizer computes it: pods, secrets, configmaps,
//! persistentvolumeclaims and serviceaccounts, for Node principals. Unknown fields are errors,
//! so a typo cannot silently turn a case into a different one.
//!
//! An admission case file (`kind: admission`) runs the admission policies (`admission/`,
//! inline `policies:` added there) over an object: `verb` is create, update or delete,
//! `object:` the object as it would be stored, optional `oldObject:` and `namespaceLabels:`
//! (they pick the Pod Security level; kube-system is exempt); `expectPolicies` names the
//! denying policies.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::json;

use crate::auth::cedar::{self, files::parse_file, NodeGraph, PolicyFiles};
use crate::auth::{Attributes, UserInfo};
use crate::cli::{PolicyCommand, PolicyKind};

/// A line on stdout; a closed pipe (`| head`) is not an error worth dying over.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<()> {
    let ok = match cmd {
        PolicyCommand::Check {
            files,
            policy_dir,
            kind,
        } => check(&files, policy_dir.as_deref(), kind)?,
        PolicyCommand::Test { files, policy_dir } => test(&files, policy_dir.as_deref())?,
    };
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

/// `admission` when the path has an `admission` directory, else `authz`.
fn kind_of(path: &Path) -> PolicyKind {
    if path.components().any(|c| c.as_os_str() == "admission") {
        PolicyKind::Admission
    } else {
        PolicyKind::Authz
    }
}

/// Validate every file; false when any failed (each failure printed on one line).
pub fn check(
    files: &[PathBuf],
    dir: Option<&Path>,
    kind: Option<PolicyKind>,
) -> anyhow::Result<bool> {
    let tree = PolicyFiles::load(dir).map_err(|e| anyhow::anyhow!("{}", one_line(&e)))?;
    let full = tree
        .schema()
        .map_err(|e| anyhow::anyhow!("{}", one_line(&e)))?;
    let authz = tree
        .authz_schema()
        .map_err(|e| anyhow::anyhow!("{}", one_line(&e)))?;
    let mut all_ok = true;
    for path in files {
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{shown}: {e}");
                all_ok = false;
                continue;
            }
        };
        // As the server loads them: authorization policies against the authorization
        // schema, admission policies against the full one.
        let schema = match kind.unwrap_or_else(|| kind_of(path)) {
            PolicyKind::Authz => &authz,
            PolicyKind::Admission => &full,
        };
        match parse_file(&shown, &text, schema).and_then(|p| unique_ids(&shown, &p).map(|_| p)) {
            Ok(policies) => say!("{shown}: {} policies OK", policies.len()),
            Err(e) => {
                eprintln!("{}", one_line(&e));
                all_ok = false;
            }
        }
    }
    Ok(all_ok)
}

fn unique_ids(path: &str, policies: &[cedar_policy::Policy]) -> Result<(), cedar::Error> {
    let mut seen = BTreeSet::new();
    for p in policies {
        if !seen.insert(p.id().to_string()) {
            return Err(cedar::Error::Policy(format!(
                "{path}: policy id {:?} is used twice",
                p.id().to_string()
            )));
        }
    }
    Ok(())
}

/// The message of a policy error without the error-kind prefix, on one line.
fn one_line(e: &cedar::Error) -> String {
    let text = match e {
        cedar::Error::Policy(m) => m.clone(),
        cedar::Error::Schema(m) => format!("schema: {m}"),
        other => other.to_string(),
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    kind: CaseKind,
    #[serde(default)]
    policies: Option<String>,
    cases: Vec<Case>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum CaseKind {
    #[default]
    Authz,
    Admission,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Case {
    name: String,
    principal: PrincipalSpec,
    verb: String,
    #[serde(default)]
    resource: Option<ResourceSpec>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    bound_nodes: Vec<String>,
    #[serde(default)]
    policies: Option<String>,
    expect: Expect,
    #[serde(default)]
    expect_policies: Option<Vec<String>>,
    /// Admission cases: the object as it would be stored, the object before an update, and
    /// the labels of its namespace (they choose the Pod Security level).
    #[serde(default)]
    object: Option<serde_json::Value>,
    #[serde(default)]
    old_object: Option<serde_json::Value>,
    #[serde(default)]
    namespace_labels: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalSpec {
    user: String,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl PrincipalSpec {
    fn user_info(&self) -> UserInfo {
        UserInfo {
            name: self.user.clone(),
            uid: self.uid.clone(),
            groups: self.groups.clone(),
            extra: self.extra.clone(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ResourceSpec {
    #[serde(default)]
    api_group: String,
    resource: String,
    #[serde(default)]
    subresource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
}

/// Run every case of every file; false when any case failed or a file could not be run.
pub fn test(files: &[PathBuf], dir: Option<&Path>) -> anyhow::Result<bool> {
    let base = PolicyFiles::load(dir).map_err(|e| anyhow::anyhow!("{}", one_line(&e)))?;
    let (mut passed, mut failed) = (0usize, 0usize);
    for path in files {
        let shown = path.display().to_string();
        let file = match load_cases(path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("{shown}: {e:#}");
                failed += 1;
                continue;
            }
        };
        for (i, case) in file.cases.iter().enumerate() {
            if run_case(&base, &shown, &file.kind, i, file.policies.as_deref(), case) {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    say!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

fn load_cases(path: &Path) -> anyhow::Result<CaseFile> {
    let text = std::fs::read_to_string(path).context("cannot read the case file")?;
    let file: CaseFile = serde_yaml_ng::from_str(&text).context("invalid case file")?;
    Ok(file)
}

/// Evaluate one case and print its PASS/FAIL line; true when it passed.
fn run_case(
    base: &PolicyFiles,
    file: &str,
    kind: &CaseKind,
    index: usize,
    shared: Option<&str>,
    case: &Case,
) -> bool {
    let label = format!("{file}: {}", case.name);
    let result = match kind {
        CaseKind::Authz => evaluate(base, file, index, shared, case),
        CaseKind::Admission => admit(base, file, index, shared, case),
    };
    let decision = match result {
        Err(e) => {
            say!("FAIL {label}: {e:#}");
            return false;
        }
        Ok(d) => d,
    };
    let got = if decision.is_allowed() {
        Expect::Allow
    } else {
        Expect::Deny
    };
    let ids = decision.policies().join(", ");
    let shown = if decision.is_allowed() {
        format!("allow by [{ids}]")
    } else {
        format!("deny ({})", decision.reason())
    };
    let mut problem = None;
    if got != case.expect {
        let want = match case.expect {
            Expect::Allow => "allow",
            Expect::Deny => "deny",
        };
        problem = Some(format!("expected {want}, got {shown}"));
    } else if let Some(want) = &case.expect_policies {
        let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
        let have: BTreeSet<&str> = decision.policies().iter().map(String::as_str).collect();
        if want != have {
            problem = Some(format!(
                "expected policies [{}], got {shown}",
                want.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    match &problem {
        None => say!("PASS {label}: {shown}"),
        Some(p) => say!("FAIL {label}: {p}"),
    }
    problem.is_none()
}

/// The authorizer's decision for one case (inline policies and bound nodes applied).
fn evaluate(
    base: &PolicyFiles,
    file: &str,
    index: usize,
    shared: Option<&str>,
    case: &Case,
) -> anyhow::Result<crate::auth::Decision> {
    let tree = with_inline(base, "authz", file, index, shared, case);
    let graph = NodeGraph::new();
    let authorizer =
        cedar::authorizer(&tree, graph.clone()).map_err(|e| anyhow::anyhow!("{}", one_line(&e)))?;
    let user = case.principal.user_info();
    let decision = match (&case.resource, &case.path) {
        (Some(r), None) => {
            bind(&graph, r, &case.bound_nodes)?;
            let path = format!(
                "{}/{}/{}@{}/{}",
                r.api_group, r.resource, r.subresource, r.namespace, r.name
            );
            authorizer.authorize(&Attributes {
                user: &user,
                verb: &case.verb,
                resource_request: true,
                api_group: &r.api_group,
                resource: &r.resource,
                subresource: &r.subresource,
                namespace: &r.namespace,
                name: &r.name,
                path: &path,
            })
        }
        (None, Some(p)) => {
            if !case.bound_nodes.is_empty() {
                bail!("boundNodes needs a resource");
            }
            authorizer.authorize(&Attributes {
                user: &user,
                verb: &case.verb,
                resource_request: false,
                api_group: "",
                resource: "",
                subresource: "",
                namespace: "",
                name: "",
                path: p,
            })
        }
        _ => bail!("a case needs exactly one of `resource` and `path`"),
    };
    Ok(decision)
}

/// The policy tree with the file's and the case's inline policies added under `sub/`, where
/// they are validated like the operator's own; the file name in errors says where they came
/// from.
fn with_inline(
    base: &PolicyFiles,
    sub: &str,
    file: &str,
    index: usize,
    shared: Option<&str>,
    case: &Case,
) -> PolicyFiles {
    let mut tree = base.clone();
    let stem = Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("cases");
    if let Some(text) = shared {
        tree.insert(&format!("{sub}/{stem}.inline.cedar"), text);
    }
    if let Some(text) = &case.policies {
        tree.insert(&format!("{sub}/{stem}.case-{}.cedar", index + 1), text);
    }
    tree
}

/// The admission decision for one case: the embedded (or `--policy-dir`) admission policies,
/// plus inline ones, over `object` — the same engine the server runs after authorization.
fn admit(
    base: &PolicyFiles,
    file: &str,
    index: usize,
    shared: Option<&str>,
    case: &Case,
) -> anyhow::Result<crate::auth::Decision> {
    use crate::auth::admission::{pod_security_level, Admission, AdmissionRequest, Operation};
    let tree = with_inline(base, "admission", file, index, shared, case);
    let adm = Admission::load(&tree).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(object) = &case.object else {
        bail!("an admission case needs `object`");
    };
    let operation = match case.verb.as_str() {
        "create" => Operation::Create,
        "update" => Operation::Update,
        "delete" => Operation::Delete,
        other => bail!("admission verbs are create, update and delete, not {other:?}"),
    };
    let (group, _) = object["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .rsplit_once('/')
        .unwrap_or(("", ""));
    let kind = object["kind"].as_str().unwrap_or_default();
    let Some(ri) = crate::api::resources::builtin()
        .iter()
        .find(|r| r.group == group && r.kind == kind)
    else {
        bail!("unknown kind {kind:?} in group {group:?}");
    };
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let (level, policy) = if kind == "Pod" {
        pod_security_level(namespace, case.namespace_labels.as_ref())
    } else {
        ("privileged".to_string(), "privileged:latest".to_string())
    };
    let user = case.principal.user_info();
    let verdict = adm.admit(&AdmissionRequest {
        user: &user,
        operation,
        ri,
        subresource: "",
        object,
        old: case.old_object.as_ref(),
        pod_level: &level,
        pod_policy: &policy,
    });
    Ok(if verdict.allowed {
        crate::auth::Decision::allow(verdict.policies)
    } else {
        crate::auth::Decision::deny(verdict.policies, verdict.message)
    })
}

/// Put the case's bound nodes into the node graph as pods on those nodes using the object.
fn bind(graph: &NodeGraph, r: &ResourceSpec, nodes: &[String]) -> anyhow::Result<()> {
    if nodes.is_empty() {
        return Ok(());
    }
    if !r.api_group.is_empty() || r.name.is_empty() {
        bail!("boundNodes applies to a named core object (pods, secrets, configmaps, persistentvolumeclaims, serviceaccounts)");
    }
    for (i, node) in nodes.iter().enumerate() {
        let (name, spec) = match r.resource.as_str() {
            "pods" => (r.name.clone(), json!({"nodeName": node})),
            "secrets" => (
                format!("case-pod-{i}"),
                json!({"nodeName": node, "volumes": [{"name": "v", "secret": {"secretName": r.name}}]}),
            ),
            "configmaps" => (
                format!("case-pod-{i}"),
                json!({"nodeName": node, "volumes": [{"name": "v", "configMap": {"name": r.name}}]}),
            ),
            "persistentvolumeclaims" => (
                format!("case-pod-{i}"),
                json!({"nodeName": node, "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": r.name}}]}),
            ),
            "serviceaccounts" => (
                format!("case-pod-{i}"),
                json!({"nodeName": node, "serviceAccountName": r.name}),
            ),
            other => bail!("boundNodes does not apply to {other:?} (pods, secrets, configmaps, persistentvolumeclaims, serviceaccounts)"),
        };
        if r.resource == "pods" && nodes.len() > 1 {
            bail!("a pod is bound to one node");
        }
        graph.apply(&json!({
            "metadata": {"namespace": r.namespace, "name": name},
            "spec": spec,
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_kind_follows_the_directory() {
        assert_eq!(
            kind_of(Path::new("policies/admission/pss.cedar")),
            PolicyKind::Admission
        );
        assert_eq!(kind_of(Path::new("x/authz/a.cedar")), PolicyKind::Authz);
    }

    #[test]
    fn unknown_case_fields_are_errors() {
        let bad = "cases:\n- name: x\n  principal: {user: a}\n  verb: get\n  path: /\n  expect: allow\n  expected: deny\n";
        assert!(serde_yaml_ng::from_str::<CaseFile>(bad).is_err());
    }
}
