//! Typed comparison of two versions of an object, producing the sets of
//! fields added, modified and removed — structured-merge-diff's
//! `TypedValue.Compare` and `ToFieldSet`, which field ownership is built on.
//!
//! How a value is split into owned fields depends on its type (see
//! [`Shape`]): scalars, atomic lists and atomic maps are single leaves;
//! structs and granular maps are split per key; list-maps per item (the item
//! itself is a member, `.` in FieldsV1, and its fields are members below
//! it); sets per value.  An empty object is a leaf, as upstream's
//! `"f:resources": {}` shows.  Without a type (custom resources) objects are
//! split per key and lists are atomic.
//!
//! Invariant: callers have bounded the nesting depth of both values
//! (`MAX_DEPTH`), so the recursion here is bounded.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::fieldpath::{FieldSet, PathElement};
use super::schema::{ListKind, TypeRef};

/// How a value is walked for ownership purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Leaf,
    Object,
    ListSet,
    ListMap,
}

pub(crate) fn shape(ty: Option<TypeRef>, v: &Value) -> Shape {
    match (ty, v) {
        (Some(t), _) if t.is_atomic() => Shape::Leaf,
        (Some(t), Value::Array(_)) => match t.list_kind() {
            Some(ListKind::Set) => Shape::ListSet,
            Some(ListKind::Map(_)) => Shape::ListMap,
            _ => Shape::Leaf,
        },
        (Some(t), Value::Object(_)) if t.is_struct() || t.map_atomic() == Some(false) => {
            Shape::Object
        }
        (None, Value::Object(_)) => Shape::Object,
        _ => Shape::Leaf,
    }
}

/// Type of an object's field; unknown fields are untyped.
pub(crate) fn child_type(ty: Option<TypeRef>, field: &str) -> Option<TypeRef> {
    ty.and_then(|t| t.field(field))
}

/// The path element identifying a list item.  List-map keys missing from
/// the item take their schema default; keys with neither are left out.
pub(crate) fn item_element(ty: Option<TypeRef>, shape: Shape, item: &Value) -> PathElement {
    if shape == Shape::ListMap {
        if let (Some(t), Value::Object(obj)) = (ty, item) {
            if let Some(ListKind::Map(keys)) = t.list_kind() {
                return PathElement::key(keys.iter().filter_map(|k| {
                    obj.get(k)
                        .or_else(|| t.key_default(k))
                        .map(|v| (k.clone(), v.clone()))
                }));
            }
        }
    }
    PathElement::value(item)
}

/// Field changes between two versions of a value.
#[derive(Debug, Default)]
pub(crate) struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    /// Fields whose value the change sets: what ownership is taken of.
    pub fn changed(&self) -> FieldSet {
        let mut s = self.added.clone();
        s.union(&self.modified);
        s
    }
}

/// All the fields a value sets.
pub(crate) fn field_set(v: &Value, ty: Option<TypeRef>) -> FieldSet {
    let mut set = FieldSet::new();
    collect(v, ty, &mut Vec::new(), &mut set);
    set
}

