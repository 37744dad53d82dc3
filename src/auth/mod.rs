//! Who is asking, and may they. Authentication turns a request's credentials into a
//! [`UserInfo`]; authorization decides on `(user, request attributes)`.
//!
//! Authentication: X.509 client certificates (CN = user, O = groups, as upstream), service
//! account JWTs, bootstrap tokens, optional OIDC. Authorization: one Cedar evaluation per
//! request (`cedar`), with RBAC objects compiled into Cedar (`rbac`).

pub mod admission;
pub mod audit;
pub mod authn;
pub mod bootstrap;
pub mod cedar;
pub mod enforcement;
pub mod oidc;
pub mod rbac;
pub mod revocation;
pub mod service_account;
pub mod x509;

/// An authenticated identity, as upstream's `user.Info`: name, uid, groups and extra
/// (`authentication.kubernetes.io/pod-name`, `credential-id`, ... for service-account tokens;
/// `Impersonate-Extra-*` when impersonating). Client certificates carry no uid or extra.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// Every authenticated user is also in `system:authenticated`, as upstream.
    pub fn with_authenticated_group(mut self) -> Self {
        if !self.groups.iter().any(|g| g == "system:authenticated") {
            self.groups.push("system:authenticated".into());
        }
        self
    }
}

/// The request attributes an authorizer decides on (upstream's `authorizer.Attributes`).
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    pub user: &'a UserInfo,
    pub verb: &'a str,
    pub resource_request: bool,
    pub api_group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub path: &'a str,
}

/// An authorization decision and the ids of the policies that determined it (the permits
/// that allowed it, or the forbids that denied it; none when nothing permitted it).
///
/// There is no "undecided" or "skipped": every path that cannot decide (an evaluation error,
/// an unavailable policy store, an unknown verb) is a `Deny`, so a caller that only asks
/// [`Decision::is_allowed`] fails closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow {
        policies: Vec<String>,
    },
    Deny {
        policies: Vec<String>,
        /// Why, for a 403 ("no policy permits it", "forbidden by policy ...").
        reason: String,
        /// The policies named failed to evaluate (Cedar skips an erroring policy; we deny).
        evaluation_error: bool,
    },
}

impl Decision {
    pub fn allow(policies: Vec<String>) -> Self {
        Self::Allow { policies }
    }

    pub fn deny(policies: Vec<String>, reason: String) -> Self {
        Self::Deny {
            policies,
            reason,
            evaluation_error: false,
        }
    }

    /// Denied because `policies` failed to evaluate (see `cedar::fail_closed`).
    pub fn evaluation_failed(policies: Vec<String>, reason: String) -> Self {
        Self::Deny {
            policies,
            reason,
            evaluation_error: true,
        }
    }

    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }

    /// The permits that allowed it, or the forbids (or failing policies) that denied it.
    pub fn policies(&self) -> &[String] {
        match self {
            Self::Allow { policies } | Self::Deny { policies, .. } => policies,
        }
    }

    pub fn into_policies(self) -> Vec<String> {
        match self {
            Self::Allow { policies } | Self::Deny { policies, .. } => policies,
        }
    }

    /// Why it was denied; empty when allowed.
    pub fn reason(&self) -> &str {
        match self {
            Self::Allow { .. } => "",
            Self::Deny { reason, .. } => reason,
        }
    }

    pub fn is_evaluation_error(&self) -> bool {
        matches!(
            self,
            Self::Deny {
                evaluation_error: true,
                ..
            }
        )
    }
}
