//! X.509 client-certificate authentication, as upstream's `x509.CommonNameUserConversion`:
//! the subject CN is the user name, each O is a group.
//!
//! The TLS layer accepts any client certificate whose holder proves possession of its key; the
//! chain is verified here, so a missing, expired or foreign certificate becomes a 401 Status
//! instead of an opaque handshake failure.
//!
//! Invariant: the verifier's anchors are the client-issuing CA and, during a CA rotation, its
//! predecessor (`pki::Material::client_issuers_pem`) — as upstream's `--client-ca-file`. A
//! certificate signed by the root, the server CA or the kubelet-serving CA is no identity, so
//! a key that signs serving certificates can never mint `system:masters`.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;

use super::authn::CertIdentity;
use super::UserInfo;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("no client certificate was presented")]
    NoCertificate,
    #[error("the client certificate is not valid for this cluster: {0}")]
    Untrusted(String),
    #[error("the client certificate has no usable subject: {0}")]
    BadSubject(String),
}

/// Verify `chain` (leaf first) against the CA and read the identity from the leaf.
pub fn authenticate(
    verifier: &Arc<dyn ClientCertVerifier>,
    chain: &[CertificateDer<'static>],
    known_intermediates: &[CertificateDer<'static>],
    at: UnixTime,
) -> Result<CertIdentity, Error> {
    let (leaf, sent) = chain.split_first().ok_or(Error::NoCertificate)?;
    // Clients may omit their intermediate (upstream's client-ca-file setups often do): the
    // signing CAs we know complete the path; trust still ends at the anchors only.
    let intermediates: Vec<CertificateDer<'static>> =
        sent.iter().chain(known_intermediates).cloned().collect();
    verifier
        .verify_client_cert(leaf, &intermediates, at)
        .map_err(|e| Error::Untrusted(e.to_string()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| Error::BadSubject(e.to_string()))?;
    Ok(CertIdentity {
        user: identity(leaf)?,
        serial: parsed.raw_serial().to_vec(),
        issuer: parsed.issuer().as_raw().to_vec(),
        not_before: parsed.validity().not_before.timestamp(),
        not_after: parsed.validity().not_after.timestamp(),
    })
}

/// CN and O of a certificate.
pub fn identity(cert: &CertificateDer<'_>) -> Result<UserInfo, Error> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| Error::BadSubject(e.to_string()))?;
    let subject = parsed.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::BadSubject("missing common name".into()))?;
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Ok(UserInfo {
        name,
        groups,
        ..Default::default()
    }
    .with_authenticated_group())
}
