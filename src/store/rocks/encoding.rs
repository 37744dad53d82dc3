//! On-disk encoding of the RocksDB backend (format version 1).
//!
//! Column families:
//! - `kv`: `key ++ 0x00 ++ revision (u64 BE)` → `tag ++ value`. Every version of every key
//!   (multi-version, like etcd's MVCC); tag 0 is a live value, tag 1 a tombstone whose value is
//!   the last live value (so DELETED watch events can carry it). NUL never occurs in keys, so all
//!   versions of one key are contiguous and sorted by revision.
//! - `history`: `revision (u64 BE)` → `op ++ key`: what each revision did, in revision order,
//!   for watch replay and compaction.
//! - `meta`: small named u64 values (current revision, compaction marks, format version).

use bytes::Bytes;

use crate::store::{EventKind, Revision};

pub const CF_KV: &str = "kv";
pub const CF_HISTORY: &str = "history";
pub const CF_META: &str = "meta";

pub const META_REVISION: &[u8] = b"revision";
/// Revision history is logically compacted to (reads below it fail).
pub const META_COMPACTED: &[u8] = b"compacted";
/// Revision up to which old versions have physically been removed.
pub const META_COMPACTED_DONE: &[u8] = b"compacted_done";
pub const META_FORMAT: &[u8] = b"format";
pub const FORMAT_VERSION: u64 = 1;

const TAG_LIVE: u8 = 0;
const TAG_TOMBSTONE: u8 = 1;

pub fn version_key(key: &str, rev: Revision) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 9);
    out.extend_from_slice(key.as_bytes());
    out.push(0);
    out.extend_from_slice(&rev.to_be_bytes());
    out
}

/// Split a `kv` key into the user key and the revision.
pub fn split_version_key(raw: &[u8]) -> Option<(&[u8], Revision)> {
    if raw.len() < 9 || raw[raw.len() - 9] != 0 {
        return None;
    }
    let (key, rest) = raw.split_at(raw.len() - 9);
    let rev = u64::from_be_bytes(rest[1..].try_into().ok()?);
    Some((key, rev))
}

/// A decoded `kv` value.
pub struct Version {
    pub tombstone: bool,
    pub value: Bytes,
}

pub fn encode_version(tombstone: bool, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 1);
    out.push(if tombstone { TAG_TOMBSTONE } else { TAG_LIVE });
    out.extend_from_slice(value);
    out
}

pub fn decode_version(raw: &[u8]) -> Option<Version> {
    let (&tag, value) = raw.split_first()?;
    let tombstone = match tag {
        TAG_LIVE => false,
        TAG_TOMBSTONE => true,
        _ => return None,
    };
    Some(Version {
        tombstone,
        value: Bytes::copy_from_slice(value),
    })
}

pub fn encode_history(kind: EventKind, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(match kind {
        EventKind::Create => 1,
        EventKind::Update => 2,
        EventKind::Delete => 3,
    });
    out.extend_from_slice(key.as_bytes());
    out
}

pub fn decode_history(raw: &[u8]) -> Option<(EventKind, String)> {
    let (&op, key) = raw.split_first()?;
    let kind = match op {
        1 => EventKind::Create,
        2 => EventKind::Update,
        3 => EventKind::Delete,
        _ => return None,
    };
    Some((kind, String::from_utf8(key.to_vec()).ok()?))
}

pub fn decode_u64(raw: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(raw.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_keys_round_trip_and_sort_by_key_then_revision() {
        let a1 = version_key("/a", 1);
        let a2 = version_key("/a", 300);
        let ab = version_key("/a/b", 2);
        assert!(a1 < a2 && a2 < ab);
        assert_eq!(split_version_key(&a2), Some((&b"/a"[..], 300)));
        assert_eq!(split_version_key(b"short"), None);
    }

    #[test]
    fn garbage_values_decode_to_none() {
        assert!(decode_version(&[]).is_none());
        assert!(decode_version(&[7, 1]).is_none());
        assert!(decode_history(&[9]).is_none());
        assert!(decode_u64(&[1, 2]).is_none());
    }
}
