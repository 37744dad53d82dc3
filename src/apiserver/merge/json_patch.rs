//! JSON patch (RFC 6902, `application/json-patch+json`), applied by our own
//! code so that the *result* is bounded, not only the request.
//!
//! Upstream (`evanphx/json-patch` as kube-apiserver drives it) refuses more
//! than [`MAX_OPERATIONS`] operations with 413 and caps what `copy`
//! operations may add in total ([`MAX_COPY_BYTES`], its
//! `AccumulatedCopySizeLimit`) with 422.  Go grows its stacks, so upstream
//! needs no depth rule; we do: a patch of individually shallow `add`/`move`
//! operations can otherwise stack a value thousands of levels deep, and
//! dropping, cloning or serializing that value recurses until the stack
//! overflows.  So every operation is checked *before* it runs: the value it
//! places (its depth) plus the path it lands on (its length) must stay within
//! the larger of [`MAX_DEPTH`] and the document's own depth.  The depth of a
//! moved value is bounded from what we know of the document and only walked
//! when that bound is not enough, within a budget of visited nodes.
//!
//! Invariants: the input document is never modified; on error nothing of the
//! partial result escapes; no value deeper than the limit ever exists, so no
//! recursive clone, comparison or drop can exhaust the stack; the result is
//! at most the document plus the patch plus [`MAX_COPY_BYTES`].
//!
//! Errors: an undecodable patch is [`PatchError::Malformed`] (400, upstream's
//! `DecodePatch`), too many operations [`PatchError::TooLarge`] (413), any
//! failure while applying [`PatchError::Unapplicable`] (422, as upstream
//! answers a failed `Apply`), a non-object result [`PatchError::NotAnObject`].

use serde_json::Value;

use super::MAX_OBJECT_DEPTH;
use super::{measure, too_deep, Limits, Measure, PatchError, MAX_DEPTH};

/// Most operations accepted in one JSON patch (upstream's `maxJSONPatchOperations`).
pub const MAX_OPERATIONS: usize = 10_000;

/// Most bytes `copy` operations may add to a document in one patch (upstream's
/// `JSONPatchMaxCopyBytes`, 3 MiB).
pub const MAX_COPY_BYTES: usize = 3 * 1024 * 1024;

/// Most nodes the exact depth checks of `move` operations may visit in one patch.  Only
/// hostile patches get near it: ordinary moves are cleared by the depth bound alone.
const WALK_BUDGET: usize = 4_000_000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Add,
    Remove,
    Replace,
    Move,
    Copy,
    Test,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Add => "add",
            Kind::Remove => "remove",
            Kind::Replace => "replace",
            Kind::Move => "move",
            Kind::Copy => "copy",
            Kind::Test => "test",
        }
    }
}

/// One decoded operation: pointers split into unescaped reference tokens.
struct Operation {
    kind: Kind,
    path: Vec<String>,
    from: Vec<String>,
    value: Value,
}

