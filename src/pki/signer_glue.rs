//! Interim: the issuer the CSR signer signs with, loaded from the cluster root CA files in
//! `DATA_DIR/pki`. To be replaced by `pki::Authority::issuer_for(signer_name)` (one
//! intermediate CA per signer) when the PKI rewrite lands.

use std::path::Path;

use rcgen::{Issuer, KeyPair};

use super::files::{read_optional, read_private_key};
use super::Error;

/// The issuer for `signer_name` (today: the root CA for every built-in signer).
pub fn signing_issuer(
    pki_dir: &Path,
    _signer_name: &str,
) -> Result<Issuer<'static, KeyPair>, Error> {
    let (cert_path, key_path) = (pki_dir.join("ca.crt"), pki_dir.join("ca.key"));
    let missing = |path: &Path| Error::BadPem {
        path: path.to_path_buf(),
        what: "CA file",
        detail: "missing".into(),
    };
    let cert_pem = read_optional(&cert_path)?.ok_or_else(|| missing(&cert_path))?;
    let key_pem = read_private_key(&key_path)?.ok_or_else(|| missing(&key_path))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| Error::BadPem {
        path: key_path.clone(),
        what: "private key",
        detail: e.to_string(),
    })?;
    Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| Error::BadPem {
        path: cert_path,
        what: "CA certificate",
        detail: e.to_string(),
    })
}
