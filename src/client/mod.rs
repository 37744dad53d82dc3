//! kube-rs clients over mTLS for Rampart's own components and tools.
//!
//! Invariant: every client verifies the API server against an explicit CA bundle (never the
//! system roots, never `insecure-skip-tls-verify`) and authenticates with its own certificate
//! or a bearer token. Components inside the server process use these too, over loopback, so
//! authorization and audit see them exactly as they would see a remote component.

pub mod events;
pub mod leader;
pub mod reflect;

use std::path::Path;

use base64::Engine;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read kubeconfig {path}: {detail}")]
    Kubeconfig { path: String, detail: String },
    #[error("cannot build a client: {0}")]
    Build(String),
}

/// How a client proves who it is.
#[derive(Clone)]
pub enum Credentials {
    /// Client certificate and key, PEM.
    Certificate { cert_pem: String, key_pem: String },
    /// `Authorization: Bearer <token>` (join tokens, service-account tokens).
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    // Keys and tokens never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Certificate { .. } => f.write_str("Certificate(..)"),
            Credentials::Bearer(_) => f.write_str("Bearer(..)"),
        }
    }
}

/// The `kube::Config` for `server` trusting `ca_pem` and authenticating with `creds`.
pub async fn config(
    server: &str,
    ca_pem: &str,
    creds: &Credentials,
) -> Result<kube::Config, Error> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let user = match creds {
        Credentials::Certificate { cert_pem, key_pem } => serde_json::json!({
            "client-certificate-data": b64(cert_pem),
            "client-key-data": b64(key_pem),
        }),
        Credentials::Bearer(token) => serde_json::json!({ "token": token }),
    };
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    });
    let kc: kube::config::Kubeconfig =
        serde_json::from_value(doc).map_err(|e| Error::Build(e.to_string()))?;
    kube_config(kc).await
}

async fn kube_config(kc: kube::config::Kubeconfig) -> Result<kube::Config, Error> {
    let opts = kube::config::KubeConfigOptions::default();
    kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| Error::Build(e.to_string()))
}

/// A client from an explicit server, CA and credentials.
pub async fn build(server: &str, ca_pem: &str, creds: &Credentials) -> Result<kube::Client, Error> {
    let cfg = config(server, ca_pem, creds).await?;
    kube::Client::try_from(cfg).map_err(|e| Error::Build(e.to_string()))
}

/// A client from a kubeconfig file (the admin one, for the CLI tools).
pub async fn from_kubeconfig(path: &Path) -> Result<kube::Client, Error> {
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    let cfg = kube_config(kc).await?;
    kube::Client::try_from(cfg).map_err(|e| Error::Build(e.to_string()))
}
