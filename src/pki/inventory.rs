//! Reading certificates back: subject, issuer, validity and names, for renewal decisions,
//! `rampart cert check`, the expiry metric and events.

use std::net::IpAddr;

use x509_parser::prelude::*;

/// What Rampart needs to know about one certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub subject_raw: Vec<u8>,
    pub issuer_raw: Vec<u8>,
    /// Serial number, lower-case hex without separators.
    pub serial: String,
    /// Seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub is_ca: bool,
    /// DER of the SubjectPublicKeyInfo's key bits, to match a private key.
    pub public_key: Vec<u8>,
}

impl CertInfo {
    pub fn lifetime(&self) -> i64 {
        self.not_after - self.not_before
    }

    /// Whether 2/3 of the lifetime have passed at `now` (the renewal point).
    pub fn due_for_renewal(&self, now: i64) -> bool {
        now >= self.not_before + self.lifetime() * 2 / 3
    }
}

/// Parse the first certificate of a PEM bundle.
pub fn parse_pem(pem: &str) -> Result<CertInfo, String> {
    let block = super::pem::first_certificate(pem.as_bytes()).ok_or("no CERTIFICATE block")?;
    parse_der(&block)
}

/// Every certificate of a PEM bundle.
pub fn parse_all_pem(pem: &str) -> Result<Vec<CertInfo>, String> {
    super::pem::blocks(pem.as_bytes(), super::pem::Kind::Certificate)
        .map_err(|e| e.to_string())?
        .iter()
        .map(|der| parse_der(der))
        .collect()
}

pub fn parse_der(der: &[u8]) -> Result<CertInfo, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        subject_raw: cert.subject().as_raw().to_vec(),
        issuer_raw: cert.issuer().as_raw().to_vec(),
        serial: hex(cert.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        dns,
        ips,
        is_ca: cert.is_ca(),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
    })
}

/// Lower-case hex, the form `rampart cert revoke` takes serials in.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
