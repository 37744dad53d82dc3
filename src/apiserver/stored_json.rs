//! Stored objects written straight into a response, without decoding them.
//!
//! A stored value is the object's compact JSON without `metadata.resourceVersion` (see
//! `storage`). What a client reads is that object with `resourceVersion` set to the store's
//! revision and `apiVersion`/`kind` set to the endpoint's — what `storage::decode_bytes`
//! produces through a `serde_json::Value`. Building and serializing that `Value` costs far
//! more than the object's bytes (a 2 KiB pod is ~40 allocations to decode, as many to drop):
//! LIST and WATCH write thousands of them. [`write`] instead scans the stored bytes once
//! (strings and nesting only, nothing allocated) and copies them with the resourceVersion
//! inserted at the end of `metadata`, as the `Value` path would insert it.
//!
//! Invariant: the bytes written are the same JSON document `decode_bytes` would give (same
//! members, same values; member order as the `Value` path's). Anything the scanner does not
//! expect — whitespace outside strings, an escaped member name at the top level or in
//! `metadata`, a stored `resourceVersion`, an `apiVersion`/`kind` that differs from the
//! endpoint's (a custom resource stored under another served version), malformed JSON —
//! takes the `Value` path instead, so an odd stored object costs time, never correctness.

use crate::api::ResourceInfo;
use crate::apiserver::status::ApiResult;
use crate::apiserver::storage;

/// Append the object stored as `bytes` at `revision`, as served at `ri`, to `out`.
pub fn write(out: &mut Vec<u8>, bytes: &[u8], revision: u64, ri: &ResourceInfo) -> ApiResult<()> {
    let start = out.len();
    // A version served as a view of another stored version is converted on the Value path.
    let view = super::conversion::converted(&ri.group, &ri.version, &ri.kind);
    if !view && splice(out, bytes, revision, ri).is_some() {
        return Ok(());
    }
    out.truncate(start);
    let obj = storage::decode_bytes(bytes, revision, ri)?;
    serde_json::to_writer(&mut *out, &obj).map_err(|e| {
        crate::apiserver::status::ApiError::internal(format!("cannot encode object: {e}"))
    })
}

