//! `metadata.managedFields`: decoding and encoding the entries, and the
//! bookkeeping of ordinary writes ([`record_update`]).
//!
//! Copies `apimachinery/pkg/util/managedfields/internal`:
//! * an entry is identified by manager, operation, subresource and — for
//!   `Update` only — apiVersion (`BuildManagerIdentifier`); entries with the
//!   same identity are one owner;
//! * the fields an update changes move to the updating manager, whatever
//!   other managers owned them (updates are always forced); fields it
//!   removes are dropped from every owner; owners left with nothing are
//!   dropped; the updater's `time` is refreshed only if it took fields
//!   (`managedFieldsUpdater`);
//! * never tracked (`stripMetaManager` and the main resource's reset
//!   fields): `apiVersion`, `kind`, `metadata.{name, namespace,
//!   creationTimestamp, selfLink, uid, clusterName, generation,
//!   managedFields, resourceVersion}`, and all of `status` — the main
//!   resource never owns status, which is written through its subresource;
//! * decoding keeps one entry per identity (the last one), as upstream's map
//!   does, and refuses operations other than `Apply` and `Update`;
//! * entries are sorted like `sortEncodedManagedFields`: Apply before
//!   Update, then by time, manager, apiVersion, subresource.
//!
//! If the incoming object carries a non-empty `managedFields`, it is taken
//! as the new starting point (that is how a client resets ownership, e.g.
//! with `[{}]`); otherwise the live object's entries are used.

use serde_json::{json, Map, Value};

use super::compare::{compare, field_set};
use super::fieldpath::{FieldSet, PathElement};
use super::schema::{self, TypeRef};
use super::{too_deep, MAX_DEPTH};

/// One decoded `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: String,
    pub set: FieldSet,
}

impl Entry {
    pub fn same_owner(
        &self,
        manager: &str,
        operation: &str,
        api_version: &str,
        subresource: &str,
    ) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource == subresource
            && (operation == "Apply" || self.api_version == api_version)
    }
}

/// Decodes `metadata.managedFields` of `obj`; absent or null is empty.
pub(crate) fn decode(obj: &Value) -> Result<Vec<Entry>, String> {
    let Some(list) = obj.pointer("/metadata/managedFields") else {
        return Ok(Vec::new());
    };
    let list = match list {
        Value::Null => return Ok(Vec::new()),
        Value::Array(l) => l,
        _ => return Err("metadata.managedFields must be a list".into()),
    };
    let text = |e: &Value, k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let entries = list
        .iter()
        .map(|e| {
            if !e.is_object() {
                return Err("metadata.managedFields entries must be objects".to_string());
            }
            let operation = text(e, "operation");
            // Empty is tolerated: `[{}]` is how clients reset ownership (dropped as empty).
            if !matches!(operation.as_str(), "" | "Apply" | "Update") {
                return Err("managedFields operation must be `Apply` or `Update`".to_string());
            }
            let fields_type = text(e, "fieldsType");
            if !fields_type.is_empty() && fields_type != "FieldsV1" {
                return Err(format!(
                    "unsupported managedFields fieldsType {fields_type:?}"
                ));
            }
            let set = match e.get("fieldsV1") {
                None | Some(Value::Null) => FieldSet::new(),
                Some(v) => FieldSet::from_fields_v1(v)?,
            };
            Ok(Entry {
                manager: text(e, "manager"),
                operation,
                api_version: text(e, "apiVersion"),
                time: e.get("time").and_then(Value::as_str).map(str::to_owned),
                subresource: text(e, "subresource"),
                set,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(normalize(entries))
}

/// One entry per owner identity, as upstream's `decodeManagedFields`, which decodes into a
/// map keyed by `BuildManagerIdentifier` (manager, operation, subresource, and apiVersion for
/// `Update` only): the last entry of an identity wins. So a crafted list can never leave two
/// Apply entries for one manager. Linear in the number of entries.
fn normalize(entries: Vec<Entry>) -> Vec<Entry> {
    let mut index: std::collections::HashMap<(String, String, String, String), usize> =
        std::collections::HashMap::with_capacity(entries.len());
    let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
    for e in entries {
        let version = if e.operation == "Apply" {
            String::new()
        } else {
            e.api_version.clone()
        };
        let id = (
            e.manager.clone(),
            e.operation.clone(),
            version,
            e.subresource.clone(),
        );
        match index.get(&id) {
            Some(&i) => out[i] = e,
            None => {
                index.insert(id, out.len());
                out.push(e);
            }
        }
    }
    out
}

/// Writes `entries` (dropping empty ones, sorted) into `obj.metadata`.
pub(crate) fn store(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let encoded: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut m = Map::new();
            m.insert("manager".into(), json!(e.manager));
            m.insert("operation".into(), json!(e.operation));
            m.insert("apiVersion".into(), json!(e.api_version));
            if let Some(t) = &e.time {
                m.insert("time".into(), json!(t));
            }
            m.insert("fieldsType".into(), json!("FieldsV1"));
            m.insert("fieldsV1".into(), e.set.to_fields_v1());
            if !e.subresource.is_empty() {
                m.insert("subresource".into(), json!(e.subresource));
            }
            Value::Object(m)
        })
        .collect();
    let Some(obj) = obj.as_object_mut() else {
        return;
    };
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(meta) = meta.as_object_mut() {
        if encoded.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(encoded));
        }
    }
}

