//! The service-account signing keys: one ECDSA P-256 private key that signs new tokens and
//! every public key that still verifies old ones (during a rotation the JWKS lists both).
//!
//! Files (until the PKI owns them): `DATA_DIR/pki/sa.key` (PKCS#8 PEM, 0600) and `sa.pub`
//! (one or more `PUBLIC KEY` PEM blocks; the signing key's public half is always trusted).
//! Written to a temporary name, fsynced and renamed, so a crash never leaves half a key.
//!
//! `kid` is upstream's: base64url(SHA-256(DER SubjectPublicKeyInfo)) without padding, so
//! tools that compute it from the public key agree with us.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey};
use sha2::Digest;

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
        let own_der = public_key_blocks(&pair.public_key_pem())?
            .pop()
            .ok_or("the signing key has no public key")?;
        let own = PublicKey::from_spki_der(&own_der)?;
        let signing =
            EncodingKey::from_ec_pem(signing_key_pem.as_bytes()).map_err(|e| e.to_string())?;
        let mut public = vec![own.clone()];
        for der in public_key_blocks(extra_public_pem)? {
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

/// The DER contents of every `PUBLIC KEY` block in `text` (`pki::pem`).
fn public_key_blocks(text: &str) -> Result<Vec<Vec<u8>>, String> {
    crate::pki::pem::blocks(text.as_bytes(), crate::pki::pem::Kind::PublicKey)
        .map_err(|e| format!("PUBLIC KEY: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_public_keys_are_trusted() {
        let old = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let new = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let extra = old.public_key_pem();
        let set = KeySet::from_pem(&new.serialize_pem(), &extra).unwrap();
        assert_eq!(set.public().len(), 2);
        let der = public_key_blocks(&extra).unwrap().pop().unwrap();
        let old_kid = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(der));
        assert!(set.find(&old_kid).is_some());
    }
}
