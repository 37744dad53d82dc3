//! Creating and loading the CA and leaf certificates with `rcgen`.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;

use super::files::{read_optional, read_private_key, write_atomic};
use super::Error;

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Tolerate clocks of other machines that run a little behind ours.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Names the serving certificate covers, besides the fixed in-cluster ones.
#[derive(Debug, Clone, Default)]
pub struct ServingNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// A client certificate and its key, PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct Ca {
    pub cert_pem: String,
    key: KeyPair,
}

impl Ca {
    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, Error> {
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?)
    }
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
}

fn random_serial(params: &mut CertificateParams) {
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f; // positive
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
}

fn bad_pem(path: &Path, what: &'static str, e: impl std::fmt::Display) -> Error {
    Error::BadPem {
        path: path.to_path_buf(),
        what,
        detail: e.to_string(),
    }
}

pub fn load_or_create_ca(dir: &Path) -> Result<Ca, Error> {
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    if let (Some(cert_pem), Some(key_pem)) =
        (read_optional(&cert_path)?, read_private_key(&key_path)?)
    {
        let key = KeyPair::from_pem(&key_pem).map_err(|e| bad_pem(&key_path, "private key", e))?;
        // Fail now, not at first signing, if the pair does not fit together.
        Issuer::from_ca_cert_pem(&cert_pem, &key)
            .map_err(|e| bad_pem(&cert_path, "CA certificate", e))?;
        return Ok(Ca { cert_pem, key });
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "rampart-ca");
    dn.push(DnType::OrganizationName, "rampart");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_VALIDITY);
    random_serial(&mut params);
    let cert = params.self_signed(&key)?;
    // Key first: a certificate without its key would be useless, the reverse is re-creatable.
    write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(Ca {
        cert_pem: cert.pem(),
        key,
    })
}

fn load_pair(dir: &Path, name: &str) -> Result<Option<(String, String)>, Error> {
    let cert = read_optional(&dir.join(format!("{name}.crt")))?;
    let key = read_private_key(&dir.join(format!("{name}.key")))?;
    Ok(cert.zip(key))
}

fn store_pair(dir: &Path, name: &str, cert: &str, key: &str) -> Result<(), Error> {
    write_atomic(&dir.join(format!("{name}.key")), key.as_bytes(), 0o600)?;
    write_atomic(&dir.join(format!("{name}.crt")), cert.as_bytes(), 0o644)
}

/// The fixed names every API server certificate carries (in-cluster clients use them).
pub const IN_CLUSTER_NAMES: &[&str] = &[
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

pub fn load_or_create_serving(
    dir: &Path,
    ca: &Ca,
    names: &ServingNames,
    lifetime: Duration,
) -> Result<(String, String), Error> {
    if let Some(pair) = load_pair(dir, "apiserver-serving")? {
        return Ok(pair);
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let mut sans: Vec<SanType> = Vec::new();
    for dns in IN_CLUSTER_NAMES
        .iter()
        .map(|s| s.to_string())
        .chain(names.dns.clone())
    {
        let san = SanType::DnsName(dns.as_str().try_into()?);
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    let loopback: [IpAddr; 2] = [[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()];
    for ip in loopback.iter().chain(names.ips.iter()) {
        let san = SanType::IpAddress(*ip);
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut params, lifetime);
    random_serial(&mut params);
    let cert = params.signed_by(&key, &ca.issuer()?)?;
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    store_pair(dir, "apiserver-serving", &cert_pem, &key_pem)?;
    Ok((cert_pem, key_pem))
}

/// Load or issue a client certificate `CN=<cn>, O=<groups...>` stored as `<file>.crt/.key`.
pub fn load_or_create_client(
    dir: &Path,
    file: &str,
    cn: &str,
    groups: &[&str],
    ca: &Ca,
    lifetime: Duration,
) -> Result<ClientIdentity, Error> {
    if let Some((cert_pem, key_pem)) = load_pair(dir, file)? {
        return Ok(ClientIdentity { cert_pem, key_pem });
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    for g in groups {
        params.distinguished_name.push(DnType::OrganizationName, *g);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, lifetime);
    random_serial(&mut params);
    let cert = params.signed_by(&key, &ca.issuer()?)?;
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    store_pair(dir, file, &cert_pem, &key_pem)?;
    Ok(ClientIdentity { cert_pem, key_pem })
}
