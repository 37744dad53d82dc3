//! Certificate revocation: serials, or every certificate a node held up to a moment, refused
//! on every request — including on connections that were opened before the revocation, so a
//! revoked node is cut off at once rather than when it next reconnects. Kubernetes itself has
//! no revocation (it relies on short lifetimes); this is Rampart's addition.
//!
//! The list itself is persisted by the API server in its store; this module is the in-memory
//! form and the check.

use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use super::authn::{CertIdentity, CertificateCheck, Error};

/// One entry of the revocation list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    /// Lower-case hex serial of one certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// A node: every `system:node:<name>` certificate issued up to `revoked_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Seconds since the epoch.
    pub revoked_at: i64,
}

impl Revocation {
    pub fn matches(&self, id: &CertIdentity) -> bool {
        if let Some(serial) = &self.serial {
            if normalise_serial(serial) == normalise_serial(&hex(&id.serial)) {
                return true;
            }
        }
        if let Some(node) = &self.node {
            if id.user.name.strip_prefix("system:node:") == Some(node.as_str())
                && id.not_before <= self.revoked_at
            {
                return true;
            }
        }
        false
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serials as people paste them: `AB:CD:...`, `0xabcd`, with or without leading zero bytes.
pub fn normalise_serial(s: &str) -> String {
    let s = s.trim().trim_start_matches("0x").trim_start_matches("0X");
    let hex: String = s
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let trimmed = hex.trim_start_matches("00");
    trimmed.to_string()
}

/// Whether `s` is a plausible serial (hex digits and colons, 1..=40 bytes).
pub fn valid_serial(s: &str) -> bool {
    let n = normalise_serial(s);
    !n.is_empty() && n.len() <= 80 && n.chars().all(|c| c.is_ascii_hexdigit())
}

#[derive(Debug)]
pub struct Revocations {
    list: RwLock<Vec<Revocation>>,
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations {
            list: RwLock::new(Vec::new()),
            changes: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Revocations {
    pub fn replace(&self, list: Vec<Revocation>) {
        match self.list.write() {
            Ok(mut l) => *l = list,
            Err(p) => *p.into_inner() = list,
        }
        self.changes.send_modify(|n| *n += 1);
    }

    /// Notified after every change of the list.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn list(&self) -> Vec<Revocation> {
        match self.list.read() {
            Ok(l) => l.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

impl CertificateCheck for Revocations {
    fn check(&self, id: &CertIdentity) -> Result<(), Error> {
        let list = match self.list.read() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        if list.iter().any(|r| r.matches(id)) {
            Err(Error::CertificateRevoked)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserInfo;

    fn id(name: &str, serial: &[u8], not_before: i64) -> CertIdentity {
        CertIdentity {
            user: UserInfo {
                name: name.into(),
                groups: vec![],
                ..Default::default()
            },
            serial: serial.to_vec(),
            issuer: Vec::new(),
            not_before,
            not_after: not_before + 1000,
        }
    }

    #[test]
    fn serial_and_node_entries_match_what_they_should() {
        let r = Revocations::default();
        r.replace(vec![
            Revocation {
                serial: Some("0A:FF".into()),
                node: None,
                revoked_at: 0,
            },
            Revocation {
                serial: None,
                node: Some("n1".into()),
                revoked_at: 100,
            },
        ]);
        assert!(r.check(&id("x", &[0x0a, 0xff], 0)).is_err());
        assert!(r.check(&id("x", &[0x0a, 0xfe], 0)).is_ok());
        assert!(r.check(&id("system:node:n1", &[1], 50)).is_err());
        assert!(r.check(&id("system:node:n1", &[1], 150)).is_ok());
        assert!(r.check(&id("system:node:n2", &[1], 50)).is_ok());
        assert!(valid_serial("0a:ff") && !valid_serial("zz") && !valid_serial(""));
    }
}
