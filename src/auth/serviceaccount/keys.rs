//! The service-account signing keys: one ECDSA P-256 private key that signs new tokens and
//! every public key that still verifies old ones (during a rotation the JWKS lists both).
//!
//! Files (until the PKI owns them): `DATA_DIR/pki/sa.key` (PKCS#8 PEM, 0600) and `sa.pub`
//! (one or more `PUBLIC KEY` PEM blocks; the signing key's public half is always trusted).
//! Written to a temporary name, fsynced and renamed, so a crash never leaves half a key.
//!
//! `kid` is upstream's: base64url(SHA-256(DER SubjectPublicKeyInfo)) without padding, so
//! tools that compute it from the public key agree with us.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey};
use sha2::Digest;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    BadKey { path: PathBuf, detail: String },
    #[error("{path} is readable by others (mode {mode:o}); expected 0600")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("cannot generate the service-account key: {0}")]
    Generate(String),
}

/// DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, BIT STRING of 66),
/// followed by the 65-byte uncompressed point `04 || x || y`.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A public key that verifies tokens.
#[derive(Clone)]
pub struct PublicKey {
    pub kid: String,
    /// base64url coordinates, as the JWK carries them.
    x: String,
    y: String,
    decoding: DecodingKey,
}

impl PublicKey {
    /// From a DER SubjectPublicKeyInfo; only P-256 keys are accepted.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, String> {
        if der.len() != P256_SPKI_PREFIX.len() + 65
            || der[..P256_SPKI_PREFIX.len()] != P256_SPKI_PREFIX
            || der[P256_SPKI_PREFIX.len()] != 0x04
        {
            return Err("not an uncompressed ECDSA P-256 public key".into());
        }
        let point = &der[P256_SPKI_PREFIX.len() + 1..];
        let x = URL_SAFE_NO_PAD.encode(&point[..32]);
        let y = URL_SAFE_NO_PAD.encode(&point[32..]);
        let decoding = DecodingKey::from_ec_components(&x, &y).map_err(|e| e.to_string())?;
        Ok(PublicKey {
            kid: URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(der)),
            x,
            y,
            decoding,
        })
    }

    pub fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The JWK upstream's `/openid/v1/jwks` serves for an ECDSA key.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
            "x": self.x, "y": self.y,
        })
    }
}

/// The signing key and every trusted public key.
#[derive(Clone)]
pub struct KeySet {
    signing_kid: String,
    signing: EncodingKey,
    public: Vec<PublicKey>,
}

impl std::fmt::Debug for KeySet {
    // Private keys never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("signing_kid", &self.signing_kid)
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// From PEM: the PKCS#8 signing key and extra trusted `PUBLIC KEY` blocks (older keys).
    pub fn from_pem(signing_key_pem: &str, extra_public_pem: &str) -> Result<Self, String> {
        let pair = rcgen::KeyPair::from_pem(signing_key_pem).map_err(|e| e.to_string())?;
        if pair.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err("the signing key is not ECDSA P-256".into());
        }
        let own_der = pem_blocks(&pair.public_key_pem(), "PUBLIC KEY")?
            .pop()
            .ok_or("the signing key has no public key")?;
        let own = PublicKey::from_spki_der(&own_der)?;
        let signing =
            EncodingKey::from_ec_pem(signing_key_pem.as_bytes()).map_err(|e| e.to_string())?;
        let mut public = vec![own.clone()];
        for der in pem_blocks(extra_public_pem, "PUBLIC KEY")? {
            let key = PublicKey::from_spki_der(&der)?;
            if !public.iter().any(|k| k.kid == key.kid) {
                public.push(key);
            }
        }
        Ok(KeySet {
            signing_kid: own.kid,
            signing,
            public,
        })
    }

    /// Load `dir/sa.key` and `dir/sa.pub`, creating the pair on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, Error> {
        let key_path = dir.join("sa.key");
        let pub_path = dir.join("sa.pub");
        let key_pem = match std::fs::metadata(&key_path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(Error::Permissions {
                        path: key_path,
                        mode,
                    });
                }
                read(&key_path)?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                    action: "create",
                    path: dir.to_path_buf(),
                    source,
                })?;
                let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| Error::Generate(e.to_string()))?;
                let pem = pair.serialize_pem();
                // Key first: a public key without its private half would be useless.
                write_atomic(&key_path, pem.as_bytes(), 0o600)?;
                write_atomic(&pub_path, pair.public_key_pem().as_bytes(), 0o644)?;
                pem
            }
            Err(source) => {
                return Err(Error::Io {
                    action: "read",
                    path: key_path,
                    source,
                })
            }
        };
        let public_pem = match std::fs::read_to_string(&pub_path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(Error::Io {
                    action: "read",
                    path: pub_path,
                    source,
                })
            }
        };
        KeySet::from_pem(&key_pem, &public_pem).map_err(|detail| Error::BadKey {
            path: key_path,
            detail,
        })
    }

    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    pub fn signing(&self) -> &EncodingKey {
        &self.signing
    }

    pub fn public(&self) -> &[PublicKey] {
        &self.public
    }

    pub fn find(&self, kid: &str) -> Option<&PublicKey> {
        self.public.iter().find(|k| k.kid == kid)
    }

    /// The JSON Web Key Set of every trusted key.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": self.public.iter().map(PublicKey::jwk).collect::<Vec<_>>() })
    }
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

/// The DER contents of every `-----BEGIN <label>-----` block in `text`.
fn pem_blocks(text: &str, label: &str) -> Result<Vec<Vec<u8>>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let after = &rest[start + begin.len()..];
        let stop = after
            .find(&end)
            .ok_or_else(|| format!("unterminated {label} PEM block"))?;
        let b64: String = after[..stop].split_whitespace().collect();
        out.push(
            STANDARD
                .decode(b64)
                .map_err(|_| format!("{label} PEM block is not valid base64"))?,
        );
        rest = &after[stop + end.len()..];
    }
    Ok(out)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let io = |action: &'static str, source: std::io::Error| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io("create", e))?;
    f.write_all(bytes).map_err(|e| io("write", e))?;
    f.sync_all().map_err(|e| io("sync", e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io("rename", e))?;
    if let Some(parent) = path.parent() {
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_or_create_is_stable_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = KeySet::load_or_create(dir.path()).unwrap();
        let b = KeySet::load_or_create(dir.path()).unwrap();
        assert_eq!(a.signing_kid(), b.signing_kid());
        let mode = std::fs::metadata(dir.path().join("sa.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(a.jwks()["keys"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn extra_public_keys_are_trusted() {
        let old = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let new = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let extra = old.public_key_pem();
        let set = KeySet::from_pem(&new.serialize_pem(), &extra).unwrap();
        assert_eq!(set.public().len(), 2);
        let der = pem_blocks(&extra, "PUBLIC KEY").unwrap().pop().unwrap();
        let old_kid = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(der));
        assert!(set.find(&old_kid).is_some());
    }
}
