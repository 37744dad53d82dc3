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

use super::authn::TokenAuthenticator;
use super::UserInfo;
pub use keys::KeySet;
pub use token::{Claims, Issuer, Private, Ref};

/// Answers whether the objects a token names still exist (implemented over the store by the
/// API server, which is the only component that may read it).
#[async_trait]
pub trait Lookup: Send + Sync {
    /// `Err` with a message safe to show the client when the token must be refused.
    async fn check(&self, claims: &Private) -> Result<(), String>;
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

/// The identity of a service account.
pub fn user(namespace: &str, name: &str) -> UserInfo {
    UserInfo {
        name: token::subject(namespace, name),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
        ],
    }
    .with_authenticated_group()
}

#[async_trait]
impl TokenAuthenticator for Authenticator {
    async fn authenticate(&self, token: &str) -> Option<Result<UserInfo, String>> {
        let claims = match self.issuer.verify(token)? {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        if let Err(e) = self.lookup.check(&claims.kubernetes).await {
            return Some(Err(e));
        }
        let k = &claims.kubernetes;
        Some(Ok(user(&k.namespace, &k.serviceaccount.name)))
    }
}
