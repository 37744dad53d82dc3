//! `registries.yaml`, in k3s's format (k3s `pkg/agent/templates` and containerd's
//! `hosts.toml` semantics): which endpoints serve a registry and with which credentials and
//! TLS settings.
//!
//! ```yaml
//! mirrors:
//!   docker.io:                       # a registry host, or "*" for every registry
//!     endpoint: ["https://mirror.example:5000", "http://10.0.0.1:5000"]
//!     rewrite: {"^library/(.*)": "mirrored/$1"}
//! configs:
//!   "mirror.example:5000":           # an endpoint host
//!     auth: {username: u, password: p}   # or auth: base64(u:p), or identitytoken
//!     tls: {ca_file: ca.pem, cert_file: c.pem, key_file: k.pem, insecure_skip_verify: false}
//! ```
//!
//! Behaviour copied from k3s: a registry's mirror endpoints are tried in order, then its
//! default endpoint (`registry-1.docker.io` for `docker.io`, else the registry host itself,
//! over HTTPS); `rewrite` rules apply to the repository name on the mirror endpoints only;
//! `"*"` applies to registries without their own entry. Plain HTTP is used only for an
//! endpoint written with `http://`.
//!
//! Invariants: a missing file is the defaults; anything else unreadable or invalid is one
//! error naming the file and the problem — never a credential. `Auth`'s `Debug` hides its
//! secrets, so no log line can print them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("registry config {path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    #[serde(default)]
    pub configs: BTreeMap<String, HostConfig>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    #[serde(default)]
    pub endpoint: Vec<String>,
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    #[serde(default)]
    pub auth: Option<Auth>,
    #[serde(default)]
    pub tls: Option<Tls>,
}

/// Credentials for one registry host (from `registries.yaml` or a pull secret).
#[derive(Clone, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// base64 of `username:password` (docker's config.json form).
    #[serde(default)]
    pub auth: String,
    /// An OAuth2 refresh token (docker's `identitytoken`).
    #[serde(default)]
    pub identitytoken: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets, whatever prints this.
        f.debug_struct("Auth")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// `(username, password)`, decoding `auth` when the fields are not given.
    pub fn basic(&self) -> Option<(String, String)> {
        if !self.username.is_empty() || !self.password.is_empty() {
            return Some((self.username.clone(), self.password.clone()));
        }
        if self.auth.is_empty() {
            return None;
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(self.auth.trim())
            .ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        Some((u.to_string(), p.to_string()))
    }

    pub fn is_empty(&self) -> bool {
        self.basic().is_none() && self.identitytoken.is_empty()
    }
}

#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// A loaded, validated configuration.
#[derive(Debug, Default, Clone)]
pub struct Registries {
    file: File,
    rewrites: BTreeMap<String, Vec<(regex::Regex, String)>>,
}

/// One place to try a pull from.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// `https://host:port` or `http://host:port`, with an optional path prefix, no `/v2`.
    pub base: String,
    /// `host[:port]`, the key into `configs`.
    pub host: String,
    /// The repository name on this endpoint (after `rewrite`).
    pub repository: String,
    pub tls: Option<Tls>,
    pub auth: Option<Auth>,
}

impl Registries {
    /// Read `path`; a missing file is the defaults.
    pub fn load(path: &Path) -> Result<Registries, Error> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(Error::Invalid {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                })
            }
        };
        Self::parse(&text).map_err(|detail| Error::Invalid {
            path: path.to_path_buf(),
            detail,
        })
    }

    /// Parse and validate the YAML text (the error is one line, without any value from
    /// `auth`, since serde's messages name fields and positions, not values).
    pub fn parse(text: &str) -> Result<Registries, String> {
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| one_line(&e.to_string()))?
        };
        let mut rewrites = BTreeMap::new();
        for (reg, m) in &file.mirrors {
            let mut rules = Vec::new();
            for (pat, repl) in &m.rewrite {
                let re = regex::Regex::new(pat).map_err(|e| {
                    format!(
                        "mirrors.{reg}.rewrite: invalid regex {pat:?}: {}",
                        one_line(&e.to_string())
                    )
                })?;
                rules.push((re, repl.clone()));
            }
            for e in &m.endpoint {
                parse_endpoint(e).map_err(|d| format!("mirrors.{reg}.endpoint: {d}"))?;
            }
            rewrites.insert(reg.clone(), rules);
        }
        for (host, c) in &file.configs {
            if let Some(t) = &c.tls {
                if t.cert_file.is_some() != t.key_file.is_some() {
                    return Err(format!(
                        "configs.{host}.tls: cert_file and key_file go together"
                    ));
                }
            }
        }
        Ok(Registries { file, rewrites })
    }

    /// The endpoints to try for `registry` (a host as in a normalised reference, e.g.
    /// `docker.io`) and `repository` (`library/busybox`), in order.
    pub fn endpoints(&self, registry: &str, repository: &str) -> Vec<Endpoint> {
        let key = if self.file.mirrors.contains_key(registry) {
            Some(registry)
        } else if self.file.mirrors.contains_key("*") {
            Some("*")
        } else {
            None
        };
        let mut out = Vec::new();
        if let Some(key) = key {
            let rules = self.rewrites.get(key).map(Vec::as_slice).unwrap_or(&[]);
            let repo = rewrite(rules, repository);
            for e in &self.file.mirrors[key].endpoint {
                if let Ok((base, host)) = parse_endpoint(e) {
                    let ep = self.endpoint(base, host, repo.clone());
                    if !out.contains(&ep) {
                        out.push(ep);
                    }
                }
            }
        }
        let default_host = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let mut default = self.endpoint(
            format!("https://{default_host}"),
            default_host.to_string(),
            repository.to_string(),
        );
        // Credentials configured for the registry's own name apply to its default endpoint.
        if default.auth.is_none() || default.tls.is_none() {
            if let Some(c) = self.file.configs.get(registry) {
                default.auth = default.auth.or_else(|| c.auth.clone());
                default.tls = default.tls.or_else(|| c.tls.clone());
            }
        }
        if !out.iter().any(|e| e.base == default.base) {
            out.push(default);
        }
        out
    }

    fn endpoint(&self, base: String, host: String, repository: String) -> Endpoint {
        let c = self.file.configs.get(&host);
        Endpoint {
            base,
            repository,
            tls: c.and_then(|c| c.tls.clone()),
            auth: c.and_then(|c| c.auth.clone()).filter(|a| !a.is_empty()),
            host,
        }
    }
}

