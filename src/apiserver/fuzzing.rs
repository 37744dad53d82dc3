//! The surface the `cargo fuzz` targets in `fuzz/` drive (feature `fuzzing` only; never in a
//! release or CI build of the server). Each function is one thing a client controls end to
//! end — a request body, a patch against an object — run through the same code the request
//! path runs, with the invariants every result must keep checked here, so a target only has
//! to feed bytes in: no panic, and any object that would be stored is within the object
//! limits and can be read back.

use serde_json::Value;

use crate::apiserver::{edge::body, merge, storage, strategy::typed};

/// Media types a body can be decoded as (protobuf has its own target).
pub const MEDIA_TYPES: [&str; 4] = [
    "application/json",
    "application/yaml",
    "application/apply-patch+yaml",
    "application/merge-patch+json",
];

/// Built-in kinds the targets decode and patch: a flat one, a pod and a nested template.
pub const KINDS: [(&str, &str, &str); 3] = [
    ("", "ConfigMap", "v1"),
    ("", "Pod", "v1"),
    ("apps", "Deployment", "apps/v1"),
];

/// Decodes a request body as the request path does, then as a typed built-in object.
pub fn decode_body(media: &str, bytes: &[u8], kind: usize) -> Option<Value> {
    let value = body::decode(media, bytes).ok()?;
    let (group, kind, _) = KINDS[kind % KINDS.len()];
    if let Ok(Some(decoded)) = typed::decode(group, kind, &value) {
        check_storable(&decoded.object);
    }
    Some(value)
}

/// One of the four patch types, applied to `doc` as an object of one of [`KINDS`].
pub fn patch(patch_type: u8, doc: &Value, patch_body: &[u8], kind: usize) {
    let (group, kind, _) = KINDS[kind % KINDS.len()];
    let media = match patch_type % 4 {
        0 => "application/json-patch+json",
        1 => "application/merge-patch+json",
        2 => "application/strategic-merge-patch+json",
        _ => "application/apply-patch+yaml",
    };
    let Ok(patch) = body::decode(media, patch_body) else {
        return;
    };
    let result = match patch_type % 4 {
        0 => merge::json_patch(doc, &patch).ok(),
        1 => merge::merge_patch(doc, &patch).ok(),
        2 => merge::strategic_merge_patch(doc, &patch, group, kind).ok(),
        _ => merge::apply(
            Some(doc),
            &patch,
            "fuzz",
            patch_type & 4 != 0,
            group,
            kind,
            "2024-01-01T00:00:00Z",
        )
        .ok(),
    };
    if let Some(out) = result {
        check_storable(&out);
        let _ = typed::decode(group, kind, &out);
    }
}

/// Whatever a patch produced is either refused by the store's encoder or stored within the
/// limits and readable again.
fn check_storable(obj: &Value) {
    if let Ok(bytes) = storage::encode(obj) {
        assert!(bytes.len() <= storage::MAX_OBJECT_BYTES);
        let back: Result<Value, _> = serde_json::from_slice(&bytes);
        assert!(back.is_ok(), "a stored object could not be read back");
    }
}
