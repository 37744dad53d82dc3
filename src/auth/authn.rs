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

#[async_trait]
pub trait TokenAuthenticator: Send + Sync {
    /// `None`: not a token of this kind. `Some(Err)`: this kind, but invalid (the message is
    /// safe to return to the client: it never echoes the token).
    async fn authenticate(&self, token: &str) -> Option<Result<UserInfo, String>>;
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
    ) -> Result<UserInfo, String> {
        let cert_error = match conn {
            Ok(id) => {
                let now = jiff::Timestamp::now().as_second();
                if now > id.not_after {
                    return Err("the client certificate has expired".into());
                }
                for c in &self.cert_checks {
                    c.check(id)?;
                }
                return Ok(id.user.clone());
            }
            Err(why) => why.clone(),
        };
        let Some(token) = bearer(headers) else {
            return Err(cert_error);
        };
        for a in &self.tokens {
            if let Some(result) = a.authenticate(token).await {
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
