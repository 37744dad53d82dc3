//! The certificate profiles in `pki/profiles.yaml`, embedded at build time: which signing CAs
//! exist, which identities the server holds, and which CA signs each built-in CSR signer.
//!
//! Invariant: every leaf names an authority that exists and every signer maps to one
//! (checked by [`builtin`], covered by a unit test so a bad edit fails the build's tests).

use std::collections::BTreeMap;

use serde::Deserialize;

const PROFILES_YAML: &str = include_str!("../../pki/profiles.yaml");

#[derive(Debug, Clone, Deserialize)]
pub struct Profiles {
    pub authorities: Vec<AuthorityProfile>,
    pub leaves: Vec<LeafProfile>,
    pub signers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthorityProfile {
    pub name: String,
    pub common_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Usage {
    Server,
    Client,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LeafProfile {
    pub name: String,
    pub issuer: String,
    pub usage: Usage,
    pub common_name: String,
    #[serde(default)]
    pub organizations: Vec<String>,
    #[serde(default)]
    pub serving_names: bool,
}

/// The embedded profiles, checked for consistency.
pub fn builtin() -> Result<Profiles, String> {
    let p: Profiles =
        serde_yaml_ng::from_str(PROFILES_YAML).map_err(|e| format!("pki/profiles.yaml: {e}"))?;
    let known = |n: &str| p.authorities.iter().any(|a| a.name == n);
    for l in &p.leaves {
        if !known(&l.issuer) {
            return Err(format!(
                "pki/profiles.yaml: leaf {} names unknown issuer {}",
                l.name, l.issuer
            ));
        }
    }
    for (signer, ca) in &p.signers {
        if !known(ca) {
            return Err(format!(
                "pki/profiles.yaml: signer {signer} names unknown authority {ca}"
            ));
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_profiles_are_consistent() {
        let p = super::builtin().expect("profiles");
        assert!(p.leaves.iter().any(|l| l.name == "apiserver-serving"));
        assert!(p.leaves.iter().any(|l| l.name == "admin"));
        assert_eq!(p.signers.len(), 3);
    }
}
