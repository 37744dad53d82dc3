//! Field paths and sets of field paths, and their `FieldsV1` encoding — the
//! vocabulary of `metadata.managedFields`.
//!
//! Copies structured-merge-diff's `fieldpath` package:
//! * a [`PathElement`] is a struct field (`f:name`), a list-map item
//!   identified by its keys (`k:{"name":"web"}`), a set item
//!   (`v:"example.com/finalizer"`) or a list index (`i:0`);
//! * a [`FieldSet`] is a trie of path elements whose nodes may be
//!   *members*; in `FieldsV1` a member with no children is `{}` and a member
//!   with children carries `".": {}` next to them;
//! * paths print as in conflict messages: `.spec.containers[name="web"].image`,
//!   `.metadata.finalizers[="x"]`, `.spec.ports[port=80,protocol="TCP"]`.
//!
//! Invariant: key and value elements hold *canonical JSON text* (serde_json
//! serialization, keys sorted by name), so equal values compare equal and
//! the order of elements — fields, then keys, then values, then indexes —
//! is the one upstream sorts by.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A struct field or map key.
    Field(String),
    /// A list-map item: (key field, canonical JSON of its value), sorted by key.
    Key(Vec<(String, String)>),
    /// A set item: canonical JSON of the value.
    Value(String),
    /// A list position (only for lists upstream cannot key; kept for parsing).
    Index(usize),
}

impl PathElement {
    /// A key element from (field, value) pairs in any order.
    pub fn key(pairs: impl IntoIterator<Item = (String, Value)>) -> PathElement {
        let mut fields: Vec<(String, String)> =
            pairs.into_iter().map(|(k, v)| (k, canonical(&v))).collect();
        fields.sort();
        PathElement::Key(fields)
    }

    /// A set-item element.
    pub fn value(v: &Value) -> PathElement {
        PathElement::Value(canonical(v))
    }

    fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(fields) => {
                // Built by hand so the key order is ours (sorted) whatever
                // map implementation serde_json was compiled with.
                let body: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", canonical(&Value::from(k.as_str()))))
                    .collect();
                format!("k:{{{}}}", body.join(","))
            }
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Result<PathElement, String> {
        let bad = || format!("invalid managedFields path element {s:?}");
        let (prefix, rest) = s.split_once(':').ok_or_else(bad)?;
        match prefix {
            "f" => Ok(PathElement::Field(rest.to_string())),
            "k" => match serde_json::from_str::<Value>(rest) {
                Ok(Value::Object(m)) => Ok(PathElement::key(m)),
                _ => Err(bad()),
            },
            "v" => serde_json::from_str::<Value>(rest)
                .map(|v| PathElement::value(&v))
                .map_err(|_| bad()),
            "i" => rest.parse().map(PathElement::Index).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(v) => write!(f, "[={v}]"),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// Canonical JSON text of a value: object keys sorted at every level.
pub(crate) fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sorted(v)).unwrap_or_default()
}

/// A path printed the way conflict messages print it.
pub fn path_string(path: &[PathElement]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// A set of field paths, stored as a trie.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `path` as a member.  The empty path is ignored: the object
    /// itself is never owned.
    pub fn insert(&mut self, path: &[PathElement]) {
        if let Some((first, rest)) = path.split_first() {
            let child = self.children.entry(first.clone()).or_default();
            if rest.is_empty() {
                child.member = true;
            } else {
                child.insert(rest);
            }
        }
    }

    pub fn contains(&self, path: &[PathElement]) -> bool {
        match path.split_first() {
            None => false,
            Some((first, rest)) => match self.children.get(first) {
                None => false,
                Some(c) if rest.is_empty() => c.member,
                Some(c) => c.contains(rest),
            },
        }
    }

    /// The sub-trie under one element (members relative to it).
    pub fn child(&self, e: &PathElement) -> Option<&FieldSet> {
        self.children.get(e)
    }

    pub(crate) fn children(&self) -> impl Iterator<Item = (&PathElement, &FieldSet)> {
        self.children.iter()
    }

    /// Whether this node itself is a member (meaningless at the root).
    pub(crate) fn is_member(&self) -> bool {
        self.member
    }

    /// No member anywhere.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (e, c) in &other.children {
            self.children.entry(e.clone()).or_default().union(c);
        }
    }

    /// Removes `path` as a member (exact: what lies below it stays), in place; nodes left
    /// with no member are pruned, as `difference` would leave them out.
    pub fn remove(&mut self, path: &[PathElement]) {
        self.remove_at(path, false);
    }

    /// Removes `path` and every member below it, in place (`recursive_difference` with one
    /// path, without copying the rest of the set).
    pub fn remove_tree(&mut self, path: &[PathElement]) {
        self.remove_at(path, true);
    }

    fn remove_at(&mut self, path: &[PathElement], tree: bool) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let Some(child) = self.children.get_mut(first) else {
            return;
        };
        match (rest.is_empty(), tree) {
            (true, true) => {
                self.children.remove(first);
                return;
            }
            (true, false) => child.member = false,
            (false, _) => child.remove_at(rest, tree),
        }
        if child.is_empty() {
            self.children.remove(first);
        }
    }

    /// Members of `self` that are not members of `other` (exact paths: a
    /// member of `other` does not remove the members below it).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (e, c) in &self.children {
            let d = match other.children.get(e) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(e.clone(), d);
            }
        }
        out
    }

    /// Members of `self` that are neither members of `other` nor below one.
    pub fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (e, c) in &self.children {
            let d = match other.children.get(e) {
                Some(o) if o.member => continue,
                Some(o) => c.recursive_difference(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(e.clone(), d);
            }
        }
        out
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (e, c) in &self.children {
            if let Some(o) = other.children.get(e) {
                let i = c.intersection(o);
                if !i.is_empty() {
                    out.children.insert(e.clone(), i);
                }
            }
        }
        out
    }

    /// Every member path, in sorted order.
    pub fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect(&mut prefix, &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        if self.member && !prefix.is_empty() {
            out.push(prefix.clone());
        }
        for (e, c) in &self.children {
            prefix.push(e.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The `fieldsV1` JSON of this set.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".to_string(), Value::Object(Map::new()));
        }
        for (e, c) in &self.children {
            if c.is_empty() {
                continue;
            }
            map.insert(e.encode(), c.to_fields_v1());
        }
        Value::Object(map)
    }

    /// Parses `fieldsV1` JSON.  `depth` bounds the recursion for hostile input.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        Self::decode(v, 0)
    }

    fn decode(v: &Value, depth: usize) -> Result<FieldSet, String> {
        if depth > super::MAX_DEPTH {
            return Err("managedFields nested too deep".into());
        }
        let map = v
            .as_object()
            .ok_or_else(|| format!("fieldsV1 must be an object, found {v}"))?;
        let mut set = FieldSet::default();
        for (k, child) in map {
            if k == "." {
                set.member = true;
                continue;
            }
            let e = PathElement::decode(k)?;
            let mut c = Self::decode(child, depth + 1)?;
            // A leaf `{}` is a member; a node with children is one only
            // if it says so with ".".
            if c.children.is_empty() {
                c.member = true;
            }
            set.children.insert(e, c);
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(name: &str) -> PathElement {
        PathElement::Field(name.into())
    }

    fn name_key(name: &str) -> PathElement {
        PathElement::key([("name".to_string(), json!(name))])
    }

    #[test]
    fn fields_v1_round_trip() {
        let v = json!({
            "f:metadata": {"f:labels": {"f:app": {}}, "f:finalizers": {"v:\"a/b\"": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}},
                }}},
                "f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}},
            }
        });
        let set = FieldSet::from_fields_v1(&v).unwrap();
        assert_eq!(set.to_fields_v1(), v);
        let web = [
            f("spec"),
            f("template"),
            f("spec"),
            f("containers"),
            name_key("web"),
        ];
        assert!(set.contains(&web));
        assert!(set.contains(&[web.as_slice(), &[f("image")]].concat()));
        assert!(!set.contains(&[f("spec"), f("template")]));
        assert!(set.contains(&[
            f("metadata"),
            f("finalizers"),
            PathElement::value(&json!("a/b"))
        ]));
    }

    #[test]
    fn key_order_and_printing() {
        let k = PathElement::key([
            ("protocol".to_string(), json!("TCP")),
            ("containerPort".to_string(), json!(80)),
        ]);
        assert_eq!(k.encode(), r#"k:{"containerPort":80,"protocol":"TCP"}"#);
        assert_eq!(k.to_string(), r#"[containerPort=80,protocol="TCP"]"#);
        let p = [f("spec"), f("containers"), name_key("web"), f("image")];
        assert_eq!(path_string(&p), r#".spec.containers[name="web"].image"#);
        assert_eq!(PathElement::value(&json!("x")).to_string(), r#"[="x"]"#);
    }

    #[test]
    fn set_algebra() {
        let mut a = FieldSet::new();
        a.insert(&[f("spec"), f("replicas")]);
        a.insert(&[f("spec"), f("paused")]);
        a.insert(&[f("status")]);
        a.insert(&[f("status"), f("replicas")]);
        let mut b = FieldSet::new();
        b.insert(&[f("spec"), f("replicas")]);
        b.insert(&[f("status")]);

        let d = a.difference(&b);
        assert_eq!(
            d.paths(),
            vec![
                vec![f("spec"), f("paused")],
                vec![f("status"), f("replicas")]
            ]
        );
        let rd = a.recursive_difference(&b);
        assert_eq!(rd.paths(), vec![vec![f("spec"), f("paused")]]);
        let i = a.intersection(&b);
        assert_eq!(
            i.paths(),
            vec![vec![f("spec"), f("replicas")], vec![f("status")]]
        );
        let mut u = b.clone();
        u.union(&d);
        assert_eq!(u, a);
        assert!(FieldSet::new().is_empty());
        assert!(a.difference(&a).is_empty());
    }

    #[test]
    fn bad_fields_v1_is_rejected() {
        for bad in [
            json!([]),
            json!({"x:y": {}}),
            json!({"k:notjson": {}}),
            json!({"f:a": 1}),
        ] {
            assert!(FieldSet::from_fields_v1(&bad).is_err(), "{bad}");
        }
    }
}
