//! Who is asking, and may they. Authentication turns a request's credentials into a
//! [`UserInfo`]; authorization decides on `(user, request attributes)`.
//!
//! Today: X.509 client certificates signed by the cluster CA (CN = user, O = groups, as
//! upstream), and an authorizer that admits every authenticated identity. Cedar policies
//! replace the authorizer in their own issue; the request path (authenticate → authorize →
//! admit → store) is already in place for them.

pub mod audit;
pub mod authn;
pub mod bootstrap;
pub mod oidc;
pub mod revocation;
pub mod serviceaccount;
pub mod x509;

/// An authenticated identity, as upstream's `user.Info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

/// The interim authorizer: any authenticated identity may do anything.
pub fn authorize(attrs: &Attributes<'_>) -> Decision {
    if attrs.user.name.is_empty() {
        Decision::Deny("anonymous requests are not allowed".into())
    } else {
        Decision::Allow
    }
}
