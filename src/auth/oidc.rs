//! OpenID Connect ID tokens for human users, as upstream's `--oidc-*` flags
//! (`plugin/pkg/authenticator/token/oidc`).
//!
//! The provider's keys come from `<issuer>/.well-known/openid-configuration` → `jwks_uri`,
//! fetched over HTTPS (the `--oidc-ca-file` bundle or the system roots), cached, and fetched
//! again when a token names an unknown `kid` (at most once per [`REFRESH_INTERVAL`], so junk
//! tokens cannot make us hammer the provider). A token is accepted when its signature (RS256
//! or ES256) verifies, `iss` is the issuer, `aud` contains the client id and it has not
//! expired. Upstream's mapping rules: the user name is the username claim, prefixed with
//! `<issuer>#` unless the claim is `email` or a prefix is given (`-` = none); with the `email`
//! claim an `email_verified` claim, if present, must be true; groups come from the groups
//! claim (a string or a list) with the groups prefix.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http_body_util::{BodyExt, Empty, Limited};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::authn::{self, TokenAuthenticator};
use super::UserInfo;
use crate::tls::client::{client_config, Error as TlsError, Trust};

/// Minimum time between two key fetches triggered by unknown `kid`s.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// Upper bound on a discovery or JWKS document.
const MAX_DOCUMENT: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const LEEWAY_SECONDS: u64 = 60;

#[derive(Debug, Clone)]
pub struct Config {
    pub issuer_url: String,
    pub client_id: String,
    pub username_claim: String,
    /// `None`: upstream's default (see the module docs); `Some("-")`: no prefix.
    pub username_prefix: Option<String>,
    pub groups_claim: Option<String>,
    pub groups_prefix: String,
    /// PEM bundle trusted for the issuer's HTTPS; `None` = system roots.
    pub ca_pem: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid OIDC configuration: {0}")]
    Config(String),
    #[error("cannot fetch {url}: {detail}")]
    Fetch { url: String, detail: String },
}

struct Key {
    kid: Option<String>,
    key: DecodingKey,
}

#[derive(Default)]
struct Cache {
    keys: Arc<Vec<Key>>,
    fetched: Option<Instant>,
}

pub struct Authenticator {
    cfg: Config,
    username_prefix: String,
    tls: Arc<rustls::ClientConfig>,
    cache: tokio::sync::Mutex<Cache>,
}

