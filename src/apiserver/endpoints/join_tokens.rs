//! The join-token authenticator: bearer tokens `<id>.<secret>` checked against the bootstrap
//! token Secrets in `kube-system` (see `auth::bootstrap` for the rules and the per-id
//! back-off: 401, then 429 with a growing Retry-After; a correct secret always passes).
//! It reads the store directly because authentication happens before any API request exists.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;

use crate::auth::authn::{self, TokenAuthenticator};
use crate::auth::bootstrap::{self, BearerToken, Limiter, Rejected};
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

    async fn lookup(&self, token: &BearerToken) -> Result<Option<Secret>, Rejected> {
        let key =
            crate::apiserver::storage::Builtin::Secrets.key("kube-system", &token.secret_name());
        let kv = self.store.get(&key, None).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot read join tokens");
            Rejected::Unverifiable
        })?;
        Ok(kv.and_then(|kv| crate::apiserver::storage::decode_as::<Secret>(&kv).ok()))
    }
}

#[async_trait]
impl TokenAuthenticator for JoinTokenAuthenticator {
    async fn authenticate(&self, token: &str) -> Option<Result<UserInfo, authn::Error>> {
        let token = BearerToken::parse(token)?;
        let secret = match self.lookup(&token).await {
            Ok(s) => s,
            Err(e) => return Some(Err(e.into())),
        };
        // The secret is checked first: a correct token is never refused by a back-off.
        let result = bootstrap::check(&token, secret.as_ref(), jiff::Timestamp::now().as_second());
        Some(match result {
            Ok(user) => {
                self.limiter.succeed(&token.id);
                Ok(user)
            }
            Err(rejected) => match self.limiter.fail(&token.id, Instant::now()) {
                None => Err(rejected.into()),
                Some(wait) => {
                    if wait == self.limiter.first_back_off() {
                        // Once per episode; the id is not secret, the secret never logged.
                        tracing::warn!(token_id = %token.id, "repeated join-token failures: backing off this token id");
                    }
                    Err(authn::Error::Throttled {
                        token_id: token.id.clone(),
                        retry_after: wait,
                    })
                }
            },
        })
    }
}
