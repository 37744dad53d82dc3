//! The OCI distribution API, the pull half (`GET /v2/<name>/manifests/<ref>` and
//! `/blobs/<digest>`), with the registry authentication dance docker and containerd do:
//! a 401 with `WWW-Authenticate: Bearer realm=…,service=…,scope=…` → a token from the realm
//! (with basic credentials, or an `identitytoken` as OAuth2 refresh token), then the request
//! again with `Authorization: Bearer`; `WWW-Authenticate: Basic` → basic credentials.
//! Redirects (blob stores hand out signed URLs) are followed up to 5 times; the
//! `Authorization` header is not sent to another host.
//!
//! Invariant: no credential or token appears in an error; errors say which URL (without
//! its query) and what the registry answered.

use std::sync::Arc;

use base64::Engine;
use hyper::body::Incoming;

use super::registries::Auth;
use super::transport::{self, display_url};
use super::PullError;

const MAX_REDIRECTS: usize = 5;
const MAX_TOKEN_RESPONSE: usize = 1 << 20;

/// Requests to one repository on one endpoint with at most one credential.
pub struct Session {
    tls: Arc<rustls::ClientConfig>,
    base: String,
    repository: String,
    auth: Option<Auth>,
    /// `Authorization` value learnt from a challenge (reused for the rest of the pull).
    authorization: Option<String>,
}

impl Session {
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        base: &str,
        repository: &str,
        auth: Option<Auth>,
    ) -> Session {
        Session {
            tls,
            base: base.trim_end_matches('/').to_string(),
            repository: repository.to_string(),
            auth,
            authorization: None,
        }
    }

    pub fn url(&self, kind: &str, reference: &str) -> String {
        format!("{}/v2/{}/{kind}/{reference}", self.base, self.repository)
    }

    /// GET `/v2/<repo>/<kind>/<reference>`, authenticating as challenged; a success response.
    pub async fn get(
        &mut self,
        kind: &str,
        reference: &str,
        accept: &[&str],
    ) -> Result<http::Response<Incoming>, PullError> {
        let url = self.url(kind, reference);
        let mut challenged = false;
        loop {
            let resp = self.get_following(&url, accept).await?;
            let status = resp.status();
            if status == http::StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenge = resp
                    .headers()
                    .get(http::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                self.answer(&challenge, &url).await?;
                continue;
            }
            if status.is_success() {
                return Ok(resp);
            }
            let mut resp = resp;
            let body = transport::read_limited(resp.body_mut(), &url, 64 << 10)
                .await
                .unwrap_or_default();
            let detail = registry_message(&body).unwrap_or_else(|| status.to_string());
            return Err(match status {
                http::StatusCode::NOT_FOUND => {
                    PullError::NotFound(format!("{}: not found ({detail})", display_url(&url)))
                }
                http::StatusCode::UNAUTHORIZED | http::StatusCode::FORBIDDEN => {
                    PullError::Unauthorized(format!(
                        "{}: {} ({detail})",
                        display_url(&url),
                        if self.auth.is_some() {
                            "the registry refused the credentials"
                        } else {
                            "the registry requires credentials"
                        }
                    ))
                }
                _ => {
                    PullError::Transport(format!("{}: HTTP {status} ({detail})", display_url(&url)))
                }
            });
        }
    }

    async fn get_following(
        &self,
        url: &str,
        accept: &[&str],
    ) -> Result<http::Response<Incoming>, PullError> {
        let mut url = url.to_string();
        let origin = authority(&url);
        for _ in 0..=MAX_REDIRECTS {
            let mut headers = Vec::new();
            if !accept.is_empty() {
                headers.push((http::header::ACCEPT, accept.join(", ")));
            }
            if let Some(a) = &self.authorization {
                if authority(&url) == origin {
                    headers.push((http::header::AUTHORIZATION, a.clone()));
                }
            }
            let resp = transport::send(&self.tls, http::Method::GET, &url, &headers, None)
                .await
                .map_err(|e| PullError::Transport(e.to_string()))?;
            if resp.status().is_redirection() {
                let loc = resp
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        PullError::Transport(format!(
                            "{}: redirect without a Location",
                            display_url(&url)
                        ))
                    })?;
                url = resolve(&url, loc);
                continue;
            }
            return Ok(resp);
        }
        Err(PullError::Transport(format!(
            "{}: more than {MAX_REDIRECTS} redirects",
            display_url(&url)
        )))
    }

    /// Answer a 401 challenge: learn the `Authorization` to send from now on.
    async fn answer(&mut self, challenge: &str, url: &str) -> Result<(), PullError> {
        let (scheme, params) = parse_challenge(challenge);
        if scheme.eq_ignore_ascii_case("basic") {
            let Some((u, p)) = self.auth.as_ref().and_then(Auth::basic) else {
                return Err(PullError::Unauthorized(format!(
                    "{}: the registry requires credentials",
                    display_url(url)
                )));
            };
            self.authorization = Some(basic(&u, &p));
            return Ok(());
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(PullError::Unauthorized(format!(
                "{}: unsupported authentication challenge {scheme:?}",
                display_url(url)
            )));
        }
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone());
        let Some(realm) = realm else {
            return Err(PullError::Unauthorized(format!(
                "{}: bearer challenge without a realm",
                display_url(url)
            )));
        };
        let service = params
            .iter()
            .find(|(k, _)| k == "service")
            .map(|(_, v)| v.clone());
        let scope = params
            .iter()
            .find(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        let token = self.token(&realm, service.as_deref(), &scope).await?;
        self.authorization = Some(format!("Bearer {token}"));
        Ok(())
    }

    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, PullError> {
        let refused = |detail: String| {
            PullError::Unauthorized(format!("token endpoint {}: {detail}", display_url(realm)))
        };
        let refresh = self
            .auth
            .as_ref()
            .map(|a| a.identitytoken.clone())
            .filter(|t| !t.is_empty());
        let resp = if let Some(refresh) = refresh {
            let body = {
                let mut form = form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token");
                if let Some(s) = service {
                    form.append_pair("service", s);
                }
                form.append_pair("scope", scope);
                form.append_pair("client_id", "rampart");
                form.append_pair("refresh_token", &refresh);
                form.finish().into_bytes()
            };
            let headers = [(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded".to_string(),
            )];
            transport::send(&self.tls, http::Method::POST, realm, &headers, Some(body)).await
        } else {
            let query = {
                let mut q = form_urlencoded::Serializer::new(String::new());
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                q.append_pair("scope", scope);
                q.finish()
            };
            let sep = if realm.contains('?') { '&' } else { '?' };
            let url = format!("{realm}{sep}{query}");
            let mut headers = Vec::new();
            if let Some((u, p)) = self.auth.as_ref().and_then(Auth::basic) {
                headers.push((http::header::AUTHORIZATION, basic(&u, &p)));
            }
            transport::send(&self.tls, http::Method::GET, &url, &headers, None).await
        };
        let mut resp = resp.map_err(|e| PullError::Transport(e.to_string()))?;
        let status = resp.status();
        let body = transport::read_limited(resp.body_mut(), realm, MAX_TOKEN_RESPONSE)
            .await
            .map_err(|e| PullError::Transport(e.to_string()))?;
        if !status.is_success() {
            return Err(refused(if self.auth.is_some() {
                format!("HTTP {status}: the credentials were refused")
            } else {
                format!("HTTP {status}: the registry requires credentials")
            }));
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| refused("the token response is not JSON".into()))?;
        v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| refused("the token response holds no token".into()))
    }
}

