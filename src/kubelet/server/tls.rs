//! The kubelet API's TLS: served with the node's kubelet-serving certificate
//! (`DATA_DIR/pki/kubelet-serving.{crt,key}`, issued and renewed by the agent) and client
//! certificates verified against the cluster CA bundle (`ca.crt`) with the clientAuth usage
//! (serving certificates under the same root carry serverAuth only, so they are no
//! identity). The files are re-read when they change (renewal, CA rotation): every accept
//! compares their modification times, so a new certificate is used without a restart.
//!
//! A client without a certificate completes the handshake and gets 401 on every request
//! (upstream's kubelet with anonymous auth disabled answers 401, not a TLS alert).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// A built configuration and the modification times of the files it was built from.
type Cached = (Vec<Option<SystemTime>>, Arc<ServerConfig>);

/// The files the kubelet API's TLS is made of.
pub struct Files {
    pki: PathBuf,
    cached: Mutex<Option<Cached>>,
}

impl Files {
    pub fn new(pki: &Path) -> Files {
        Files {
            pki: pki.to_path_buf(),
            cached: Mutex::new(None),
        }
    }

    fn paths(&self) -> [PathBuf; 3] {
        [
            self.pki.join("ca.crt"),
            self.pki.join("kubelet-serving.crt"),
            self.pki.join("kubelet-serving.key"),
        ]
    }

    /// The server configuration for the files as they are now; `Err` while the serving
    /// certificate has not been issued yet.
    pub fn config(&self) -> Result<Arc<ServerConfig>, String> {
        let stamps: Vec<Option<SystemTime>> = self
            .paths()
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect();
        if let Ok(c) = self.cached.lock() {
            if let Some((s, cfg)) = c.as_ref() {
                if *s == stamps {
                    return Ok(cfg.clone());
                }
            }
        }
        let cfg = Arc::new(self.build()?);
        if let Ok(mut c) = self.cached.lock() {
            *c = Some((stamps, cfg.clone()));
        }
        Ok(cfg)
    }

    fn build(&self) -> Result<ServerConfig, String> {
        let [ca, crt, key] = self.paths();
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for c in certs(&read(&ca)?)? {
            roots.add(c).map_err(|e| format!("ca.crt: {e}"))?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("client verifier: {e}"))?;
        let chain = certs(&read(&crt)?)?;
        use rustls::pki_types::pem::PemObject;
        let key = PrivateKeyDer::from_pem_slice(&read(&key)?)
            .map_err(|e| format!("kubelet-serving.key: {e}"))?;
        let mut cfg = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| format!("kubelet-serving certificate: {e}"))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("PEM: {e}"))
}

/// Who a verified client certificate names: CN is the user, O the groups (as upstream's
/// x509 authenticator).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    pub user: String,
    pub groups: Vec<String>,
}

pub fn peer(cert: &CertificateDer<'_>) -> Option<Peer> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|n| !n.is_empty())?
        .to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    groups.push("system:authenticated".into());
    Some(Peer { user, groups })
}
