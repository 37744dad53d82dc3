//! Errors of the merge module, one enum per concern.
//!
//! Each variant names the HTTP status the API handler should put in the
//! `metav1.Status` it returns, following what kube-apiserver's patch handler
//! (`staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go`) does for
//! the same failure.  Messages are written for the person running kubectl:
//! they say what was wrong with the request, not where in our code it failed.

use std::fmt;

/// Failure of a JSON patch, JSON merge patch or strategic merge patch.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PatchError {
    /// The patch body is not valid for its content type (not JSON, not a
    /// list of operations, unknown `op`, malformed directive).
    /// **400 Bad Request** (`errors.NewBadRequest` upstream).
    #[error("invalid patch: {0}")]
    Malformed(String),

    /// The patch is well formed but cannot be applied to this object: a
    /// failed `test`, a path that does not exist, a list item without its
    /// merge key.  **422 Unprocessable Entity** (upstream answers JSON patch
    /// application failures with 422).
    #[error("the patch cannot be applied: {0}")]
    Unapplicable(String),

    /// The document or the patch nests deeper than `MAX_DEPTH`.
    /// **400 Bad Request**.
    #[error("the request is nested more than {0} levels deep")]
    TooDeep(usize),

    /// The patch asks for more work than one request may: more JSON patch
    /// operations than upstream's `maxJSONPatchOperations`.
    /// **413 Request Entity Too Large**, exactly as upstream.
    #[error("{0}")]
    TooLarge(String),

    /// The result of the patch is not a JSON object (e.g. a merge patch
    /// whose body is `[]` or `"x"`, which RFC 7396 says replaces the whole
    /// document).  **400 Bad Request**: upstream fails to decode the result.
    #[error("the patched document must be a JSON object, but the patch made it {0}")]
    NotAnObject(&'static str),

    /// Strategic merge patch on a kind without a schema (custom resources).
    /// **415 Unsupported Media Type**, exactly as upstream.
    #[error("strategic merge patch is not supported for {kind}.{group}: use application/merge-patch+json or application/apply-patch+yaml")]
    UnsupportedKind { group: String, kind: String },
}

/// Failure of a server-side apply.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ApplyError {
    /// Fields the configuration sets are owned by other managers with other
    /// values, and `force` was not given.  **409 Conflict**; each
    /// [`Conflict`] becomes a `StatusCause` of type `FieldManagerConflict`
    /// with `field` = [`Conflict::field_path`] and `message` =
    /// `"conflict with " + Conflict::manager_description()`.
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<Conflict>),

    /// The applied configuration is not usable: not an object, missing
    /// `apiVersion`/`kind`, a kind different from the URL's, or it sets
    /// `metadata.managedFields`.  **400 Bad Request**.
    #[error("invalid apply configuration: {0}")]
    InvalidConfig(String),

    /// The configuration or the live object nests deeper than `MAX_DEPTH`.
    /// **400 Bad Request**.
    #[error("the request is nested more than {0} levels deep")]
    TooDeep(usize),
}

/// One field that the applier wants to change but another manager owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager's name (`managedFields[].manager`).
    pub manager: String,
    /// Its operation, `Apply` or `Update`.
    pub operation: String,
    /// Its `apiVersion`; printed for `Update` managers like upstream.
    pub api_version: String,
    /// Its subresource, empty for the main resource.
    pub subresource: String,
    /// The field, in structured-merge-diff notation:
    /// `.spec.template.spec.containers[name="web"].image`.
    pub field_path: String,
}

impl Conflict {
    /// The manager as upstream's `printManager` shows it:
    /// `"kubectl-edit" using apps/v1` for an Update manager, `"helm"` for an
    /// applier, with ` with subresource "status"` when it came through one.
    pub fn manager_description(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    fn identity(&self) -> (String, &str, &str, &str) {
        (
            self.manager_description(),
            self.operation.as_str(),
            self.api_version.as_str(),
            self.subresource.as_str(),
        )
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conflict with {}: {}",
            self.manager_description(),
            self.field_path
        )
    }
}

/// Upstream's `getConflictMessage`: one line for a single conflict, else one
/// block per manager (sorted), one `- path` line per field.
fn conflicts_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!("Apply failed with 1 conflict: {only}");
    }
    let mut managers: Vec<_> = conflicts.iter().map(Conflict::identity).collect();
    managers.sort();
    managers.dedup();
    let mut lines = Vec::new();
    for m in &managers {
        lines.push(format!("conflicts with {}:", m.0));
        for c in conflicts.iter().filter(|c| &c.identity() == m) {
            lines.push(format!("- {}", c.field_path));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(manager: &str, op: &str, path: &str) -> Conflict {
        Conflict {
            manager: manager.into(),
            operation: op.into(),
            api_version: "apps/v1".into(),
            subresource: String::new(),
            field_path: path.into(),
        }
    }

    #[test]
    fn single_conflict_message_matches_upstream() {
        let e = ApplyError::Conflicts(vec![conflict(
            "kubectl-client-side-apply",
            "Update",
            ".spec.replicas",
        )]);
        assert_eq!(
            e.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
    }

    #[test]
    fn several_conflicts_are_grouped_by_manager() {
        let e = ApplyError::Conflicts(vec![
            conflict("zeta", "Apply", ".spec.replicas"),
            conflict("alpha", "Update", ".metadata.labels.app"),
            conflict("zeta", "Apply", ".spec.paused"),
        ]);
        assert_eq!(
            e.to_string(),
            "Apply failed with 3 conflicts: conflicts with \"alpha\" using apps/v1:\n\
             - .metadata.labels.app\n\
             conflicts with \"zeta\":\n\
             - .spec.replicas\n\
             - .spec.paused"
        );
    }

    #[test]
    fn subresource_is_named() {
        let mut c = conflict("kube-controller-manager", "Update", ".status.replicas");
        c.subresource = "status".into();
        assert_eq!(
            c.manager_description(),
            "\"kube-controller-manager\" with subresource \"status\" using apps/v1"
        );
    }
}
