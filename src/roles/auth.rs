//! The server role's authentication wiring: the service-account token issuer and the bearer
//! authenticators (service-account JWTs, then OIDC if configured), and the controller
//! manager's start once the API server listens.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::apiserver;
use crate::auth::{authn, oidc, serviceaccount};
use crate::cli::AuthArgs;
use crate::store::Backend;

/// The issuer and the authenticator list for `apiserver::Config`.
pub fn build(
    args: &AuthArgs,
    authority: &crate::pki::Authority,
    store: Arc<dyn Backend>,
) -> anyhow::Result<(Arc<serviceaccount::Issuer>, authn::Authenticator)> {
    let m = authority.current();
    let keys = serviceaccount::KeySet::from_pem(&m.sa_key_pem, "")
        .map_err(|e| anyhow::anyhow!("cannot load the service-account signing key: {e}"))?;
    let issuer = Arc::new(serviceaccount::Issuer::new(
        keys,
        &args.service_account_issuer,
        args.api_audiences.clone(),
        &args.service_account_jwks_uri,
    ));
    let mut authn = authn::Authenticator::default();
    authn
        .tokens
        .push(Arc::new(serviceaccount::Authenticator::new(
            issuer.clone(),
            Arc::new(apiserver::sa_tokens::StoreLookup::new(store)),
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

/// Start the controller manager against the API server at `bound` (over loopback when it
/// listens everywhere) with its own client certificate.
pub fn start_controllers(
    authority: &crate::pki::Authority,
    bound: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let m = authority.current();
    let id = m
        .identity("controller-manager")
        .ok_or("the PKI has no controller-manager identity")?;
    let ca_pem = m.bundle_pem.clone();
    let host = if bound.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        bound.ip()
    };
    let server = format!("https://{}", SocketAddr::new(host, bound.port()));
    tokio::spawn(async move {
        let creds = crate::client::Credentials::Certificate {
            cert_pem: id.cert_pem,
            key_pem: id.key_pem,
        };
        let client = match crate::client::build(&server, &ca_pem, &creds).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the controller manager");
                return;
            }
        };
        let cfg = crate::controllers::Config {
            root_ca_pem: ca_pem.clone(),
        };
        if let Err(e) = crate::controllers::run(cfg, client, shutdown).await {
            tracing::error!(error = %e, "controller manager stopped");
        }
    });
    Ok(())
}
