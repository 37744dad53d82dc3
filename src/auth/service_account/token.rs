//! Bound service-account tokens: ES256 JWTs with upstream's claims
//! (`pkg/serviceaccount/claims.go`): `iss`, `sub` = `system:serviceaccount:<ns>:<name>`, `aud`
//! (a list), `exp`, `iat`, `nbf`, `jti`, and the private `kubernetes.io` claim naming the
//! service account and the object the token is bound to.
//!
//! Verification here is the stateless half (signature by a known `kid`, algorithm, issuer,
//! time with 60 s leeway, audience intersecting the API server's); whether the service account
//! and bound object still exist is asked of a [`super::Lookup`].

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::KeySet;
use super::Rejected;

/// Upstream's default `--service-account-issuer` in kubeadm clusters.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Upstream's clock-skew allowance for `exp`/`nbf` (go-jose's `DefaultLeeway`).
const LEEWAY_SECONDS: u64 = 60;

/// `{name, uid}` of a referenced object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` private claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Private {
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Ref>,
    pub serviceaccount: Ref,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: Private,
    pub nbf: i64,
    pub sub: String,
}

/// What a TokenRequest asks for.
#[derive(Debug, Clone)]
pub struct Request {
    pub namespace: String,
    pub service_account: Ref,
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
    pub pod: Option<Ref>,
    pub secret: Option<Ref>,
    pub node: Option<Ref>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// Issues and verifies tokens for one issuer.
#[derive(Debug, Clone)]
pub struct Issuer {
    keys: Arc<KeySet>,
    issuer: String,
    /// The API server's own audiences: a token is accepted if its `aud` names one of them.
    api_audiences: Vec<String>,
    /// `jwks_uri` of the discovery document.
    jwks_uri: String,
}

pub fn subject(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

impl Issuer {
    /// `api_audiences` empty means `[issuer]`, as upstream; `jwks_uri` empty means
    /// `<issuer scheme+host>/openid/v1/jwks`.
    pub fn new(keys: KeySet, issuer: &str, api_audiences: Vec<String>, jwks_uri: &str) -> Self {
        let api_audiences = if api_audiences.is_empty() {
            vec![issuer.to_string()]
        } else {
            api_audiences
        };
        let jwks_uri = if jwks_uri.is_empty() {
            default_jwks_uri(issuer)
        } else {
            jwks_uri.to_string()
        };
        Issuer {
            keys: Arc::new(keys),
            issuer: issuer.to_string(),
            api_audiences,
            jwks_uri,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn api_audiences(&self) -> &[String] {
        &self.api_audiences
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Sign a token; returns it and its expiry (seconds since the epoch).
    pub fn issue(&self, req: &Request) -> Result<(String, i64), Error> {
        let now = jiff::Timestamp::now().as_second();
        let audiences = if req.audiences.is_empty() {
            self.api_audiences.clone()
        } else {
            req.audiences.clone()
        };
        let claims = Claims {
            aud: audiences,
            exp: now + req.expiration_seconds,
            iat: now,
            iss: self.issuer.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: Private {
                namespace: req.namespace.clone(),
                node: req.node.clone(),
                pod: req.pod.clone(),
                secret: req.secret.clone(),
                serviceaccount: req.service_account.clone(),
            },
            nbf: now,
            sub: subject(&req.namespace, &req.service_account.name),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.keys.signing_kid().to_string());
        let token = jsonwebtoken::encode(&header, &claims, self.keys.signing())
            .map_err(|e| Error::Sign(e.to_string()))?;
        Ok((token, claims.exp))
    }

    /// `None` if `token` is not a JWT from this issuer (another authenticator may know it);
    /// otherwise the verified claims or why they are refused (safe to show the client).
    pub fn verify(&self, token: &str) -> Option<Result<Claims, Rejected>> {
        if !self.is_ours(token) {
            return None;
        }
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            Err(_) => return Some(Err(Rejected::Malformed)),
        };
        let mut validation = Validation::new(Algorithm::ES256);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.api_audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Upstream tries every key when the token names none.
        let candidates: Vec<_> = match &header.kid {
            Some(kid) => self.keys.find(kid).into_iter().collect(),
            None => self.keys.public().iter().collect(),
        };
        if candidates.is_empty() {
            return Some(Err(Rejected::UnknownKey));
        }
        let mut last = String::from("invalid signature");
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, key.decoding(), &validation) {
                Ok(data) => {
                    let c = data.claims;
                    if c.sub != subject(&c.kubernetes.namespace, &c.kubernetes.serviceaccount.name)
                    {
                        return Some(Err(Rejected::InconsistentSubject));
                    }
                    return Some(Ok(c));
                }
                Err(e) => last = describe(&e),
            }
        }
        Some(Err(Rejected::Invalid(last)))
    }

    /// A JWT whose unverified payload names our issuer.
    fn is_ours(&self, token: &str) -> bool {
        let mut parts = token.split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')) else {
            return false;
        };
        #[derive(Deserialize)]
        struct Iss {
            iss: Option<String>,
        }
        serde_json::from_slice::<Iss>(&bytes)
            .ok()
            .and_then(|p| p.iss)
            .is_some_and(|iss| iss == self.issuer)
    }

    /// upstream's `/.well-known/openid-configuration`.
    pub fn discovery(&self) -> serde_json::Value {
        serde_json::json!({
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }
}

/// `https://host[:port]/openid/v1/jwks` for issuer `https://host[:port]/anything`.
fn default_jwks_uri(issuer: &str) -> String {
    let (scheme, rest) = issuer.split_once("://").unwrap_or(("https", issuer));
    let host = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{host}/openid/v1/jwks")
}

fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet".into(),
        ErrorKind::InvalidAudience => "the token's audience is not accepted".into(),
        ErrorKind::InvalidIssuer => "the token's issuer is not accepted".into(),
        ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted".into(),
        ErrorKind::InvalidSignature => "invalid signature".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("missing claim {c}"),
        _ => "malformed token".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> Issuer {
        let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Issuer::new(
            KeySet::from_pem(&k.serialize_pem(), "").unwrap(),
            DEFAULT_ISSUER,
            vec![],
            "",
        )
    }

    fn request(aud: &[&str]) -> Request {
        Request {
            namespace: "ns".into(),
            service_account: Ref {
                name: "sa".into(),
                uid: "u1".into(),
            },
            audiences: aud.iter().map(|s| s.to_string()).collect(),
            expiration_seconds: 600,
            pod: None,
            secret: None,
            node: None,
        }
    }

    #[test]
    fn round_trip_and_audience() {
        let i = issuer();
        let (t, _) = i.issue(&request(&[])).unwrap();
        let c = i.verify(&t).unwrap().unwrap();
        assert_eq!(c.sub, "system:serviceaccount:ns:sa");
        assert_eq!(c.aud, vec![DEFAULT_ISSUER.to_string()]);
        let (t, _) = i.issue(&request(&["other"])).unwrap();
        assert!(i.verify(&t).unwrap().is_err());
    }

    #[test]
    fn foreign_tokens_are_not_ours() {
        let i = issuer();
        assert!(i.verify("abc").is_none());
        assert!(i.verify("a.b.c").is_none());
        let (t, _) = issuer().issue(&request(&[])).unwrap();
        // Same issuer name, different key: ours, and refused.
        assert!(i.verify(&t).unwrap().is_err());
    }

    #[test]
    fn jwks_uri_from_issuer() {
        assert_eq!(
            default_jwks_uri("https://example.com:8443/a/b"),
            "https://example.com:8443/openid/v1/jwks"
        );
    }
}
