//! PEM, read one way: every PEM block Rampart decodes (certificates, CSRs, public keys) goes
//! through `rustls-pki-types`' decoder here, instead of x509-parser's, a hand-written base64
//! splitter and ad-hoc loops each with its own idea of what a malformed block is.
//!
//! Blocks of other kinds are skipped (a bundle may carry a key next to its certificates); a
//! malformed block (bad base64, missing END line) is an error, never silently dropped.

use rustls::pki_types::pem::{self, PemObject};

pub use rustls::pki_types::pem::SectionKind as Kind;

/// Why a PEM text could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid PEM: {0:?}")]
pub struct Error(pem::Error);

/// The DER contents of every block of `kind` in `text`, in order.
pub fn blocks(text: &[u8], kind: Kind) -> Result<Vec<Vec<u8>>, Error> {
    let mut out = Vec::new();
    for section in <(Kind, Vec<u8>)>::pem_slice_iter(text) {
        let (k, der) = section.map_err(Error)?;
        if k == kind {
            out.push(der);
        }
    }
    Ok(out)
}

/// The first block of any known kind, as Go's `pem.Decode` reads one (`None` when there is
/// none or it is malformed).
pub fn first(text: &[u8]) -> Option<(Kind, Vec<u8>)> {
    <(Kind, Vec<u8>)>::pem_slice_iter(text).next()?.ok()
}

/// The DER of the first `CERTIFICATE` block, if `text` has one and it decodes.
pub fn first_certificate(text: &[u8]) -> Option<Vec<u8>> {
    blocks(text, Kind::Certificate).ok()?.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_of_one_kind_in_order_and_malformed_ones_refused() {
        let text = b"junk\n-----BEGIN CERTIFICATE-----\nAQI=\n-----END CERTIFICATE-----\n\
            -----BEGIN PUBLIC KEY-----\nAw==\n-----END PUBLIC KEY-----\n\
            -----BEGIN CERTIFICATE-----\nBAU=\n-----END CERTIFICATE-----\n";
        assert_eq!(
            blocks(text, Kind::Certificate).unwrap(),
            vec![vec![1, 2], vec![4, 5]]
        );
        assert_eq!(blocks(text, Kind::PublicKey).unwrap(), vec![vec![3]]);
        assert_eq!(first_certificate(text), Some(vec![1, 2]));
        assert!(blocks(
            b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
            Kind::Certificate
        )
        .is_err());
        assert!(blocks(b"-----BEGIN CERTIFICATE-----\nAQI=\n", Kind::Certificate).is_err());
        assert!(blocks(b"", Kind::Certificate).unwrap().is_empty());
    }
}