pub(crate) fn compare(old: &Value, new: &Value, ty: Option<TypeRef>) -> Comparison {
    let mut out = Comparison::default();
    walk(Some(old), Some(new), ty, &mut Vec::new(), &mut out);
    out
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn collect(v: &Value, ty: Option<TypeRef>, path: &mut Vec<PathElement>, set: &mut FieldSet) {
    let sh = shape(ty, v);
    if sh == Shape::Leaf || is_empty_container(v) {
        set.insert(path);
        return;
    }
    match (sh, v) {
        (Shape::Object, Value::Object(m)) => {
            for (k, c) in m {
                path.push(PathElement::Field(k.clone()));
                collect(c, child_type(ty, k), path, set);
                path.pop();
            }
        }
        (Shape::ListSet, Value::Array(items)) => {
            for item in items {
                path.push(PathElement::value(item));
                set.insert(path);
                path.pop();
            }
        }
        (Shape::ListMap, Value::Array(items)) => {
            let elem = ty.and_then(|t| t.element());
            for item in items {
                path.push(item_element(ty, sh, item));
                set.insert(path);
                if let Value::Object(fields) = item {
                    for (k, c) in fields {
                        path.push(PathElement::Field(k.clone()));
                        collect(c, child_type(elem, k), path, set);
                        path.pop();
                    }
                }
                path.pop();
            }
        }
        _ => set.insert(path),
    }
}

fn walk(
    old: Option<&Value>,
    new: Option<&Value>,
    ty: Option<TypeRef>,
    path: &mut Vec<PathElement>,
    out: &mut Comparison,
) {
    let (o, n) = match (old, new) {
        (None, None) => return,
        (Some(o), None) => return collect(o, ty, path, &mut out.removed),
        (None, Some(n)) => return collect(n, ty, path, &mut out.added),
        (Some(o), Some(n)) => (o, n),
    };
    let (so, sn) = (shape(ty, o), shape(ty, n));
    let leaf_o = so == Shape::Leaf || is_empty_container(o);
    let leaf_n = sn == Shape::Leaf || is_empty_container(n);
    if leaf_o && leaf_n {
        if o != n {
            out.modified.insert(path);
        }
        return;
    }
    if so != sn || leaf_o || leaf_n {
        collect(o, ty, path, &mut out.removed);
        collect(n, ty, path, &mut out.added);
        return;
    }
    match (so, o, n) {
        (Shape::Object, Value::Object(om), Value::Object(nm)) => {
            for (k, nv) in nm {
                path.push(PathElement::Field(k.clone()));
                walk(om.get(k), Some(nv), child_type(ty, k), path, out);
                path.pop();
            }
            for (k, ov) in om {
                if !nm.contains_key(k) {
                    path.push(PathElement::Field(k.clone()));
                    collect(ov, child_type(ty, k), path, &mut out.removed);
                    path.pop();
                }
            }
        }
        (Shape::ListSet, Value::Array(oi), Value::Array(ni)) => {
            // Hashed lookups keep this linear in the lengths of both lists.
            let old_set: Vec<PathElement> = oi.iter().map(PathElement::value).collect();
            let new_set: Vec<PathElement> = ni.iter().map(PathElement::value).collect();
            let old_index: HashSet<&PathElement> = old_set.iter().collect();
            let new_index: HashSet<&PathElement> = new_set.iter().collect();
            for e in &new_set {
                if !old_index.contains(e) {
                    path.push(e.clone());
                    out.added.insert(path);
                    path.pop();
                }
            }
            for e in &old_set {
                if !new_index.contains(e) {
                    path.push(e.clone());
                    out.removed.insert(path);
                    path.pop();
                }
            }
        }
        (Shape::ListMap, Value::Array(oi), Value::Array(ni)) => {
            let elem = ty.and_then(|t| t.element());
            let olds: Vec<(PathElement, &Value)> =
                oi.iter().map(|i| (item_element(ty, so, i), i)).collect();
            let news: Vec<(PathElement, &Value)> =
                ni.iter().map(|i| (item_element(ty, sn, i), i)).collect();
            let mut old_index: HashMap<&PathElement, &Value> = HashMap::with_capacity(olds.len());
            for (e, v) in &olds {
                old_index.entry(e).or_insert(*v);
            }
            let new_index: HashSet<&PathElement> = news.iter().map(|(e, _)| e).collect();
            for (e, nv) in &news {
                path.push(e.clone());
                match old_index.get(e) {
                    Some(ov) => walk_item(ov, nv, elem, path, out),
                    None => {
                        out.added.insert(path);
                        collect_item(nv, elem, path, &mut out.added);
                    }
                }
                path.pop();
            }
            for (e, ov) in &olds {
                if !new_index.contains(e) {
                    path.push(e.clone());
                    out.removed.insert(path);
                    collect_item(ov, elem, path, &mut out.removed);
                    path.pop();
                }
            }
        }
        _ => {
            if o != n {
                out.modified.insert(path);
            }
        }
    }
}

/// The fields of a list-map item (the item member itself is the caller's).
fn collect_item(
    item: &Value,
    elem: Option<TypeRef>,
    path: &mut Vec<PathElement>,
    set: &mut FieldSet,
) {
    if let Value::Object(fields) = item {
        for (k, c) in fields {
            path.push(PathElement::Field(k.clone()));
            collect(c, child_type(elem, k), path, set);
            path.pop();
        }
    }
}

fn walk_item(
    o: &Value,
    n: &Value,
    elem: Option<TypeRef>,
    path: &mut Vec<PathElement>,
    out: &mut Comparison,
) {
    match (o, n) {
        (Value::Object(om), Value::Object(nm)) => {
            for (k, nv) in nm {
                path.push(PathElement::Field(k.clone()));
                walk(om.get(k), Some(nv), child_type(elem, k), path, out);
                path.pop();
            }
            for (k, ov) in om {
                if !nm.contains_key(k) {
                    path.push(PathElement::Field(k.clone()));
                    collect(ov, child_type(elem, k), path, &mut out.removed);
                    path.pop();
                }
            }
        }
        _ => {
            if o != n {
                out.modified.insert(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fieldpath::path_string;
    use super::super::schema;
    use super::*;
    use serde_json::json;

    fn strings(set: &FieldSet) -> Vec<String> {
        set.paths().iter().map(|p| path_string(p)).collect()
    }

    fn deployment() -> Option<TypeRef> {
        schema::root("apps", "Deployment")
    }

    #[test]
    fn field_set_of_a_deployment() {
        let d = json!({
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{
                    "name": "web", "image": "nginx", "args": ["a", "b"],
                    "ports": [{"containerPort": 80}],
                    "resources": {}
                }]}}
            }
        });
        let got = strings(&field_set(&d, deployment()));
        let c = r#".spec.template.spec.containers[name="web"]"#;
        let want = vec![
            ".metadata.labels.app".to_string(),
            ".metadata.name".into(),
            ".spec.replicas".into(),
            ".spec.selector".into(),
            c.into(),
            format!("{c}.args"),
            format!("{c}.image"),
            format!("{c}.name"),
            format!(r#"{c}.ports[containerPort=80,protocol="TCP"]"#),
            format!(r#"{c}.ports[containerPort=80,protocol="TCP"].containerPort"#),
            format!("{c}.resources"),
        ];
        let mut want = want;
        want.sort();
        let mut got = got;
        got.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn compare_reports_each_kind_of_change() {
        let old = json!({
            "metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x", "y"]},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:1"},
                {"name": "old", "image": "busybox"}
            ]}}}
        });
        let new = json!({
            "metadata": {"labels": {"a": "1", "c": "3"}, "finalizers": ["y", "z"]},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:2"},
                {"name": "sidecar", "image": "envoy"}
            ]}}}
        });
        let cmp = compare(&old, &new, deployment());
        let c = ".spec.template.spec.containers";
        assert_eq!(
            strings(&cmp.added),
            vec![
                ".metadata.finalizers[=\"z\"]".to_string(),
                ".metadata.labels.c".into(),
                format!("{c}[name=\"sidecar\"]"),
                format!("{c}[name=\"sidecar\"].image"),
                format!("{c}[name=\"sidecar\"].name"),
            ]
        );
        assert_eq!(
            strings(&cmp.modified),
            vec![
                ".spec.replicas".to_string(),
                format!("{c}[name=\"web\"].image")
            ]
        );
        assert_eq!(
            strings(&cmp.removed),
            vec![
                ".metadata.finalizers[=\"x\"]".to_string(),
                ".metadata.labels.b".into(),
                format!("{c}[name=\"old\"]"),
                format!("{c}[name=\"old\"].image"),
                format!("{c}[name=\"old\"].name"),
            ]
        );
    }

    #[test]
    fn untyped_lists_are_atomic() {
        let old = json!({"spec": {"items": [1, 2], "x": {"y": 1}}});
        let new = json!({"spec": {"items": [1, 3], "x": {"y": 1}}});
        let cmp = compare(&old, &new, None);
        assert_eq!(strings(&cmp.modified), vec![".spec.items"]);
        assert!(cmp.added.is_empty() && cmp.removed.is_empty());
    }

    #[test]
    fn atomic_map_is_one_field() {
        let svc = schema::root("", "Service");
        let set = field_set(
            &json!({"spec": {"selector": {"app": "web", "tier": "fe"}}}),
            svc,
        );
        assert_eq!(strings(&set), vec![".spec.selector"]);
    }
}
