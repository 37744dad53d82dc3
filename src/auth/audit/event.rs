//! One audit line: upstream's `audit.k8s.io/v1` `Event` plus Rampart's `decision`, `policies`
//! and the chain fields `prevHash` and `hash`.
//!
//! The hash: hex SHA-256 over `serde_json::to_vec(event)` with `hash: None` (the field is then
//! skipped), so it covers every other field including `prevHash`. The field order is the struct's,
//! and maps are `BTreeMap`s, so re-serializing a parsed line reproduces the same bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What the first line of a fresh log chains to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl From<crate::auth::UserInfo> for User {
    fn from(u: crate::auth::UserInfo) -> Self {
        User {
            username: u.name,
            uid: u.uid,
            groups: u.groups,
            extra: u.extra,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseStatus {
    pub code: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// A line of the log. `kind` is `Event` for requests, `ChainResume` for the marker the writer
/// adds after a crash left a partial last line (see `writer`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub kind: String,
    pub api_version: String,
    pub level: String,
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub stage: String,
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    pub verb: String,
    pub user: User,
    /// The identity the request acted as (`Impersonate-User`), as upstream's field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<User>,
    #[serde(rename = "sourceIPs", default)]
    pub source_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<ResponseStatus>,
    /// The request body (level Request and up), as upstream's field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_object: Option<serde_json::Value>,
    /// The response body (level RequestResponse), as upstream's field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_object: Option<serde_json::Value>,
    pub request_received_timestamp: String,
    pub stage_timestamp: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `allow` or `deny`: the authorizer's decision (`deny` also for unauthenticated requests).
    pub decision: String,
    /// Ids of the policies that decided.
    #[serde(default)]
    pub policies: Vec<String>,
    pub prev_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

impl Event {
    /// The chain hash of this line (its `hash` field ignored).
    pub fn compute_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash = None;
        let bytes = serde_json::to_vec(&unhashed).unwrap_or_default();
        hex(&Sha256::digest(&bytes))
    }

    /// Sets `prev_hash` and `hash` and returns the line (no trailing newline).
    ///
    /// Serializes once: `hash` is the struct's last field and skipped when `None`, so the
    /// sealed line is the hashed bytes with `,"hash":"<hex>"` spliced in before the closing
    /// brace — byte for byte what serde_json writes for the sealed struct (tested).
    pub fn seal(&mut self, prev_hash: &str) -> Vec<u8> {
        self.prev_hash = prev_hash.to_string();
        self.hash = None;
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        let hash = hex(&Sha256::digest(&line));
        if line.last() == Some(&b'}') {
            line.pop();
            line.extend_from_slice(b",\"hash\":\"");
            line.extend_from_slice(hash.as_bytes());
            line.extend_from_slice(b"\"}");
        }
        self.hash = Some(hash);
        line
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Now as upstream's audit timestamps: RFC 3339, UTC, microseconds.
pub fn micro_timestamp(t: jiff::Timestamp) -> String {
    let micros = t.as_microsecond();
    jiff::Timestamp::from_microsecond(micros)
        .map(|t| format!("{t:.6}"))
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_survives_a_round_trip() {
        let mut e = Event {
            kind: "Event".into(),
            verb: "get".into(),
            ..Default::default()
        };
        e.annotations.insert("a\"}".into(), "x".into());
        let line = e.seal(GENESIS);
        assert_eq!(
            line,
            serde_json::to_vec(&e).unwrap(),
            "the splice is serde's own output"
        );
        let parsed: Event = serde_json::from_slice(&line).unwrap();
        assert_eq!(parsed.compute_hash(), parsed.hash.clone().unwrap());
        assert_eq!(serde_json::to_vec(&parsed).unwrap(), line);
        let ts = micro_timestamp(jiff::Timestamp::from_microsecond(1_700_000_000_000_001).unwrap());
        assert_eq!(ts, "2023-11-14T22:13:20.000001Z");
    }
}
