//! The join-token authenticator: bearer tokens `<id>.<secret>` checked against the bootstrap
//! token Secrets in `kube-system` (see `auth::bootstrap` for the rules and the rate limit).
//! It reads the store directly because authentication happens before any API request exists.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;

use crate::auth::authn::TokenAuthenticator;
use crate::auth::bootstrap::{self, BearerToken, Limiter};
use crate::auth::UserInfo;
use crate::store::Backend;

pub struct JoinTokenAuthenticator {
    store: Arc<dyn Backend>,
    limiter: Limiter,
}

impl JoinTokenAuthenticator {
    pub fn new(store: Arc<dyn Backend>) -> Self {
        JoinTokenAuthenticator {
            store,
            limiter: Limiter::default(),
        }
    }

    async fn lookup(&self, token: &BearerToken) -> Result<Option<Secret>, String> {
        let key = format!("/registry/core/secrets/kube-system/{}", token.secret_name());
        let kv = self
            .store
            .get(&key, None)
            .await
            .map_err(|e| format!("cannot read join tokens: {e}"))?;
        Ok(kv.and_then(|kv| serde_json::from_slice::<Secret>(&kv.value).ok()))
    }
}

#[async_trait]
impl TokenAuthenticator for JoinTokenAuthenticator {
    async fn authenticate(&self, token: &str) -> Option<Result<UserInfo, String>> {
        let token = BearerToken::parse(token)?;
        let key = bootstrap::limiter_key(&token);
        if self.limiter.locked(&key, Instant::now()) {
            return Some(Err(
                "too many failed join-token attempts from this address; try again later".into(),
            ));
        }
        let secret = match self.lookup(&token).await {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        let result = bootstrap::check(&token, secret.as_ref(), jiff::Timestamp::now().as_second());
        if result.is_err() && self.limiter.fail(&key, Instant::now()) {
            // The id is not secret; the secret never reaches the log.
            tracing::warn!(token_id = %token.id, %key, "join-token failures: locking out the source for a while");
        }
        Some(result)
    }
}
