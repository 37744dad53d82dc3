//! TLS for the API: rustls with TLS 1.3 and 1.2 (modern AEAD suites only, via the ring
//! provider's defaults), ALPN h2 and http/1.1, and client certificates requested from everyone.
//!
//! The handshake accepts any client certificate as long as the client proves it holds the key
//! (the CertificateVerify signature is checked as usual); chain verification against the
//! cluster CA happens per request in `auth::x509`, so an untrusted certificate gets a readable
//! 401 Status rather than a TLS alert, and a client without one can still fetch `/cacerts`.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

use crate::pki::Bundle;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid PEM in the PKI bundle: {0}")]
    Pem(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
}

/// Verifies handshake signatures but defers chain trust to the request layer.
#[derive(Debug)]
struct DeferredTrust {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for DeferredTrust {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
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
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The server config and the verifier requests are authenticated with.
pub struct Tls {
    pub config: Arc<ServerConfig>,
    pub client_verifier: Arc<dyn ClientCertVerifier>,
}

pub fn build(bundle: &Bundle) -> Result<Tls, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle.ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| Error::Pem(e.to_string()))?;
        roots.add(cert)?;
    }
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| Error::Verifier(e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(bundle.serving_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Pem(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(bundle.serving_key_pem.as_bytes())
        .map_err(|e| Error::Pem(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(Arc::new(DeferredTrust {
            inner: client_verifier.clone(),
        }))
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        config: Arc::new(config),
        client_verifier,
    })
}
