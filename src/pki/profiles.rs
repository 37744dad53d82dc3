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
    /// `false` for an authority whose client certificates are no API identity (the
    /// front-proxy CA: extension servers trust it, the API server does not).
    #[serde(default = "yes")]
    pub identities: bool,
}

fn yes() -> bool {
    true
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

/// The CSR signers whose certificates are client identities of the API server.
pub const CLIENT_SIGNERS: &[&str] = &[
    "kubernetes.io/kube-apiserver-client",
    "kubernetes.io/kube-apiserver-client-kubelet",
];

impl Profiles {
    /// The authorities that issue API client identities: those signing the server's client
    /// leaves or the client CSR signers. Only their certificates authenticate users.
    pub fn client_authorities(&self) -> Vec<&AuthorityProfile> {
        self.authorities
            .iter()
            .filter(|a| a.identities)
            .filter(|a| {
                self.leaves
                    .iter()
                    .any(|l| l.usage == Usage::Client && l.issuer == a.name)
                    || CLIENT_SIGNERS
                        .iter()
                        .any(|s| self.signers.get(*s) == Some(&a.name))
            })
            .collect()
    }
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
        let clients: Vec<&str> = p
            .client_authorities()
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(
            clients,
            ["client-ca"],
            "only the client CA issues identities"
        );
    }
}
