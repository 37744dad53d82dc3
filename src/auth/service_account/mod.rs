//! Service-account authentication, as upstream's bound service-account tokens (KEP-1205):
//! short-lived ES256 JWTs from the TokenRequest API, verified by signature, issuer, time and
//! audience, then checked against the API: the service account (and the pod, secret or node the
//! token is bound to) must still exist with the same uid, and a bound pod must not be
//! terminating. Deleting any of them revokes the token at once.
//!
//! The user is `system:serviceaccount:<ns>:<name>` in groups `system:serviceaccounts`,
//! `system:serviceaccounts:<ns>` and `system:authenticated`.

pub mod keys;
pub mod token;

use std::sync::Arc;

use async_trait::async_trait;

use super::authn::{self, TokenAuthenticator};
use super::UserInfo;
pub use keys::KeySet;
pub use token::{Claims, Issuer, Private, Ref};

/// Why a service-account token is refused; `Display` is the client's 401 text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("malformed service account token")]
    Malformed,
    #[error("service account token is signed by an unknown key")]
    UnknownKey,
    #[error("service account token has an inconsistent subject")]
    InconsistentSubject,
    /// Signature, expiry, issuer or audience: jsonwebtoken's reason, described.
    #[error("service account token is invalid: {0}")]
    Invalid(String),
    /// The service account, secret, pod or node the token is bound to is gone (or is
    /// another object of the same name).
    #[error("service account token has been invalidated")]
    Invalidated,
    /// The bound objects could not be read (the store is unavailable); the cause is logged
    /// by the caller, not sent.
    #[error("cannot verify the service account token right now")]
    Unverifiable,
}

/// Answers whether the objects a token names still exist (implemented over the store by the
/// API server, which is the only component that may read it).
#[async_trait]
pub trait Lookup: Send + Sync {
    /// `Err` when the token must be refused.
    async fn check(&self, claims: &Private) -> Result<(), Rejected>;
}

/// The bearer-token authenticator for service-account JWTs.
pub struct Authenticator {
    issuer: Arc<Issuer>,
    lookup: Arc<dyn Lookup>,
}

impl Authenticator {
    pub fn new(issuer: Arc<Issuer>, lookup: Arc<dyn Lookup>) -> Self {
        Authenticator { issuer, lookup }
    }
}

const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";
const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// The identity of a service account.
pub fn user(namespace: &str, name: &str) -> UserInfo {
    UserInfo {
        name: token::subject(namespace, name),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
        ],
        ..Default::default()
    }
    .with_authenticated_group()
}

#[async_trait]
impl TokenAuthenticator for Authenticator {
    async fn authenticate(&self, token: &str) -> Option<Result<UserInfo, authn::Error>> {
        let claims = match self.issuer.verify(token)? {
            Ok(c) => c,
            Err(e) => return Some(Err(e.into())),
        };
        if let Err(e) = self.lookup.check(&claims.kubernetes).await {
            return Some(Err(e.into()));
        }
        let k = &claims.kubernetes;
        let mut u = user(&k.namespace, &k.serviceaccount.name);
        u.uid = k.serviceaccount.uid.clone();
        // Upstream's extra for bound tokens (pkg/serviceaccount/claims.go), so audit and
        // authorization can tell which pod or node a token was issued to.
        let mut extra = std::collections::BTreeMap::new();
        if let Some(pod) = &k.pod {
            extra.insert(EXTRA_POD_NAME.to_string(), vec![pod.name.clone()]);
            extra.insert(EXTRA_POD_UID.to_string(), vec![pod.uid.clone()]);
        }
        if let Some(node) = &k.node {
            extra.insert(EXTRA_NODE_NAME.to_string(), vec![node.name.clone()]);
            extra.insert(EXTRA_NODE_UID.to_string(), vec![node.uid.clone()]);
        }
        if !claims.jti.is_empty() {
            extra.insert(
                EXTRA_CREDENTIAL_ID.to_string(),
                vec![format!("JTI={}", claims.jti)],
            );
        }
        u.extra = extra;
        Some(Ok(u))
    }
}
