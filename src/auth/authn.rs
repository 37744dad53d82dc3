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
pub type ConnIdentity = Result<CertIdentity, super::x509::Error>;

/// Why a request was not authenticated. `Display` is what the client reads after
/// `Unauthorized: ` in the 401 body: it names the credential's kind and the reason, never
/// the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The connection has no client certificate the cluster trusts (and no bearer token).
    #[error(transparent)]
    Certificate(#[from] super::x509::Error),
    #[error("the client certificate has expired")]
    CertificateExpired,
    #[error("the client certificate has been revoked")]
    CertificateRevoked,
    /// A service-account JWT that is malformed, badly signed, expired, for another audience,
    /// or whose bound objects are gone.
    #[error(transparent)]
    ServiceAccountToken(#[from] super::service_account::Rejected),
    /// A join (bootstrap) token that is unknown, expired or wrong.
    #[error(transparent)]
    JoinToken(#[from] super::bootstrap::Rejected),
    /// An OIDC ID token the configured issuer did not vouch for.
    #[error(transparent)]
    OidcToken(#[from] super::oidc::Rejected),
    /// Too many failures with one join-token id: 429 with `Retry-After`, not 401.
    #[error(
        "too many failed attempts with join token {token_id}; retry after {} s",
        retry_after.as_secs().max(1)
    )]
    Throttled {
        token_id: String,
        retry_after: std::time::Duration,
    },
    #[error("the bearer token was not recognised")]
    UnknownToken,
}

impl Error {
    /// How long the client must wait before trying this credential again, when it must.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

#[async_trait]
pub trait TokenAuthenticator: Send + Sync {
    /// `None`: not a token of this kind. `Some(Err)`: this kind, but invalid (the error is
    /// safe to return to the client: it never echoes the token).
    async fn authenticate(&self, token: &str) -> Option<Result<UserInfo, Error>>;
}

/// Per-request checks on a certificate identity that can change while a connection is open
/// (revocation, expiry).
pub trait CertificateCheck: Send + Sync {
    fn check(&self, id: &CertIdentity) -> Result<(), Error>;
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
    ) -> Result<UserInfo, Error> {
        let cert_error = match conn {
            Ok(id) => {
                let now = jiff::Timestamp::now().as_second();
                if now > id.not_after {
                    return Err(Error::CertificateExpired);
                }
                for c in &self.cert_checks {
                    c.check(id)?;
                }
                return Ok(id.user.clone());
            }
            Err(why) => why.clone(),
        };
        let Some(token) = bearer(headers) else {
            return Err(cert_error.into());
        };
        for a in &self.tokens {
            if let Some(result) = a.authenticate(token).await {
                return result;
            }
        }
        Err(Error::UnknownToken)
    }
}

fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