/// The index just past the string starting at `i` (`b[i]` is the opening quote).
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        match b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// The index just past the value starting at `i` (compact JSON: no whitespace).
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j)? {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    c if c.is_ascii_whitespace() => return None,
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while let Some(c) = b.get(j) {
                if matches!(c, b',' | b'}' | b']') {
                    break;
                }
                if c.is_ascii_whitespace() {
                    return None;
                }
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// The members of the object at `b[i] == '{'`: calls `each(name, value_start, value_end)`
/// with the raw member name (without quotes; `None` when it holds an escape) and returns the
/// index of the closing brace.
fn members(
    b: &[u8],
    i: usize,
    mut each: impl FnMut(Option<&[u8]>, usize, usize) -> Option<()>,
) -> Option<usize> {
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let mut j = i + 1;
    if b.get(j) == Some(&b'}') {
        return Some(j);
    }
    loop {
        if b.get(j) != Some(&b'"') {
            return None;
        }
        let name_end = skip_string(b, j)?;
        let raw = &b[j + 1..name_end - 1];
        let name = (!raw.contains(&b'\\')).then_some(raw);
        if b.get(name_end) != Some(&b':') {
            return None;
        }
        let value_end = skip_value(b, name_end + 1)?;
        each(name, name_end + 1, value_end)?;
        match b.get(value_end)? {
            b',' => j = value_end + 1,
            b'}' => return Some(value_end),
            _ => return None,
        }
    }
}

fn quoted(s: &str) -> Option<Vec<u8>> {
    serde_json::to_vec(s).ok()
}

/// The fast path of [`write`]; `None` (with `out` partly written) when the stored bytes are
/// not in the expected shape.
fn splice(out: &mut Vec<u8>, b: &[u8], revision: u64, ri: &ResourceInfo) -> Option<()> {
    let api_version = quoted(&ri.api_version())?;
    let kind = quoted(&ri.kind)?;
    let (mut has_api_version, mut has_kind) = (false, false);
    // Where metadata's closing brace is and whether it has members.
    let mut metadata: Option<(usize, bool)> = None;
    let end = members(b, 0, |name, vs, ve| {
        let value = &b[vs..ve];
        match name? {
            b"apiVersion" => {
                has_api_version = true;
                (value == api_version.as_slice()).then_some(())
            }
            b"kind" => {
                has_kind = true;
                (value == kind.as_slice()).then_some(())
            }
            b"metadata" => {
                let mut any = false;
                let close = members(b, vs, |name, _, _| {
                    any = true;
                    (name? != b"resourceVersion").then_some(())
                })?;
                metadata = Some((close, any));
                Some(())
            }
            _ => Some(()),
        }
    })?;
    if b[end + 1..].iter().any(|c| !c.is_ascii_whitespace()) {
        return None;
    }
    let mut copied = 0;
    if let Some((close, any)) = metadata {
        out.extend_from_slice(&b[..close]);
        if any {
            out.push(b',');
        }
        out.extend_from_slice(b"\"resourceVersion\":\"");
        out.extend_from_slice(revision.to_string().as_bytes());
        out.push(b'"');
        copied = close;
    }
    out.extend_from_slice(&b[copied..end]);
    // `decode_bytes` sets both; a missing one is appended, as `Value`'s insert appends.
    let mut first = end == 1;
    for (has, name, value) in [
        (has_api_version, &b"apiVersion"[..], &api_version),
        (has_kind, &b"kind"[..], &kind),
    ] {
        if has {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        out.extend_from_slice(name);
        out.extend_from_slice(b"\":");
        out.extend_from_slice(value);
    }
    out.push(b'}');
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::builtin;
    use serde_json::{json, Value};

    fn pods() -> &'static ResourceInfo {
        builtin().iter().find(|r| r.plural == "pods").unwrap()
    }

    /// The spliced bytes and the `Value` path agree, member order included.
    fn same(stored: &[u8], spliced_expected: bool) {
        let ri = pods();
        let mut out = Vec::new();
        let fast = splice(&mut out, stored, 42, ri).is_some();
        assert_eq!(
            fast,
            spliced_expected,
            "{}",
            String::from_utf8_lossy(stored)
        );
        let mut written = Vec::new();
        write(&mut written, stored, 42, ri).unwrap();
        let want = storage::decode_bytes(stored, 42, ri).unwrap();
        let got: Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(got, want);
        let order = |v: &Value| -> Vec<String> {
            let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            if let Some(m) = v["metadata"].as_object() {
                keys.extend(m.keys().cloned());
            }
            keys
        };
        assert_eq!(order(&got), order(&want));
        assert_eq!(written, serde_json::to_vec(&want).unwrap());
    }

    #[test]
    fn splices_what_decoding_would_give() {
        let pod = json!({"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "a\"b\\c}{", "namespace": "default", "labels": {"x": "]["}},
            "spec": {"containers": [{"name": "c", "image": "i", "args": ["a,b", "{", "\u{e9}"]}],
                "priority": -3, "enableServiceLinks": true, "x": null, "f": 1.5}});
        same(&serde_json::to_vec(&pod).unwrap(), true);
        same(br#"{"metadata":{},"spec":{}}"#, true);
        same(br#"{"spec":{}}"#, true);
        same(br#"{}"#, true);
        same(br#"{"metadata":{"name":"x"},"apiVersion":"v1"}"#, true);
    }

    #[test]
    fn odd_objects_take_the_value_path() {
        // A custom resource stored under another version, a stored resourceVersion,
        // whitespace, escaped member names.
        same(
            br#"{"apiVersion":"v2","kind":"Pod","metadata":{"name":"x"}}"#,
            false,
        );
        same(br#"{"metadata":{"name":"x","resourceVersion":"3"}}"#, false);
        same(br#"{ "metadata": {"name":"x"}}"#, false);
        same(br#"{"metadat\u0061":{"name":"x"}}"#, false);
        same(br#"{"kind":"Pod","metadata":{"name":"x"}} "#, true);
        let mut out = Vec::new();
        assert!(write(&mut out, b"{\"metadata\":", 1, pods()).is_err());
        assert!(write(&mut out, b"not json", 1, pods()).is_err());
        assert!(splice(&mut out, b"{\"a\":[1,2}", 1, pods()).is_none());
        assert!(splice(&mut out, b"{\"a\":\"x", 1, pods()).is_none());
    }
}
