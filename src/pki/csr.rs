//! Issuing a leaf certificate for an approved `CertificateSigningRequest`, as upstream's
//! `kubernetes.io/*` signers do: subject and SANs from the request, key usages from
//! `spec.usages`, never a CA, validity chosen by the caller. Pure: the caller brings the issuer.

use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyUsagePurpose, SanType, SigningKey, SubjectPublicKeyInfo,
};
use time::OffsetDateTime;

use crate::api::csr::Request;

/// Tolerate clocks of other machines that run a little behind ours.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the request's public key is not supported: {0}")]
    PublicKey(String),
    #[error("a subject alternative name is invalid: {0}")]
    San(String),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Sign `req` with `issuer` for `validity`. Unknown or CA usages are dropped, as upstream.
pub fn sign(
    req: &Request,
    usages: &[String],
    validity: Duration,
    issuer: &Issuer<'_, impl SigningKey>,
) -> Result<String, Error> {
    let (params, key) = params(req, usages, validity)?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|e| Error::Sign(e.to_string()))?;
    Ok(cert.pem())
}

/// The certificate parameters for `req` and its public key, ready for a signing CA.
pub fn params(
    req: &Request,
    usages: &[String],
    validity: Duration,
) -> Result<(CertificateParams, SubjectPublicKeyInfo), Error> {
    let key = SubjectPublicKeyInfo::from_der(&req.public_key_der)
        .map_err(|e| Error::PublicKey(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if !req.common_name.is_empty() {
        dn.push(DnType::CommonName, req.common_name.as_str());
    }
    for o in &req.organizations {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    params.distinguished_name = dn;
    for d in &req.dns_names {
        let name = d
            .as_str()
            .try_into()
            .map_err(|e: rcgen::Error| Error::San(e.to_string()))?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    for ip in &req.ip_addresses {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    for u in usages {
        match u.as_str() {
            "signing" | "digital signature" => {
                push(&mut params.key_usages, KeyUsagePurpose::DigitalSignature)
            }
            "content commitment" => {
                push(&mut params.key_usages, KeyUsagePurpose::ContentCommitment)
            }
            "key encipherment" => push(&mut params.key_usages, KeyUsagePurpose::KeyEncipherment),
            "key agreement" => push(&mut params.key_usages, KeyUsagePurpose::KeyAgreement),
            "data encipherment" => push(&mut params.key_usages, KeyUsagePurpose::DataEncipherment),
            "server auth" => push(
                &mut params.extended_key_usages,
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            "client auth" => push(
                &mut params.extended_key_usages,
                ExtendedKeyUsagePurpose::ClientAuth,
            ),
            "code signing" => push(
                &mut params.extended_key_usages,
                ExtendedKeyUsagePurpose::CodeSigning,
            ),
            "email protection" => push(
                &mut params.extended_key_usages,
                ExtendedKeyUsagePurpose::EmailProtection,
            ),
            "timestamping" => push(
                &mut params.extended_key_usages,
                ExtendedKeyUsagePurpose::TimeStamping,
            ),
            "ocsp signing" => push(
                &mut params.extended_key_usages,
                ExtendedKeyUsagePurpose::OcspSigning,
            ),
            // "cert sign", "crl sign" and the rest: a CSR never makes a CA.
            _ => {}
        }
    }
    params.is_ca = IsCa::ExplicitNoCa;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE.min(validity / 10);
    params.not_after = now + validity;
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    params.use_authority_key_identifier_extension = true;
    Ok((params, key))
}

fn push<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::BasicConstraints;

    #[test]
    fn signs_with_subject_sans_and_usages() {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "test-ca");
        let issuer = Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(vec!["n1".to_string(), "10.1.2.3".into()]).unwrap();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, "system:node:n1");
        p.distinguished_name
            .push(DnType::OrganizationName, "system:nodes");
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        let req = crate::api::csr::parse_pem(pem.as_bytes()).unwrap();
        let cert = sign(
            &req,
            &["digital signature".into(), "server auth".into()],
            Duration::from_secs(3600),
            &issuer,
        )
        .unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(&block.contents).unwrap();
        assert_eq!(
            c.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "system:node:n1"
        );
        assert!(c.extended_key_usage().unwrap().unwrap().value.server_auth);
        let life = c.validity().not_after.timestamp() - c.validity().not_before.timestamp();
        assert!(life <= 3600 + 300);
    }
}
