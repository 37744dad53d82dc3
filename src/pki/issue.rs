//! Creating certificates with `rcgen`: roots, signing CAs, cross-signatures and leaves.
//! ECDSA P-256 everywhere; serial numbers are 127 random bits; every certificate is backdated
//! a few minutes so machines whose clocks lag a little accept it at once.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;

use super::profiles::Usage;
use super::Error;

pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Tolerate clocks of other machines that run a little behind ours.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Names the serving certificate covers, besides the fixed in-cluster ones.
#[derive(Debug, Clone, Default)]
pub struct ServingNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// The fixed names every API server certificate carries (in-cluster clients use them).
pub const IN_CLUSTER_NAMES: &[&str] = &[
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// A signing CA: its certificate (the first PEM block of `cert_pem`; any further blocks are
/// the chain above it, for a CA brought by the user) and its key.
pub struct Ca {
    pub cert_pem: String,
    pub key: KeyPair,
}

impl Ca {
    pub fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, Error> {
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?)
    }

    /// The first certificate of `cert_pem` alone.
    pub fn own_cert_pem(&self) -> String {
        pem_blocks(&self.cert_pem)
            .into_iter()
            .next()
            .unwrap_or_default()
    }
}

/// The PEM blocks of a bundle, each re-rendered on its own.
pub fn pem_blocks(pem: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in pem.lines() {
        if line.starts_with("-----BEGIN ") {
            cur.clear();
        }
        cur.push_str(line);
        cur.push('\n');
        if line.starts_with("-----END ") {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = OffsetDateTime::now_utc();
    // Short test lifetimes must not be dominated by the backdating.
    params.not_before = now - BACKDATE.min(lifetime / 10);
    params.not_after = now + lifetime;
}

fn random_serial(params: &mut CertificateParams) {
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f; // positive
    serial[0] |= 0x01; // no leading zero byte, so the encoding keeps all 16 bytes
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
}

fn ca_params(common_name: &str, lifetime: Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "rampart");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, lifetime);
    random_serial(&mut params);
    params
}

/// A unique suffix for CA names: path building goes by subject name, so the CAs of two
/// generations must never share one.
pub fn generation_suffix() -> String {
    let r: u32 = rand::random();
    format!("{}-{:08x}", OffsetDateTime::now_utc().unix_timestamp(), r)
}

/// A new self-signed root, and a cross-certificate for it signed by `previous` (the same
/// subject and key, issued by the old root) when one is given, so clients that trust only the
/// old root can still reach the new one during a rotation.
pub fn new_root(previous: Option<&Ca>) -> Result<(Ca, Option<String>), Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let params = ca_params(
        &format!("rampart-root-ca-{}", generation_suffix()),
        CA_VALIDITY,
    );
    let cert = params.self_signed(&key)?;
    let cross = match previous {
        Some(old) => Some(params.signed_by(&key, &old.issuer()?)?.pem()),
        None => None,
    };
    Ok((
        Ca {
            cert_pem: cert.pem(),
            key,
        },
        cross,
    ))
}

/// A signing CA under `parent`.
pub fn new_intermediate(common_name: &str, parent: &Ca) -> Result<Ca, Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = ca_params(
        &format!("{common_name}-{}", generation_suffix()),
        CA_VALIDITY,
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let cert = params.signed_by(&key, &parent.issuer()?)?;
    Ok(Ca {
        cert_pem: cert.pem(),
        key,
    })
}

/// What a leaf certificate says about its holder.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub usage: Usage,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl LeafSpec {
    pub fn params(&self, lifetime: Duration) -> Result<CertificateParams, Error> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, self.common_name.as_str());
        for o in &self.organizations {
            params
                .distinguished_name
                .push(DnType::OrganizationName, o.as_str());
        }
        let mut sans: Vec<SanType> = Vec::new();
        for dns in &self.dns {
            let san = SanType::DnsName(dns.as_str().try_into()?);
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        for ip in &self.ips {
            let san = SanType::IpAddress(*ip);
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match self.usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        validity(&mut params, lifetime);
        random_serial(&mut params);
        Ok(params)
    }
}

/// Sign `params` for `public_key` with `ca`; PEM of the leaf alone.
pub fn sign(
    params: &CertificateParams,
    public_key: &impl PublicKeyData,
    ca: &Ca,
) -> Result<String, Error> {
    Ok(params.signed_by(public_key, &ca.issuer()?)?.pem())
}

/// A fresh key and a leaf for it; (leaf PEM, key PEM).
pub fn new_leaf(spec: &LeafSpec, ca: &Ca, lifetime: Duration) -> Result<(String, String), Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = sign(&spec.params(lifetime)?, &key, ca)?;
    Ok((cert, key.serialize_pem()))
}

/// A fresh ECDSA P-256 key pair, PEM (PKCS#8 private key, SPKI public key).
pub fn new_key_pem() -> Result<(String, String), Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}
