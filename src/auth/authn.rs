//! Authentication of one request: the connection's client certificate first, then bearer
//! tokens, as upstream's union authenticator (the first authenticator that recognises the
//! credential decides; a recognised but bad credential is a 401, never a fall-through to a
//! weaker one).
//!
//! Token authenticators (join tokens, service-account JWTs, OIDC) plug in through
//! [`TokenAuthenticator`]; each says `None` for tokens that are not its kind.

use std::sync::Arc;

use async_trait::async_trait;

use super::UserInfo;

/// What the TLS layer learned about the client's certificate, once per connection.
#[derive(Debug, Clone)]
pub struct CertIdentity {
    pub user: UserInfo,
    /// Serial number, big-endian bytes as in the certificate.
    pub serial: Vec<u8>,
    /// The issuer's distinguished name, raw DER (which signing CA issued it).
    pub issuer: Vec<u8>,
    /// Validity, seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
}

/// The connection's certificate identity, or why there is none.
pub type ConnIdentity = Result<CertIdentity, String>;

/// Why a request was not authenticated. The message is safe to return to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    /// The client must wait this long before trying this credential again (429 with
    /// Retry-After rather than 401).
    pub retry_after: Option<std::time::Duration>,
}

impl From<String> for Refusal {
    fn from(message: String) -> Self {
        Refusal {
            message,
            retry_after: None,
        }
    }
}

impl From<&str> for Refusal {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[async_trait]
pub trait TokenAuthenticator: Send + Sync {
    /// `None`: not a token of this kind. `Some(Err)`: this kind, but invalid (the message is
    /// safe to return to the client: it never echoes the token).
    async fn authenticate(&self, token: &str) -> Option<Result<UserInfo, String>>;

    /// As [`TokenAuthenticator::authenticate`], for authenticators that can also ask the
    /// client to back off (join tokens after repeated failures).
    async fn authenticate_or_throttle(&self, token: &str) -> Option<Result<UserInfo, Refusal>> {
        self.authenticate(token)
            .await
            .map(|r| r.map_err(Refusal::from))
    }
}

/// Per-request checks on a certificate identity that can change while a connection is open
/// (revocation, expiry).
pub trait CertificateCheck: Send + Sync {
    fn check(&self, id: &CertIdentity) -> Result<(), String>;
}

#[derive(Default, Clone)]
pub struct Authenticator {
    pub tokens: Vec<Arc<dyn TokenAuthenticator>>,
    pub cert_checks: Vec<Arc<dyn CertificateCheck>>,
}

impl Authenticator {
    pub async fn authenticate(
        &self,
        conn: &ConnIdentity,
        headers: &http::HeaderMap,
    ) -> Result<UserInfo, Refusal> {
        let cert_error = match conn {
            Ok(id) => {
                let now = jiff::Timestamp::now().as_second();
                if now > id.not_after {
                    return Err("the client certificate has expired".into());
                }
                for c in &self.cert_checks {
                    c.check(id).map_err(Refusal::from)?;
                }
                return Ok(id.user.clone());
            }
            Err(why) => why.clone(),
        };
        let Some(token) = bearer(headers) else {
            return Err(cert_error.into());
        };
        for a in &self.tokens {
            if let Some(result) = a.authenticate_or_throttle(token).await {
                return result;
            }
        }
        Err("the bearer token was not recognised".into())
    }
}

fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