fn basic(u: &str, p: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
    )
}

fn authority(url: &str) -> String {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().to_string()))
        .unwrap_or_default()
}

/// A Location, absolute or relative to `base`.
fn resolve(base: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return loc.to_string();
    }
    let Ok(u) = base.parse::<http::Uri>() else {
        return loc.to_string();
    };
    let origin = format!(
        "{}://{}",
        u.scheme_str().unwrap_or("https"),
        u.authority().map(|a| a.as_str()).unwrap_or_default()
    );
    if loc.starts_with('/') {
        format!("{origin}{loc}")
    } else {
        let dir = u.path().rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        format!("{origin}{dir}/{loc}")
    }
}

/// `Bearer realm="x",service="y"` → ("Bearer", [("realm","x"),("service","y")]); quoted
/// values may hold commas (`scope="repository:a:pull,push"`).
pub fn parse_challenge(h: &str) -> (String, Vec<(String, String)>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n)
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                val.push(*c);
                chars.next();
            }
            val = val.trim().to_string();
        }
        params.push((key, val));
    }
    (scheme.to_string(), params)
}

/// The first `errors[].message` of a registry's JSON error body.
fn registry_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let e = v["errors"].as_array()?.first()?;
    let msg = e["message"].as_str().unwrap_or_default();
    let code = e["code"].as_str().unwrap_or_default();
    let s = format!("{code} {msg}").trim().to_string();
    (!s.is_empty()).then(|| s.chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull,push".into()));
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(s, "Basic");
        assert_eq!(p[0].1, "Registry Realm");
        assert_eq!(parse_challenge("").1.len(), 0);
    }

    #[test]
    fn redirects() {
        assert_eq!(resolve("https://a/v2/x/blobs/s", "/b/c"), "https://a/b/c");
        assert_eq!(resolve("https://a/v2/x", "http://z/q"), "http://z/q");
        assert_eq!(resolve("https://a/v2/x", "y"), "https://a/v2/y");
    }
}