/// Applies a JSON patch (the decoded request body) to `doc`.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    if too_deep(patch, MAX_DEPTH) {
        return Err(PatchError::TooDeep(MAX_DEPTH));
    }
    let Value::Array(raw_ops) = patch else {
        return Err(PatchError::Malformed(
            "a JSON patch must be a list of operations".into(),
        ));
    };
    if raw_ops.len() > MAX_OPERATIONS {
        return Err(PatchError::TooLarge(format!(
            "The allowed maximum operations in a JSON patch is {MAX_OPERATIONS}, got {}",
            raw_ops.len()
        )));
    }
    let ops = raw_ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            decode_op(op).map_err(|e| PatchError::Malformed(format!("operation {i}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Measure::Fits {
        depth: doc_depth, ..
    } = measure(doc, Limits::depth(MAX_OBJECT_DEPTH))
    else {
        return Err(PatchError::TooDeep(MAX_OBJECT_DEPTH));
    };
    let mut state = Bounds {
        limit: doc_depth.max(MAX_DEPTH),
        depth: doc_depth,
        copied: 0,
        walked: 0,
    };
    let mut out = doc.clone();
    for (i, op) in ops.into_iter().enumerate() {
        let (kind, path) = (op.kind, pointer_string(&op.path));
        apply_op(&mut out, op, &mut state).map_err(|e| {
            PatchError::Unapplicable(format!("operation {i} ({} {path:?}): {e}", kind.name()))
        })?;
    }
    if !out.is_object() {
        return Err(PatchError::NotAnObject(kind_name(&out)));
    }
    Ok(out)
}

/// What the patch has done so far, against its limits.
struct Bounds {
    /// Deepest the document may become.
    limit: usize,
    /// An upper bound of the document's current depth.
    depth: usize,
    /// Bytes added by `copy` so far.
    copied: usize,
    /// Nodes visited by exact depth checks so far.
    walked: usize,
}

impl Bounds {
    /// Checks that a value `value_depth` deep may land at `path`, and records it.
    fn place(&mut self, path: &[String], value_depth: usize) -> Result<(), String> {
        let depth = path.len() + value_depth;
        if depth > self.limit {
            return Err(too_deep_message(self.limit));
        }
        self.depth = self.depth.max(depth);
        Ok(())
    }
}

fn decode_op(op: &Value) -> Result<Operation, String> {
    let obj = op
        .as_object()
        .ok_or_else(|| "an operation must be an object".to_string())?;
    let name = obj
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| "\"op\" must be a string".to_string())?;
    let kind = match name {
        "add" => Kind::Add,
        "remove" => Kind::Remove,
        "replace" => Kind::Replace,
        "move" => Kind::Move,
        "copy" => Kind::Copy,
        "test" => Kind::Test,
        other => return Err(format!("unknown operation {other:?}")),
    };
    let pointer = |field: &str| -> Result<Vec<String>, String> {
        let text = obj
            .get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{name} needs a string {field:?}"))?;
        parse_pointer(text).ok_or_else(|| format!("{field} {text:?} is not a JSON pointer"))
    };
    let path = pointer("path")?;
    let from = match kind {
        Kind::Move | Kind::Copy => pointer("from")?,
        _ => Vec::new(),
    };
    let value = match kind {
        Kind::Add | Kind::Replace | Kind::Test => obj
            .get("value")
            .cloned()
            .ok_or_else(|| format!("{name} needs a \"value\""))?,
        _ => Value::Null,
    };
    Ok(Operation {
        kind,
        path,
        from,
        value,
    })
}

/// RFC 6901: `""` is the whole document, else `/`-separated tokens with `~1` = `/`, `~0` = `~`.
fn parse_pointer(text: &str) -> Option<Vec<String>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    let rest = text.strip_prefix('/')?;
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                match c {
                    '~' => match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return None,
                    },
                    c => out.push(c),
                }
            }
            Some(out)
        })
        .collect()
}

fn pointer_string(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
}

