//! The one rustls client configuration builder: every outgoing TLS connection Rampart makes
//! (the aggregator to extension API servers, the API server to a kubelet, a joining server
//! fetching `/cacerts`, the kubelet pulling images) is configured here, so the crypto provider (`ring`), the protocol
//! versions (TLS 1.3 and 1.2), the trust decision and the "skip verification" verifier exist
//! once.
//!
//! Invariants: a trust anchor that does not parse is an error, never silently dropped (except
//! the host's own store, which is best effort as everywhere); skipping verification still
//! checks the handshake signatures, so the session is at least with the holder of the key the
//! server showed. Error texts never include key material.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the trust anchors are not PEM certificates: {0}")]
    AnchorPem(String),
    #[error("a trust anchor is unusable: {0}")]
    Anchor(String),
    #[error("the trust anchors hold no certificate")]
    NoAnchor,
    #[error("the client certificate is not PEM: {0}")]
    ClientCertPem(String),
    #[error("the client key is not a PEM private key")]
    ClientKeyPem,
    #[error("TLS client configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Whom the client trusts to be the server.
pub enum Trust<'a> {
    /// Certificates signed by one of these PEM CA certificates.
    Pem(&'a [u8]),
    /// A prepared root store (the host's store plus configured CAs, say).
    Roots(RootCertStore),
    /// Any certificate (`insecureSkipTLSVerify`; the join's first contact, which pins the
    /// CA by hash afterwards).
    AnyServer,
}

/// The client's own certificate chain and key, in PEM.
pub struct ClientIdentity<'a> {
    pub cert_pem: &'a [u8],
    pub key_pem: &'a [u8],
}

/// Parse PEM certificates into a root store; an empty bundle is an error.
pub fn roots_from_pem(pem: &[u8], roots: &mut RootCertStore) -> Result<usize, Error> {
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(pem) {
        let c = c.map_err(|e| Error::AnchorPem(e.to_string()))?;
        roots.add(c).map_err(|e| Error::Anchor(e.to_string()))?;
        n += 1;
    }
    if n == 0 {
        return Err(Error::NoAnchor);
    }
    Ok(n)
}

/// A client configuration: `trust` decides the server, `identity` (if any) is presented,
/// `alpn` offered in order.
pub fn client_config(
    trust: Trust<'_>,
    identity: Option<ClientIdentity<'_>>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match trust {
        Trust::AnyServer => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider))),
        Trust::Roots(roots) => builder.with_root_certificates(roots),
        Trust::Pem(pem) => {
            let mut roots = RootCertStore::empty();
            roots_from_pem(pem, &mut roots)?;
            builder.with_root_certificates(roots)
        }
    };
    let mut cfg = match identity {
        Some(id) => {
            let chain = CertificateDer::pem_slice_iter(id.cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::ClientCertPem(e.to_string()))?;
            // The key's content never enters a message.
            let key = PrivateKeyDer::from_pem_slice(id.key_pem).map_err(|_| Error::ClientKeyPem)?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// Accepts any server certificate; still verifies the handshake signatures with it.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_anchors_and_keys_are_errors_that_name_no_key() {
        assert!(matches!(
            client_config(Trust::Pem(b"not pem"), None, &[]),
            Err(Error::NoAnchor)
        ));
        let err = client_config(
            Trust::AnyServer,
            Some(ClientIdentity {
                cert_pem: b"",
                key_pem: b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
            }),
            &[],
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(!err.is_empty() && !err.contains("c2VjcmV0"), "{err}");
        let cfg = client_config(Trust::AnyServer, None, &[b"h2", b"http/1.1"]).unwrap();
        assert_eq!(
            cfg.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
