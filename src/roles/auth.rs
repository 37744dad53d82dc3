//! The server role's authentication wiring: the service-account token issuer and the bearer
//! authenticators (service-account JWTs, then OIDC if configured).

use std::sync::Arc;

use anyhow::Context;

use crate::apiserver;
use crate::auth::{authn, oidc, service_account};
use crate::cli::AuthArgs;
use crate::store::Backend;

/// The issuer and the authenticator list for `apiserver::Config`.
pub fn build(
    args: &AuthArgs,
    authority: &crate::pki::Authority,
    store: Arc<dyn Backend>,
) -> anyhow::Result<(Arc<service_account::Issuer>, authn::Authenticator)> {
    let m = authority.current();
    let keys = service_account::KeySet::from_pem(&m.sa_key_pem, "")
        .map_err(|e| anyhow::anyhow!("cannot load the service-account signing key: {e}"))?;
    let issuer = Arc::new(service_account::Issuer::new(
        keys,
        &args.service_account_issuer,
        args.api_audiences.clone(),
        &args.service_account_jwks_uri,
    ));
    let mut authn = authn::Authenticator::default();
    authn
        .tokens
        .push(Arc::new(service_account::Authenticator::new(
            issuer.clone(),
            Arc::new(apiserver::service_account_tokens::StoreLookup::new(store)),
        )));
    if let Some(url) = &args.oidc_issuer_url {
        let ca_pem = match &args.oidc_ca_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read --oidc-ca-file {}", p.display()))?,
            ),
            None => None,
        };
        let a = oidc::Authenticator::new(oidc::Config {
            issuer_url: url.clone(),
            client_id: args.oidc_client_id.clone().unwrap_or_default(),
            username_claim: args.oidc_username_claim.clone(),
            username_prefix: args.oidc_username_prefix.clone(),
            groups_claim: args.oidc_groups_claim.clone(),
            groups_prefix: args.oidc_groups_prefix.clone(),
            ca_pem,
        })?;
        authn.tokens.push(Arc::new(a));
    }
    Ok((issuer, authn))
}