impl Authenticator {
    pub fn new(cfg: Config) -> Result<Self, Error> {
        let uri: http::Uri = cfg
            .issuer_url
            .parse()
            .map_err(|_| Error::Config("--oidc-issuer-url is not a URL".into()))?;
        if uri.scheme_str() != Some("https") {
            return Err(Error::Config("--oidc-issuer-url must use https".into()));
        }
        if cfg.client_id.is_empty() {
            return Err(Error::Config("--oidc-client-id is required".into()));
        }
        let trust = match &cfg.ca_pem {
            Some(pem) => Trust::Pem(pem.as_bytes()),
            None => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
                Trust::Roots(roots)
            }
        };
        let tls = client_config(trust, None, &[]).map_err(|e| match e {
            TlsError::NoAnchor => Error::Config("--oidc-ca-file holds no certificate".into()),
            e => Error::Config(format!("--oidc-ca-file: {e}")),
        })?;
        let username_prefix = match cfg.username_prefix.as_deref() {
            Some("-") => String::new(),
            Some(p) => p.to_string(),
            None if cfg.username_claim == "email" => String::new(),
            None => format!("{}#", cfg.issuer_url),
        };
        Ok(Authenticator {
            cfg,
            username_prefix,
            tls,
            cache: tokio::sync::Mutex::new(Cache::default()),
        })
    }

    /// GET `url` over HTTPS and parse the JSON body.
    async fn fetch(&self, url: &str) -> Result<Value, Error> {
        let err = |detail: String| Error::Fetch {
            url: url.to_string(),
            detail,
        };
        let uri: http::Uri = url.parse().map_err(|_| err("not a URL".into()))?;
        if uri.scheme_str() != Some("https") {
            return Err(err("only https is allowed".into()));
        }
        let host = uri.host().ok_or_else(|| err("no host".into()))?.to_string();
        let port = uri.port_u16().unwrap_or(443);
        let work = async {
            let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
                .await
                .map_err(|e| err(e.to_string()))?;
            let name =
                rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                    .map_err(|e| err(e.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| err(e.to_string()))?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .map_err(|e| err(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let req = http::Request::get(path)
                .header(
                    http::header::HOST,
                    uri.authority().map(|a| a.as_str()).unwrap_or(""),
                )
                .header(http::header::ACCEPT, "application/json")
                .body(Empty::<bytes::Bytes>::new())
                .map_err(|e| err(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| err(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(err(format!("HTTP {}", resp.status())));
            }
            let body = Limited::new(resp.into_body(), MAX_DOCUMENT)
                .collect()
                .await
                .map_err(|e| err(e.to_string()))?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|e| err(format!("not JSON: {e}")))
        };
        tokio::time::timeout(FETCH_TIMEOUT, work)
            .await
            .map_err(|_| err("timed out".into()))?
    }

    /// Discovery, then the JWKS.
    async fn fetch_keys(&self) -> Result<Vec<Key>, Error> {
        let base = self.cfg.issuer_url.trim_end_matches('/');
        let discovery_url = format!("{base}/.well-known/openid-configuration");
        let doc = self.fetch(&discovery_url).await?;
        if doc["issuer"].as_str() != Some(self.cfg.issuer_url.as_str()) {
            return Err(Error::Fetch {
                url: discovery_url,
                detail: "the discovery document names another issuer".into(),
            });
        }
        let jwks_uri = doc["jwks_uri"].as_str().ok_or_else(|| Error::Fetch {
            url: discovery_url.clone(),
            detail: "no jwks_uri".into(),
        })?;
        let jwks = self.fetch(jwks_uri).await?;
        let keys = jwks["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| {
                // One key of an unsupported type must not hide the others.
                let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(k.clone()).ok()?;
                let key = DecodingKey::from_jwk(&jwk).ok()?;
                Some(Key {
                    kid: jwk.common.key_id.clone(),
                    key,
                })
            })
            .collect();
        Ok(keys)
    }

    /// The cached keys, fetched now if there are none or `force` (rate-limited).
    async fn keys(&self, force: bool) -> Arc<Vec<Key>> {
        let mut cache = self.cache.lock().await;
        let stale = cache
            .fetched
            .is_none_or(|t| t.elapsed() >= REFRESH_INTERVAL);
        if (cache.keys.is_empty() || force) && stale {
            cache.fetched = Some(Instant::now());
            match self.fetch_keys().await {
                Ok(keys) => cache.keys = Arc::new(keys),
                Err(e) => tracing::warn!(error = %e, "cannot refresh the OIDC provider's keys"),
            }
        }
        cache.keys.clone()
    }

    fn is_ours(&self, token: &str) -> bool {
        let mut parts = token.split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|c| c["iss"].as_str() == Some(self.cfg.issuer_url.as_str()))
    }

    fn verify_with(
        &self,
        token: &str,
        alg: Algorithm,
        keys: &[Key],
        kid: Option<&str>,
    ) -> Option<Result<Value, Rejected>> {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.cfg.issuer_url]);
        validation.set_audience(&[&self.cfg.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let mut last = None;
        for k in keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
        {
            match jsonwebtoken::decode::<Value>(token, &k.key, &validation) {
                Ok(data) => return Some(Ok(data.claims)),
                Err(e) => last = Some(describe(&e)),
            }
        }
        last.map(Err)
    }

    fn map_user(&self, claims: &Value) -> Result<UserInfo, Rejected> {
        let claim = &self.cfg.username_claim;
        let name = claims[claim.as_str()]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Rejected::NoUsername(claim.clone()))?;
        if claim == "email" {
            match &claims["email_verified"] {
                Value::Null | Value::Bool(true) => {}
                _ => return Err(Rejected::EmailNotVerified),
            }
        }
        let mut groups = Vec::new();
        if let Some(gc) = &self.cfg.groups_claim {
            match &claims[gc.as_str()] {
                Value::Null => {}
                Value::String(g) => groups.push(g.clone()),
                Value::Array(a) => {
                    for g in a {
                        groups.push(
                            g.as_str()
                                .ok_or_else(|| Rejected::GroupsNotStrings(gc.clone()))?
                                .to_string(),
                        );
                    }
                }
                _ => return Err(Rejected::GroupsWrongType(gc.clone())),
            }
        }
        Ok(UserInfo {
            name: format!("{}{name}", self.username_prefix),
            groups: groups
                .into_iter()
                .map(|g| format!("{}{g}", self.cfg.groups_prefix))
                .collect(),
            ..Default::default()
        }
        .with_authenticated_group())
    }
}