/// `obj` without `metadata.managedFields`, which is never compared or merged.
pub(crate) fn without_managed_fields(obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    out
}

/// Removes the fields that are never owned (see the module docs), in place: the set is
/// usually built for this call alone.
pub(crate) fn strip(mut set: FieldSet) -> FieldSet {
    let f = |n: &str| PathElement::Field(n.to_string());
    set.remove(&[f("apiVersion")]);
    set.remove(&[f("kind")]);
    set.remove(&[f("metadata")]);
    for field in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        set.remove(&[f("metadata"), f(field)]);
    }
    set.remove_tree(&[f("status")]);
    set
}

/// The type of an object from its own `apiVersion` and `kind`.
pub(crate) fn type_of(obj: &Value) -> Option<TypeRef> {
    let api_version = obj.get("apiVersion")?.as_str()?;
    let kind = obj.get("kind")?.as_str()?;
    schema::root_for(api_version, kind)
}

/// Records in `new.metadata.managedFields` the changes from `old` to `new`
/// made by `manager` through an ordinary write (create: `old` is `None`;
/// update; json/merge/strategic patch).  `operation` is normally `"Update"`;
/// `api_version` is the version the client used; `now` is an RFC 3339 time.
///
/// Like upstream's `UpdateNoErrors`, this never fails: an object whose
/// managed fields cannot be decoded gets its ownership rebuilt from this
/// write, and an object too deep to walk is left untouched.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    operation: &str,
    api_version: &str,
    now: &str,
) {
    if too_deep(new, MAX_DEPTH) || old.is_some_and(|o| too_deep(o, MAX_DEPTH)) || !new.is_object() {
        return;
    }
    let mut entries = match decode(new) {
        Ok(e) if !e.is_empty() => e,
        _ => old.and_then(|o| decode(o).ok()).unwrap_or_default(),
    };
    let ty = type_of(new);
    // The object without its managedFields; most writes carry none, so no copy is made then
    // (a copy of every created object showed in the pod-create profile, issue 13 item 8).
    let copy;
    let new_obj = if new["metadata"].get("managedFields").is_some() {
        copy = without_managed_fields(new);
        &copy
    } else {
        &*new
    };
    let (changed, removed) = match old {
        // A create sets every field it holds and removes none: the walk against `{}` would
        // find exactly that, at the cost of a second tree.
        None => (strip(field_set(new_obj, ty)), FieldSet::new()),
        Some(old) => {
            let cmp = compare(&without_managed_fields(old), new_obj, ty);
            (strip(cmp.changed()), cmp.removed)
        }
    };
    for e in &mut entries {
        e.set = e.set.difference(&changed).difference(&removed);
    }
    if !changed.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.same_owner(manager, operation, api_version, ""))
        {
            Some(e) => {
                e.set.union(&changed);
                e.time = Some(now.to_string());
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: operation.to_string(),
                api_version: api_version.to_string(),
                time: Some(now.to_string()),
                subresource: String::new(),
                set: changed,
            }),
        }
    }
    store(new, entries);
}

