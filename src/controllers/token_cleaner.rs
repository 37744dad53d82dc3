//! Deletes expired join tokens, as upstream's `tokencleaner` controller: a bootstrap-token
//! Secret (`type: bootstrap.kubernetes.io/token` in kube-system) whose `expiration` has passed
//! is removed. Expired tokens never authenticate anyway; this keeps `token list` and the store
//! tidy.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams};
use kube::Api;

const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
const INTERVAL: Duration = Duration::from_secs(60);

/// Whether a bootstrap-token Secret has expired at `now` (seconds since the epoch).
pub fn expired(secret: &Secret, now: i64) -> bool {
    if secret.type_.as_deref() != Some(SECRET_TYPE) {
        return false;
    }
    secret
        .data
        .as_ref()
        .and_then(|d| d.get("expiration"))
        .and_then(|v| std::str::from_utf8(&v.0).ok())
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .is_some_and(|exp| exp.as_second() <= now)
}

pub async fn run(client: kube::Client) -> Result<(), super::Error> {
    let api: Api<Secret> = Api::namespaced(client, "kube-system");
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tick.tick().await;
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "token cleaner cannot list secrets");
                continue;
            }
        };
        let now = jiff::Timestamp::now().as_second();
        for s in list.items.iter().filter(|s| expired(s, now)) {
            let name = s.metadata.name.clone().unwrap_or_default();
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(secret = %name, "expired join token deleted"),
                Err(e) => {
                    tracing::debug!(secret = %name, error = %e, "cannot delete an expired join token")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_expired_bootstrap_tokens() {
        let mk = |ty: &str, exp: &str| Secret {
            type_: Some(ty.into()),
            data: Some(
                [(
                    "expiration".to_string(),
                    k8s_openapi::ByteString(exp.as_bytes().to_vec()),
                )]
                .into_iter()
                .collect(),
            ),
            ..Default::default()
        };
        let now = jiff::Timestamp::now().as_second();
        assert!(expired(&mk(SECRET_TYPE, "2000-01-01T00:00:00Z"), now));
        assert!(!expired(&mk(SECRET_TYPE, "2999-01-01T00:00:00Z"), now));
        assert!(!expired(&mk("Opaque", "2000-01-01T00:00:00Z"), now));
        assert!(!expired(&Secret::default(), now));
    }
}
