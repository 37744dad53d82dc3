//! The cluster PKI: a certificate authority, the API server's serving certificate and the admin
//! client certificate, created on first start under `DATA_DIR/pki/` and reused afterwards.
//!
//! Invariants: private keys are ECDSA P-256, created on this host and written 0600 (the
//! directory 0700) before anything else can read them; a file is never half-written (write to a
//! temporary name, fsync, rename). The layout grows with the security model (intermediate
//! signing CAs, per-component identities, rotation) without moving these files:
//!
//! ```text
//! pki/ca.crt, ca.key                 cluster root CA (10 years)
//! pki/apiserver-serving.crt, .key    TLS serving certificate of the API server
//! pki/admin.crt, admin.key           CN=admin, O=system:masters client certificate
//! ```

pub mod csr;
mod files;
mod issue;
pub mod kubeconfig;
pub mod signer_glue;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use issue::{ClientIdentity, ServingNames};

#[derive(Debug, Clone)]
pub struct Config {
    /// `DATA_DIR/pki`.
    pub dir: PathBuf,
    /// DNS names and IPs the serving certificate must cover (beyond the built-in
    /// `kubernetes.default.svc...` names, localhost and 127.0.0.1).
    pub serving: ServingNames,
    /// Lifetime of leaf certificates.
    pub leaf_validity: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid PEM {what}: {detail}")]
    BadPem {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error("{path} has a private key readable by others (mode {mode:o}); expected 0600")]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The PEM material the API server needs, loaded or freshly created.
#[derive(Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub ca_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    pub admin: ClientIdentity,
}

impl std::fmt::Debug for Bundle {
    // Private keys never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Bundle {
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
}

/// Load the PKI from `cfg.dir`, creating whatever is missing.
pub fn bootstrap(cfg: &Config) -> Result<Bundle, Error> {
    files::ensure_private_dir(&cfg.dir)?;
    let ca = issue::load_or_create_ca(&cfg.dir)?;
    let (serving_cert_pem, serving_key_pem) =
        issue::load_or_create_serving(&cfg.dir, &ca, &cfg.serving, cfg.leaf_validity)?;
    let admin = issue::load_or_create_client(
        &cfg.dir,
        "admin",
        "admin",
        &["system:masters"],
        &ca,
        cfg.leaf_validity,
    )?;
    Ok(Bundle {
        dir: cfg.dir.clone(),
        ca_pem: ca.cert_pem.clone(),
        serving_cert_pem,
        serving_key_pem,
        admin,
    })
}

/// Every IP address of this host's interfaces (for serving-certificate SANs).
pub fn local_ips() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(addr) = a.address else { continue };
            let ip = if let Some(v4) = addr.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    ips
}

/// This host's name, if it has a usable one.
pub fn hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
}