/// Why an ID token is refused; `Display` is the client's 401 text (never the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("oidc: malformed token")]
    Malformed,
    #[error("oidc: the token's algorithm is not accepted")]
    Algorithm,
    #[error("oidc: the token is signed by an unknown key")]
    UnknownKey,
    #[error("oidc: the token has expired")]
    Expired,
    #[error("oidc: the token is not valid yet")]
    NotYetValid,
    #[error("oidc: the token was issued for another client")]
    Audience,
    #[error("oidc: the token's issuer is not accepted")]
    Issuer,
    #[error("oidc: invalid signature")]
    Signature,
    #[error("oidc: missing claim {0}")]
    MissingClaim(String),
    #[error("oidc: malformed or unverifiable token")]
    Unverifiable,
    #[error("oidc: the token has no {0} claim")]
    NoUsername(String),
    #[error("oidc: email not verified")]
    EmailNotVerified,
    #[error("oidc: the {0} claim is not a list of strings")]
    GroupsNotStrings(String),
    #[error("oidc: the {0} claim is not a string or a list")]
    GroupsWrongType(String),
}

fn describe(e: &jsonwebtoken::errors::Error) -> Rejected {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => Rejected::Expired,
        ErrorKind::ImmatureSignature => Rejected::NotYetValid,
        ErrorKind::InvalidAudience => Rejected::Audience,
        ErrorKind::InvalidIssuer => Rejected::Issuer,
        ErrorKind::InvalidSignature => Rejected::Signature,
        ErrorKind::MissingRequiredClaim(c) => Rejected::MissingClaim(c.clone()),
        _ => Rejected::Unverifiable,
    }
}

#[async_trait]
impl TokenAuthenticator for Authenticator {
    async fn authenticate(&self, token: &str) -> Option<Result<UserInfo, authn::Error>> {
        if !self.is_ours(token) {
            return None;
        }
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            Err(_) => return Some(Err(Rejected::Malformed.into())),
        };
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Some(Err(Rejected::Algorithm.into()));
        }
        let kid = header.kid.as_deref();
        let mut keys = self.keys(false).await;
        let known = keys
            .iter()
            .any(|k| kid.is_none() || k.kid.as_deref() == kid);
        if !known {
            keys = self.keys(true).await;
        }
        let claims = match self.verify_with(token, header.alg, &keys, kid) {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Some(Err(e.into())),
            None => return Some(Err(Rejected::UnknownKey.into())),
        };
        Some(self.map_user(&claims).map_err(authn::Error::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(claim: &str, prefix: Option<&str>) -> Authenticator {
        Authenticator::new(Config {
            issuer_url: "https://issuer.example".into(),
            client_id: "rampart".into(),
            username_claim: claim.into(),
            username_prefix: prefix.map(str::to_string),
            groups_claim: Some("groups".into()),
            groups_prefix: "oidc:".into(),
            ca_pem: None,
        })
        .unwrap()
    }

    #[test]
    fn username_prefix_follows_upstream() {
        let claims = serde_json::json!({"sub": "u1", "email": "a@b.c", "groups": ["x", "y"]});
        let u = auth("sub", None).map_user(&claims).unwrap();
        assert_eq!(u.name, "https://issuer.example#u1");
        assert_eq!(u.groups, vec!["oidc:x", "oidc:y", "system:authenticated"]);
        assert_eq!(auth("email", None).map_user(&claims).unwrap().name, "a@b.c");
        assert_eq!(auth("sub", Some("-")).map_user(&claims).unwrap().name, "u1");
        assert_eq!(
            auth("sub", Some("o:")).map_user(&claims).unwrap().name,
            "o:u1"
        );
    }

    #[test]
    fn unverified_email_is_refused() {
        let claims = serde_json::json!({"email": "a@b.c", "email_verified": false});
        assert!(auth("email", None).map_user(&claims).is_err());
    }

    #[test]
    fn only_https_issuers() {
        let mut cfg = auth("sub", None).cfg.clone();
        cfg.issuer_url = "http://issuer.example".into();
        assert!(Authenticator::new(cfg).is_err());
    }
}