#[cfg(test)]
mod tests {
    use super::super::fieldpath::path_string;
    use super::*;

    /// The in-place `strip` keeps exactly what the set difference it replaced kept.
    #[test]
    fn strip_in_place_equals_the_set_difference() {
        let obj = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"a": "b"},
                         "managedFields": [], "generation": 1},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Pending", "conditions": [{"type": "Ready"}]},
        });
        let bare = json!({"apiVersion": "v1", "kind": "Pod",
                          "metadata": {"name": "p", "uid": "u"}, "status": {"phase": "x"}});
        for o in [&obj, &bare] {
            let set = field_set(o, type_of(o));
            let f = |n: &str| PathElement::Field(n.to_string());
            let mut meta = FieldSet::new();
            for p in ["apiVersion", "kind", "metadata"] {
                meta.insert(&[f(p)]);
            }
            for p in ["name", "namespace", "uid", "generation", "managedFields"] {
                meta.insert(&[f("metadata"), f(p)]);
            }
            let mut reset = FieldSet::new();
            reset.insert(&[f("status")]);
            let want = set.difference(&meta).recursive_difference(&reset);
            let got = strip(set);
            assert_eq!(got.to_fields_v1(), want.to_fields_v1(), "{o}");
        }
    }

    const T1: &str = "2024-01-01T00:00:00Z";
    const T2: &str = "2024-01-02T00:00:00Z";

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "u1",
                         "resourceVersion": "5", "generation": 1,
                         "creationTimestamp": T1, "labels": {"app": "web"}},
            "spec": {"replicas": replicas,
                     "template": {"spec": {"containers": [{"name": "web", "image": image}]}}},
            "status": {"replicas": replicas}
        })
    }

    fn owned(obj: &Value) -> Vec<(String, Vec<String>)> {
        decode(obj)
            .unwrap()
            .into_iter()
            .map(|e| {
                (
                    format!("{}/{}", e.manager, e.operation),
                    e.set.paths().iter().map(|p| path_string(p)).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn create_owns_everything_but_reset_fields() {
        let mut obj = deployment(1, "nginx");
        record_update(None, &mut obj, "kubectl-create", "Update", "apps/v1", T1);
        let mf = &obj["metadata"]["managedFields"];
        assert_eq!(mf.as_array().unwrap().len(), 1);
        assert_eq!(mf[0]["manager"], "kubectl-create");
        assert_eq!(mf[0]["operation"], "Update");
        assert_eq!(mf[0]["apiVersion"], "apps/v1");
        assert_eq!(mf[0]["time"], T1);
        assert_eq!(mf[0]["fieldsType"], "FieldsV1");
        assert_eq!(
            mf[0]["fieldsV1"],
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}
            })
        );
    }

    #[test]
    fn update_moves_ownership_and_merges_same_manager() {
        let mut v1 = deployment(1, "nginx");
        record_update(None, &mut v1, "kubectl-create", "Update", "apps/v1", T1);

        // kubectl scale: replicas moves to the scaler
        let mut v2 = deployment(3, "nginx");
        v2["metadata"]["managedFields"] = json!(null);
        record_update(Some(&v1), &mut v2, "kubectl-scale", "Update", "apps/v1", T2);
        let o = owned(&v2);
        assert_eq!(o.len(), 2);
        assert!(!o[0].1.contains(&".spec.replicas".to_string()), "{o:?}");
        assert_eq!(
            o[1],
            (
                "kubectl-scale/Update".to_string(),
                vec![".spec.replicas".to_string()]
            )
        );
        assert_eq!(
            v2["metadata"]["managedFields"][0]["time"], T1,
            "untouched owner keeps its time"
        );

        // same manager again, another field: one entry, union of both
        let mut v3 = v2.clone();
        v3["metadata"]["labels"]["tier"] = json!("fe");
        record_update(Some(&v2), &mut v3, "kubectl-scale", "Update", "apps/v1", T2);
        let o = owned(&v3);
        assert_eq!(o.len(), 2);
        assert_eq!(
            o[1].1,
            vec![".metadata.labels.tier".to_string(), ".spec.replicas".into()]
        );

        // a write that changes nothing touches nothing
        let mut v4 = v3.clone();
        record_update(
            Some(&v3),
            &mut v4,
            "other",
            "Update",
            "apps/v1",
            "2030-01-01T00:00:00Z",
        );
        assert_eq!(v4, v3);
    }

    #[test]
    fn removed_fields_leave_every_owner_and_empty_owners_go() {
        let mut v1 = deployment(1, "nginx");
        record_update(None, &mut v1, "a", "Update", "apps/v1", T1);
        let mut v2 = v1.clone();
        v2["metadata"]["labels"]["x"] = json!("1");
        record_update(Some(&v1), &mut v2, "b", "Update", "apps/v1", T2);
        let mut v3 = v2.clone();
        v3["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("x");
        record_update(Some(&v2), &mut v3, "a", "Update", "apps/v1", T2);
        let managers: Vec<String> = owned(&v3).into_iter().map(|(m, _)| m).collect();
        assert_eq!(managers, vec!["a/Update"]);
    }

    #[test]
    fn status_changes_are_not_owned_by_the_main_resource() {
        let mut v1 = deployment(1, "nginx");
        record_update(None, &mut v1, "a", "Update", "apps/v1", T1);
        let mut v2 = v1.clone();
        v2["status"]["replicas"] = json!(7);
        record_update(Some(&v1), &mut v2, "b", "Update", "apps/v1", T2);
        assert_eq!(owned(&v2).len(), 1);
    }

    #[test]
    fn client_can_reset_managed_fields() {
        let mut v1 = deployment(1, "nginx");
        record_update(None, &mut v1, "a", "Update", "apps/v1", T1);
        let mut v2 = v1.clone();
        v2["metadata"]["managedFields"] = json!([{}]);
        record_update(Some(&v1), &mut v2, "b", "Update", "apps/v1", T2);
        assert!(v2["metadata"].get("managedFields").is_none(), "{v2}");
    }

    #[test]
    fn entries_are_sorted_apply_first() {
        let mut obj = json!({"metadata": {}});
        let e = |m: &str, op: &str, t: &str| Entry {
            manager: m.into(),
            operation: op.into(),
            api_version: "v1".into(),
            time: Some(t.into()),
            subresource: String::new(),
            set: {
                let mut s = FieldSet::new();
                s.insert(&[PathElement::Field("x".into())]);
                s
            },
        };
        store(
            &mut obj,
            vec![
                e("z", "Update", T1),
                e("b", "Apply", T2),
                e("a", "Apply", T2),
            ],
        );
        let names: Vec<_> = decode(&obj)
            .unwrap()
            .into_iter()
            .map(|e| e.manager)
            .collect();
        assert_eq!(names, vec!["a", "b", "z"]);
    }

    #[test]
    fn duplicate_identities_collapse_to_the_last() {
        let entry = |manager: &str, op: &str, v: &str, field: &str| {
            json!({"manager": manager, "operation": op, "apiVersion": v,
                   "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {format!("f:{field}"): {}}}})
        };
        let obj = json!({"metadata": {"managedFields": [
            entry("m", "Apply", "v1", "a"),
            entry("m", "Apply", "v2", "b"),
            entry("m", "Update", "v1", "c"),
            entry("m", "Update", "v2", "d"),
            entry("m", "Update", "v1", "e"),
        ]}});
        let got = decode(&obj).unwrap();
        let applies: Vec<_> = got.iter().filter(|e| e.operation == "Apply").collect();
        assert_eq!(applies.len(), 1);
        assert_eq!(applies[0].api_version, "v2");
        assert_eq!(got.len(), 3, "{got:?}");
        let bad = json!({"metadata": {"managedFields": [entry("m", "Delete", "v1", "a")]}});
        assert!(decode(&bad).is_err());
    }

    #[test]
    fn garbage_managed_fields_are_rejected_by_decode() {
        for bad in [
            json!("x"),
            json!([1]),
            json!([{"fieldsType": "FieldsV2"}]),
            json!([{"fieldsV1": {"q:": {}}}]),
        ] {
            assert!(decode(&json!({"metadata": {"managedFields": bad}})).is_err());
        }
    }
}