fn apply_op(doc: &mut Value, op: Operation, state: &mut Bounds) -> Result<(), String> {
    match op.kind {
        Kind::Add => {
            state.place(&op.path, value_depth(&op.value))?;
            add(doc, &op.path, op.value)
        }
        Kind::Replace => {
            state.place(&op.path, value_depth(&op.value))?;
            let target = get_mut(doc, &op.path).ok_or("the path does not exist")?;
            // The old value is dropped here; it was within the limit, so dropping is shallow.
            *target = op.value;
            Ok(())
        }
        Kind::Remove => remove(doc, &op.path).map(drop),
        Kind::Test => match get(doc, &op.path) {
            Some(v) if *v == op.value => Ok(()),
            Some(_) => Err("the value differs from the one tested".into()),
            None => Err("the path does not exist".into()),
        },
        Kind::Copy => {
            let source = get(doc, &op.from).ok_or("the \"from\" path does not exist")?;
            let limits = Limits {
                depth: state.limit,
                bytes: MAX_COPY_BYTES - state.copied,
                nodes: usize::MAX,
            };
            let (depth, bytes) = match measure(source, limits) {
                Measure::Fits { depth, bytes, .. } => (depth, bytes),
                Measure::TooDeep => return Err(too_deep_message(state.limit)),
                _ => {
                    return Err(format!(
                        "Unable to complete the copy, the accumulated size increase of copy exceeds the limit {MAX_COPY_BYTES}"
                    ))
                }
            };
            state.place(&op.path, depth)?;
            state.copied += bytes;
            let copy = source.clone();
            add(doc, &op.path, copy)
        }
        Kind::Move => {
            if op.path.len() > op.from.len() && op.path.starts_with(&op.from) {
                return Err("a value cannot be moved into one of its own children".into());
            }
            let source = get(doc, &op.from).ok_or("the \"from\" path does not exist")?;
            // What we know without looking: the value is at most as deep as the document
            // below `from`.  Walk it (within the budget) only when that is not enough.
            let bound = state.depth.saturating_sub(op.from.len());
            let depth = if op.path.len() + bound <= state.limit {
                bound
            } else {
                let limits = Limits {
                    depth: state.limit,
                    bytes: usize::MAX,
                    nodes: WALK_BUDGET.saturating_sub(state.walked),
                };
                match measure(source, limits) {
                    Measure::Fits { depth, nodes, .. } => {
                        state.walked += nodes;
                        depth
                    }
                    Measure::TooDeep => return Err(too_deep_message(state.limit)),
                    _ => {
                        return Err(
                            "the patch moves too much data to be checked; split it into smaller patches"
                                .into(),
                        )
                    }
                }
            };
            state.place(&op.path, depth)?;
            if op.path == op.from {
                return Ok(());
            }
            let value = remove(doc, &op.from)?;
            add(doc, &op.path, value)
        }
    }
}

fn too_deep_message(limit: usize) -> String {
    format!("the result would be nested more than {limit} levels deep")
}

/// Depth of a value from the patch (already known to be within [`MAX_DEPTH`]).
fn value_depth(v: &Value) -> usize {
    match measure(v, Limits::depth(MAX_DEPTH)) {
        Measure::Fits { depth, .. } => depth,
        _ => MAX_DEPTH + 1,
    }
}

/// An array index token: decimal digits without a leading zero, below `len` (or equal when
/// `append` allows the position after the last element).
fn index(token: &str, len: usize, append: bool) -> Option<usize> {
    if token.is_empty()
        || !token.bytes().all(|b| b.is_ascii_digit())
        || (token.len() > 1 && token.starts_with('0'))
    {
        return None;
    }
    let i: usize = token.parse().ok()?;
    (i < len || (append && i == len)).then_some(i)
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, token| match v {
        Value::Object(m) => m.get(token),
        Value::Array(a) => index(token, a.len(), false).and_then(|i| a.get(i)),
        _ => None,
    })
}