fn rewrite(rules: &[(regex::Regex, String)], repository: &str) -> String {
    for (re, repl) in rules {
        if re.is_match(repository) {
            return re.replace(repository, repl.as_str()).into_owned();
        }
    }
    repository.to_string()
}

/// `https://host:port/path` → (`https://host:port/path` without a trailing `/v2`, `host:port`).
/// A bare `host[:port]` means HTTPS, as k3s.
fn parse_endpoint(e: &str) -> Result<(String, String), String> {
    let e = e.trim();
    let with_scheme = if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else if e.contains("://") {
        return Err(format!("{e:?}: only http:// and https:// endpoints"));
    } else {
        format!("https://{e}")
    };
    let uri: http::Uri = with_scheme
        .parse()
        .map_err(|_| format!("{e:?} is not a URL"))?;
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .filter(|h| !h.is_empty() && !h.contains('@'))
        .ok_or_else(|| format!("{e:?} has no host (or has user info)"))?;
    let path = uri.path().trim_end_matches('/');
    let path = path.strip_suffix("/v2").unwrap_or(path);
    let scheme = uri.scheme_str().unwrap_or("https");
    Ok((format!("{scheme}://{host}{path}"), host))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_rewrite_and_defaults() {
        let r = Registries::parse(
            r#"
mirrors:
  docker.io:
    endpoint: ["http://127.0.0.1:5000", "mirror.example:5443/v2"]
    rewrite:
      "^library/(.*)": "mirrored/$1"
configs:
  "127.0.0.1:5000":
    auth: {username: u, password: p}
  "registry-1.docker.io":
    auth: {auth: "dTpw"}
"#,
        )
        .unwrap();
        let eps = r.endpoints("docker.io", "library/busybox");
        assert_eq!(eps.len(), 3);
        assert_eq!(eps[0].base, "http://127.0.0.1:5000");
        assert_eq!(eps[0].repository, "mirrored/busybox");
        assert_eq!(
            eps[0].auth.as_ref().and_then(Auth::basic),
            Some(("u".into(), "p".into()))
        );
        assert_eq!(eps[1].base, "https://mirror.example:5443");
        assert_eq!(eps[2].base, "https://registry-1.docker.io");
        assert_eq!(eps[2].repository, "library/busybox");
        assert_eq!(
            eps[2].auth.as_ref().and_then(Auth::basic),
            Some(("u".into(), "p".into()))
        );
        let other = r.endpoints("quay.io", "a/b");
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].base, "https://quay.io");
        assert!(format!("{:?}", eps[0].auth).find("\"p\"").is_none());
    }

    #[test]
    fn wildcard_and_errors() {
        let r = Registries::parse("mirrors:\n  \"*\":\n    endpoint: [\"http://m:1\"]\n").unwrap();
        assert_eq!(r.endpoints("quay.io", "x")[0].base, "http://m:1");
        assert!(Registries::parse("mirrors: [").is_err());
        assert!(Registries::parse("mirrors:\n  a:\n    rewrite: {\"(\": x}\n").is_err());
        assert!(Registries::parse("mirrors:\n  a:\n    endpoint: [\"ftp://x\"]\n").is_err());
        assert!(Registries::parse("bogus: 1\n").is_err());
        assert!(Registries::parse("").is_ok());
        let e = Registries::parse("configs:\n  h:\n    auth: {password: sekrit, nope: 1}\n")
            .unwrap_err();
        assert!(!e.contains("sekrit") && !e.contains('\n'), "{e}");
    }
}
