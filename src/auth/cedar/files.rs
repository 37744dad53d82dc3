//! The policy tree: the Cedar schema and policies shipped in `policies/` (compiled into the
//! binary), overlaid by an operator's `--policy-dir`.
//!
//! Layout (the same embedded and on disk): `schema/*.cedarschema` (fragments, combined;
//! `schema/admission*.cedarschema` only into the admission schema),
//! `system/*.cedar` (authorization policies for built-in identities), `authz/*.cedar`
//! (operators' own authorization policies), `admission/*.cedar` (admission policies, Pod
//! Security Standards first). A file in `--policy-dir` with the same relative path as an
//! embedded one replaces it; other files are added.
//!
//! Invariants: every policy is validated *strictly* against the schema before it is used, and
//! a failure names the file and line — a policy that does not type-check could error at
//! evaluation, and an erroring `forbid` is silently skipped by Cedar. Policy ids come from an
//! `@id("...")` annotation, else `<file>#<n>` (the n-th policy in the file); ids are unique across the tree.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::str::FromStr;

use cedar_policy::{
    Policy, PolicyId, PolicySet, Schema, SchemaFragment, ValidationMode, Validator,
};
use miette::Diagnostic;

use super::Error;

/// The policy files compiled into the binary, by path relative to `policies/`.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "schema/authz.cedarschema",
        include_str!("../../../policies/schema/authz.cedarschema"),
    ),
    (
        "schema/admission.cedarschema",
        include_str!("../../../policies/schema/admission.cedarschema"),
    ),
    (
        "admission/pss-baseline.cedar",
        include_str!("../../../policies/admission/pss-baseline.cedar"),
    ),
    (
        "admission/pss-restricted.cedar",
        include_str!("../../../policies/admission/pss-restricted.cedar"),
    ),
    (
        "system/masters.cedar",
        include_str!("../../../policies/system/masters.cedar"),
    ),
    (
        "system/authenticated.cedar",
        include_str!("../../../policies/system/authenticated.cedar"),
    ),
    (
        "system/nodes.cedar",
        include_str!("../../../policies/system/nodes.cedar"),
    ),
    (
        "system/control-plane.cedar",
        include_str!("../../../policies/system/control-plane.cedar"),
    ),
];

/// The policy tree: relative path → text.
#[derive(Debug, Clone)]
pub struct PolicyFiles {
    files: BTreeMap<String, String>,
}

impl PolicyFiles {
    /// The embedded tree only.
    pub fn embedded() -> Self {
        Self {
            files: EMBEDDED
                .iter()
                .map(|(p, t)| (p.to_string(), t.to_string()))
                .collect(),
        }
    }

    /// The embedded tree overlaid by `dir` (see the module docs).
    pub fn load(dir: Option<&Path>) -> Result<Self, Error> {
        let mut tree = Self::embedded();
        let Some(dir) = dir else {
            return Ok(tree);
        };
        for sub in ["schema", "system", "authz", "admission"] {
            let d = dir.join(sub);
            if !d.is_dir() {
                continue;
            }
            let entries =
                std::fs::read_dir(&d).map_err(|e| Error::Io(d.display().to_string(), e))?;
            for entry in entries {
                let path = entry
                    .map_err(|e| Error::Io(d.display().to_string(), e))?
                    .path();
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                if !matches!(ext, "cedar" | "cedarschema") {
                    continue;
                }
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| Error::Io(path.display().to_string(), e))?;
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                tree.files.insert(format!("{sub}/{name}"), text);
            }
        }
        Ok(tree)
    }

    /// Add or replace one file (tests and `rampart policy check`).
    pub fn insert(&mut self, path: &str, text: &str) {
        self.files.insert(path.to_string(), text.to_string());
    }

    /// Files under `sub/` with extension `ext`, in path order.
    pub fn under<'a>(
        &'a self,
        sub: &'a str,
        ext: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.files.iter().filter_map(move |(p, t)| {
            let rest = p.strip_prefix(sub)?.strip_prefix('/')?;
            rest.ends_with(ext).then_some((p.as_str(), t.as_str()))
        })
    }

    /// The full schema (what admission policies validate against): every
    /// `schema/*.cedarschema` fragment combined.
    pub fn schema(&self) -> Result<Schema, Error> {
        self.schema_of(|_| true)
    }

    /// The authorization schema (what `system/` and `authz/` policies validate against): every
    /// fragment but the admission ones (`schema/admission*.cedarschema`), so an authorization
    /// policy written over admission types — which would never match a request — is refused.
    pub fn authz_schema(&self) -> Result<Schema, Error> {
        self.schema_of(|path| !is_admission_fragment(path))
    }

    fn schema_of(&self, include: impl Fn(&str) -> bool) -> Result<Schema, Error> {
        let mut fragments = Vec::new();
        for (path, text) in self.under("schema", ".cedarschema") {
            if !include(path) {
                continue;
            }
            let (fragment, _warnings) = SchemaFragment::from_cedarschema_str(text)
                .map_err(|e| Error::Schema(located(path, text, &e)))?;
            fragments.push(fragment);
        }
        Schema::from_schema_fragments(fragments)
            .map_err(|e| Error::Schema(format!("policies/schema: {e}")))
    }

    /// Every policy under `sub/`, parsed and validated strictly against `schema`.
    pub fn policies(&self, sub: &str, schema: &Schema) -> Result<Vec<Policy>, Error> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (path, text) in self.under(sub, ".cedar") {
            for p in parse_file(path, text, schema)? {
                if !seen.insert(p.id().clone()) {
                    return Err(Error::Policy(format!(
                        "{path}: policy id {:?} is used twice",
                        p.id().to_string()
                    )));
                }
                out.push(p);
            }
        }
        Ok(out)
    }
}

fn is_admission_fragment(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with("admission"))
}

/// Parse one policy file, give each policy its id (`@id`, else `<file>#<n>`) and validate
/// the file strictly against `schema`. Errors name `file:line`.
pub fn parse_file(path: &str, text: &str, schema: &Schema) -> Result<Vec<Policy>, Error> {
    let set = PolicySet::from_str(text).map_err(|e| Error::Policy(located(path, text, &e)))?;
    let validation = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    if let Some(err) = validation.validation_errors().next() {
        return Err(Error::Policy(located(path, text, err)));
    }
    let mut out = Vec::new();
    for p in set.policies() {
        let id = match p.annotation("id") {
            Some(id) => id.to_string(),
            // Cedar numbers a file's policies policy0, policy1, ... in source order.
            None => {
                let n = p.id().to_string();
                let n: usize = n.trim_start_matches("policy").parse().unwrap_or(0);
                format!("{path}#{}", n + 1)
            }
        };
        out.push(p.new_id(PolicyId::new(id)));
    }
    out.sort_by_key(|p| p.id().to_string());
    Ok(out)
}

/// `path:line: message` for a diagnostic whose labels point into `text`.
fn located(path: &str, text: &str, diag: &dyn Diagnostic) -> String {
    let line = diag
        .labels()
        .and_then(|mut l| l.next())
        .map(|l| line_of(text, l.offset()))
        .unwrap_or(0);
    let mut msg = diag.to_string();
    if let Some(help) = diag.help() {
        msg.push_str(&format!(" ({help})"));
    }
    if line > 0 {
        format!("{path}:{line}: {msg}")
    } else {
        format!("{path}: {msg}")
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map(|t| t.matches('\n').count() + 1)
        .unwrap_or(1)
}
