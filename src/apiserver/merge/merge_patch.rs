//! JSON merge patch (RFC 7396, `application/merge-patch+json`).
//!
//! Objects merge key by key, `null` deletes a key, and anything else —
//! lists included — replaces the target.  As in RFC 7396 and upstream's
//! `jsonpatch.MergePatch`, a patch that is not an object replaces the whole
//! document; since an API object must stay an object, that result is
//! refused with [`PatchError::NotAnObject`] (upstream fails the same request
//! when decoding the result, with 400).

use serde_json::Value;

use super::json_patch::kind_name;
use super::MAX_OBJECT_DEPTH;
use super::{too_deep, PatchError, MAX_DEPTH};

/// Applies a JSON merge patch to `doc`.
pub fn merge_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    // The result is never deeper than the deeper of the two: patch values land where they
    // stand in the patch.
    if too_deep(patch, MAX_DEPTH) || too_deep(doc, MAX_OBJECT_DEPTH) {
        return Err(PatchError::TooDeep(MAX_DEPTH));
    }
    if !patch.is_object() {
        return Err(PatchError::NotAnObject(kind_name(patch)));
    }
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7396_examples() {
        // The table of RFC 7396 appendix A, restricted to object patches.
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (doc, patch, want) in cases {
            assert_eq!(merge_patch(&doc, &patch).unwrap(), want, "{doc} + {patch}");
        }
    }

    #[test]
    fn labels_are_merged_and_deleted() {
        let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": 1}});
        let patch = json!({"metadata": {"labels": {"a": null, "c": "3"}}});
        assert_eq!(
            merge_patch(&doc, &patch).unwrap(),
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"x": 1}})
        );
    }

    #[test]
    fn non_object_patch_is_refused() {
        let doc = json!({"a": 1});
        for (patch, kind) in [
            (json!([1]), "a list"),
            (json!("x"), "a string"),
            (json!(null), "null"),
            (json!(3), "a number"),
        ] {
            assert_eq!(
                merge_patch(&doc, &patch),
                Err(PatchError::NotAnObject(kind))
            );
        }
    }
}
