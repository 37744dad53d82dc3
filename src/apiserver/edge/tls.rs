//! TLS for the API: rustls with TLS 1.3 and 1.2 (modern AEAD suites only, via the ring
//! provider's defaults), ALPN h2 and http/1.1, and client certificates requested from everyone.
//!
//! Certificates follow the live PKI ([`crate::pki::Authority`]): the serving certificate and
//! the client trust anchors are rebuilt when the PKI's generation changes, so renewal and CA
//! rotation need no restart and existing connections (and their watches) stay up.
//!
//! The handshake accepts any client certificate as long as the client proves it holds the key
//! (the CertificateVerify signature is checked as usual); chain verification against the
//! client-issuing CA (and its predecessor during a CA rotation; never the root, the server CA
//! or the kubelet-serving CA) happens in `auth::x509` (per connection, and again whenever the PKI changes), so
//! an untrusted certificate gets a readable 401 Status rather than a TLS alert, and a client
//! without one can still fetch `/cacerts`.

use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

use crate::pki::Authority;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid PEM in the PKI: {0}")]
    Pem(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
    #[error("the PKI has no {0} certificate")]
    Missing(&'static str),
}

/// Verifies handshake signatures but defers chain trust to the request layer.
#[derive(Debug)]
struct DeferredTrust {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for DeferredTrust {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: they would go stale across CA rotations, and clients send their one
        // certificate anyway.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What requests are authenticated against, for one PKI generation.
#[derive(Clone)]
pub struct ClientTrust {
    pub generation: u64,
    pub verifier: Arc<dyn ClientCertVerifier>,
    /// Every signing CA's certificate, to complete chains sent without their intermediate.
    pub intermediates: Arc<Vec<CertificateDer<'static>>>,
}

pub struct Tls {
    pub config: Arc<ServerConfig>,
    authority: Arc<Authority>,
    provider: Arc<CryptoProvider>,
    trust: RwLock<ClientTrust>,
}

fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Pem(e.to_string()))
}

fn client_trust(
    authority: &Authority,
    provider: &Arc<CryptoProvider>,
) -> Result<ClientTrust, Error> {
    let m = authority.current();
    // Anchored at the client-issuing CAs, not the root: a certificate signed by the server CA
    // or the kubelet-serving CA (or by anything else under the root) is no identity.
    let mut roots = RootCertStore::empty();
    for cert in pem_certs(&m.client_issuers_pem)? {
        roots.add(cert)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::Verifier(e.to_string()))?;
    Ok(ClientTrust {
        generation: m.generation,
        verifier,
        intermediates: Arc::new(pem_certs(&m.intermediates_pem)?),
    })
}

fn serving_key(authority: &Authority, provider: &CryptoProvider) -> Result<CertifiedKey, Error> {
    let m = authority.current();
    let leaf = m
        .leaf("apiserver-serving")
        .ok_or(Error::Missing("apiserver-serving"))?;
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())
        .map_err(|e| Error::Pem(e.to_string()))?;
    let key = provider.key_provider.load_private_key(key)?;
    Ok(CertifiedKey::new(pem_certs(&leaf.chain_pem)?, key))
}

/// Hands rustls the serving certificate of the current PKI generation.
#[derive(Debug)]
struct Resolver {
    authority: Arc<Authority>,
    provider: Arc<CryptoProvider>,
    cached: RwLock<(u64, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let generation = self.authority.current().generation;
        if let Ok(c) = self.cached.read() {
            if c.0 == generation {
                return Some(c.1.clone());
            }
        }
        match serving_key(&self.authority, &self.provider) {
            Ok(key) => {
                let key = Arc::new(key);
                if let Ok(mut c) = self.cached.write() {
                    *c = (generation, key.clone());
                }
                Some(key)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot load the renewed serving certificate; keeping the previous one");
                self.cached.read().ok().map(|c| c.1.clone())
            }
        }
    }
}

impl Tls {
    pub fn build(authority: Arc<Authority>) -> Result<Tls, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let trust = client_trust(&authority, &provider)?;
        let first = Arc::new(serving_key(&authority, &provider)?);
        let resolver = Resolver {
            authority: authority.clone(),
            provider: provider.clone(),
            cached: RwLock::new((trust.generation, first)),
        };
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(Arc::new(DeferredTrust {
                provider: provider.clone(),
            }))
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            config: Arc::new(config),
            authority,
            provider,
            trust: RwLock::new(trust),
        })
    }

    /// The client trust of the current PKI generation.
    pub fn client_trust(&self) -> ClientTrust {
        let generation = self.authority.current().generation;
        if let Ok(t) = self.trust.read() {
            if t.generation == generation {
                return t.clone();
            }
        }
        match client_trust(&self.authority, &self.provider) {
            Ok(t) => {
                if let Ok(mut w) = self.trust.write() {
                    *w = t.clone();
                }
                t
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot load the renewed client trust; keeping the previous one");
                match self.trust.read() {
                    Ok(t) => t.clone(),
                    Err(p) => p.into_inner().clone(),
                }
            }
        }
    }

    /// The trust bundle served at `/cacerts`.
    pub fn bundle_pem(&self) -> String {
        self.authority.current().bundle_pem.clone()
    }

    pub fn authority(&self) -> &Arc<Authority> {
        &self.authority
    }
}
