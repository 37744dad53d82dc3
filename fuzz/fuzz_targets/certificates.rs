//! Certificates and certificate signing requests, PEM and DER: what a CSR object's
//! `spec.request` carries and what the PKI reads back from disk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart::api::csr;
use rampart::pki::inventory;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = csr::parse_pem(data) {
        let _ = request.public_key_sha256();
        let _ = request.has_sans();
    }
    let _ = csr::parse_der(data);
    let _ = inventory::parse_der(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = inventory::parse_pem(text);
        let _ = inventory::parse_all_pem(text);
    }
});
