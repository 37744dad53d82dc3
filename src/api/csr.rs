//! What a `CertificateSigningRequest` asks for: its PKCS#10 request (PEM `CERTIFICATE REQUEST`)
//! parsed, self-signature verified, with subject, SANs and the key's fingerprint, plus
//! upstream's key-usage vocabulary. Pure (no I/O): the API server validates with it, the
//! approver decides with it, the signer issues from it.
//!
//! Invariant: a [`Request`] exists only for a request whose signature verifies with its own
//! public key (proof of possession), as upstream's `ParseCSR` + `CheckSignature`.

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// The built-in signers upstream's kube-controller-manager serves (and so do we).
pub const SIGNER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
pub const SIGNER_CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const SIGNER_KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";

/// `certificates/v1` KeyUsage values (upstream's `KeyUsage` constants).
pub const KEY_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("PEM block type must be CERTIFICATE REQUEST")]
    NotPem,
    #[error("the certificate request cannot be parsed: {0}")]
    Parse(String),
    #[error("the certificate request's signature does not verify with its public key")]
    Signature,
}

/// A parsed, self-signature-verified certificate request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    /// Email, URI and other SAN kinds: node signers refuse any.
    pub other_sans: usize,
    /// DER SubjectPublicKeyInfo of the requester's key.
    pub public_key_der: Vec<u8>,
}

impl Request {
    /// Hex SHA-256 of the SubjectPublicKeyInfo: the key's identity for node-name ownership.
    pub fn public_key_sha256(&self) -> String {
        hex(&Sha256::digest(&self.public_key_der))
    }

    pub fn has_sans(&self) -> bool {
        !self.dns_names.is_empty() || !self.ip_addresses.is_empty() || self.other_sans > 0
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parse `pem` (the decoded `spec.request`) and verify its self-signature.
pub fn parse_pem(pem: &[u8]) -> Result<Request, Error> {
    // Exactly one CERTIFICATE REQUEST block first, as upstream's `pem.Decode` reads it.
    let (kind, der) = crate::pki::pem::first(pem).ok_or(Error::NotPem)?;
    if kind != crate::pki::pem::Kind::Csr {
        return Err(Error::NotPem);
    }
    parse_der(&der)
}

pub fn parse_der(der: &[u8]) -> Result<Request, Error> {
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map_err(|e| Error::Parse(e.to_string()))?;
    csr.verify_signature().map_err(|_| Error::Signature)?;
    let info = &csr.certification_request_info;
    let common_name = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let organizations = info
        .subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    let mut out = Request {
        common_name,
        organizations,
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        other_sans: 0,
        public_key_der: info.subject_pki.raw.to_vec(),
    };
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => out.dns_names.push(d.to_string()),
                    GeneralName::IPAddress(b) => match ip_from_bytes(b) {
                        Some(ip) => out.ip_addresses.push(ip),
                        None => out.other_sans += 1,
                    },
                    _ => out.other_sans += 1,
                }
            }
        }
    }
    Ok(out)
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cn: &str, orgs: &[&str], sans: &[&str]) -> (String, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            p.distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        (p.serialize_request(&key).unwrap().pem().unwrap(), key)
    }

    #[test]
    fn parses_subject_and_sans() {
        let (pem, _) = request("system:node:a", &["system:nodes"], &["a", "10.0.0.1"]);
        let r = parse_pem(pem.as_bytes()).unwrap();
        assert_eq!(r.common_name, "system:node:a");
        assert_eq!(r.organizations, vec!["system:nodes"]);
        assert_eq!(r.dns_names, vec!["a"]);
        assert_eq!(r.ip_addresses, vec![IpAddr::from([10, 0, 0, 1])]);
        assert_eq!(r.public_key_sha256().len(), 64);
    }

    #[test]
    fn refuses_garbage_and_tampering() {
        assert_eq!(parse_pem(b"nope"), Err(Error::NotPem));
        let (pem, _) = request("x", &[], &[]);
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let mut der = block.contents.clone();
        // Flip a byte inside the subject: the signature no longer matches.
        let i = der.windows(1).position(|w| w[0] == b'x').unwrap();
        der[i] = b'y';
        assert!(parse_der(&der).is_err());
    }
}