fn get_mut<'a>(doc: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(doc, |v, token| match v {
        Value::Object(m) => m.get_mut(token),
        Value::Array(a) => index(token, a.len(), false).and_then(|i| a.get_mut(i)),
        _ => None,
    })
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent_path)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent_path) {
        Some(Value::Object(m)) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Some(Value::Array(a)) if last == "-" => {
            a.push(value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let i = index(last, a.len(), true)
                .ok_or_else(|| format!("{last:?} is not an index of a list of {}", a.len()))?;
            a.insert(i, value);
            Ok(())
        }
        Some(_) => Err("the parent of the path is not an object or a list".into()),
        None => Err("the parent of the path does not exist".into()),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, String> {
    let Some((last, parent_path)) = path.split_last() else {
        return Err("the whole document cannot be removed".into());
    };
    match get_mut(doc, parent_path) {
        // `shift_remove` keeps the order of the remaining keys, as upstream's output has it.
        Some(Value::Object(m)) => m
            .shift_remove(last.as_str())
            .ok_or_else(|| "the path does not exist".to_string()),
        Some(Value::Array(a)) => match index(last, a.len(), false) {
            Some(i) => Ok(a.remove(i)),
            None => Err("the path does not exist".into()),
        },
        _ => Err("the path does not exist".into()),
    }
}

pub(crate) fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"replicas": 1, "list": [1, 2]}})
    }

    fn apply(doc: &Value, patch: &[u8]) -> Result<Value, PatchError> {
        let patch: Value = serde_json::from_slice(patch)
            .map_err(|e| PatchError::Malformed(format!("the body is not JSON: {e}")))?;
        json_patch(doc, &patch)
    }

    #[test]
    fn operations_apply() {
        let patch = br#"[
            {"op": "test", "path": "/spec/replicas", "value": 1},
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/metadata/labels/y", "value": "2"},
            {"op": "remove", "path": "/metadata/labels/x"},
            {"op": "add", "path": "/spec/list/-", "value": 3},
            {"op": "add", "path": "/spec/list/0", "value": 0},
            {"op": "copy", "from": "/metadata/name", "path": "/spec/name"},
            {"op": "move", "from": "/spec/name", "path": "/spec/moved"},
            {"op": "add", "path": "/spec/a~1b", "value": "slash"},
            {"op": "test", "path": "/spec/a~1b", "value": "slash"}
        ]"#;
        let out = apply(&doc(), patch).unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"name": "a", "labels": {"y": "2"}},
                   "spec": {"replicas": 3, "list": [0, 1, 2, 3], "moved": "a", "a/b": "slash"}})
        );
    }

    #[test]
    fn errors_are_classified() {
        type Check = fn(&PatchError) -> bool;
        let cases: &[(&[u8], Check)] = &[
            (b"not json", |e| matches!(e, PatchError::Malformed(_))),
            (br#"{"op": "add"}"#, |e| {
                matches!(e, PatchError::Malformed(_))
            }),
            (br#"[{"op": "frobnicate", "path": "/a"}]"#, |e| {
                matches!(e, PatchError::Malformed(_))
            }),
            (br#"[{"op": "add", "path": "a", "value": 1}]"#, |e| {
                matches!(e, PatchError::Malformed(_))
            }),
            (br#"[{"op": "add", "path": "/a"}]"#, |e| {
                matches!(e, PatchError::Malformed(_))
            }),
            (
                br#"[{"op": "test", "path": "/spec/replicas", "value": 2}]"#,
                |e| matches!(e, PatchError::Unapplicable(m) if m.contains("test") && m.contains("/spec/replicas")),
            ),
            (br#"[{"op": "remove", "path": "/spec/missing"}]"#, |e| {
                matches!(e, PatchError::Unapplicable(_))
            }),
            (br#"[{"op": "remove", "path": ""}]"#, |e| {
                matches!(e, PatchError::Unapplicable(_))
            }),
            (
                br#"[{"op": "add", "path": "/no/parent", "value": 1}]"#,
                |e| matches!(e, PatchError::Unapplicable(_)),
            ),
            (
                br#"[{"op": "add", "path": "/spec/list/01", "value": 1}]"#,
                |e| matches!(e, PatchError::Unapplicable(_)),
            ),
            (
                br#"[{"op": "add", "path": "/spec/list/3", "value": 1}]"#,
                |e| matches!(e, PatchError::Unapplicable(_)),
            ),
            (
                br#"[{"op": "move", "from": "/spec", "path": "/spec/x"}]"#,
                |e| matches!(e, PatchError::Unapplicable(_)),
            ),
            (br#"[{"op": "replace", "path": "", "value": [1]}]"#, |e| {
                matches!(e, PatchError::NotAnObject(_))
            }),
        ];
        for (patch, check) in cases {
            let err = apply(&doc(), patch).unwrap_err();
            assert!(check(&err), "{}: {err:?}", String::from_utf8_lossy(patch));
        }
    }

    #[test]
    fn failed_patch_leaves_input_untouched() {
        let d = doc();
        let patch = br#"[{"op": "replace", "path": "/spec/replicas", "value": 9},
                         {"op": "test", "path": "/spec/replicas", "value": 1}]"#;
        assert!(apply(&d, patch).is_err());
        assert_eq!(d, doc());
    }

    #[test]
    fn deep_patch_is_refused() {
        let mut v = json!(1);
        for _ in 0..(MAX_DEPTH + 5) {
            v = json!([v]);
        }
        let patch = json!([{"op": "add", "path": "/spec/deep", "value": v}]);
        assert_eq!(
            json_patch(&doc(), &patch),
            Err(PatchError::TooDeep(MAX_DEPTH))
        );
    }

    /// The attack: each op shallow, the result ever deeper (nest the document into itself).
    #[test]
    fn nesting_by_add_and_move_is_bounded() {
        let mut ops = vec![json!({"op": "add", "path": "/spec/n", "value": {}})];
        for _ in 0..1000 {
            ops.push(json!({"op": "add", "path": "/t", "value": {}}));
            ops.push(json!({"op": "move", "from": "/spec/n", "path": "/t/n"}));
            ops.push(json!({"op": "move", "from": "/t", "path": "/spec/n"}));
        }
        let err = json_patch(&doc(), &Value::Array(ops)).unwrap_err();
        assert!(
            matches!(&err, PatchError::Unapplicable(m) if m.contains("nested more than 100")),
            "{err:?}"
        );
        // Nested by `add` with a path into the previous value.
        let mut ops = Vec::new();
        let mut path = String::from("/spec");
        for _ in 0..200 {
            path.push_str("/a");
            ops.push(json!({"op": "add", "path": path, "value": {}}));
        }
        let err = json_patch(&doc(), &Value::Array(ops)).unwrap_err();
        assert!(matches!(err, PatchError::Unapplicable(_)), "{err:?}");
        // Arrays instead of objects.
        let mut ops = Vec::new();
        let mut path = String::from("/spec/list");
        for _ in 0..200 {
            ops.push(json!({"op": "add", "path": format!("{path}/0"), "value": []}));
            path.push_str("/0");
        }
        let err = json_patch(&doc(), &Value::Array(ops)).unwrap_err();
        assert!(matches!(err, PatchError::Unapplicable(_)), "{err:?}");
    }

    /// The attack: 30 self-copies double the document each time.
    #[test]
    fn self_copies_are_capped() {
        let mut d = doc();
        d["spec"]["blob"] = json!("x".repeat(1000));
        let mut ops = vec![json!({"op": "add", "path": "/spec/c", "value": {}})];
        for i in 0..30 {
            ops.push(json!({"op": "copy", "from": "/spec", "path": format!("/spec/c/{i}")}));
        }
        let err = json_patch(&d, &Value::Array(ops)).unwrap_err();
        assert!(
            matches!(&err, PatchError::Unapplicable(m) if m.contains("copy")),
            "{err:?}"
        );
    }

    #[test]
    fn too_many_operations() {
        let ops =
            vec![json!({"op": "test", "path": "/spec/replicas", "value": 1}); MAX_OPERATIONS + 1];
        assert!(matches!(
            json_patch(&doc(), &Value::Array(ops)),
            Err(PatchError::TooLarge(_))
        ));
        let ops = vec![json!({"op": "test", "path": "/spec/replicas", "value": 1}); MAX_OPERATIONS];
        assert!(json_patch(&doc(), &Value::Array(ops)).is_ok());
    }

    #[test]
    fn moves_near_the_limit_are_exact() {
        // A 60-deep value moved 30 levels down is fine (90), 50 down is not (110).
        let mut v = json!(1);
        for _ in 0..60 {
            v = json!({ "a": v });
        }
        let mut d = doc();
        d["deep"] = v;
        let down = |n: usize| format!("/spec{}", "/b".repeat(n - 1));
        let mut ops = Vec::new();
        let mut p = String::from("/spec");
        for _ in 0..48 {
            p.push_str("/b");
            ops.push(json!({"op": "add", "path": p, "value": {}}));
        }
        let mut ok = ops.clone();
        ok.push(json!({"op": "move", "from": "/deep", "path": format!("{}/x", down(29))}));
        let out = json_patch(&d, &Value::Array(ok)).unwrap();
        assert!(!too_deep(&out, MAX_DEPTH));
        ops.push(json!({"op": "move", "from": "/deep", "path": format!("{}/x", down(49))}));
        assert!(json_patch(&d, &Value::Array(ops)).is_err());
    }
}
