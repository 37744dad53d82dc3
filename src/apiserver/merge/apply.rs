//! Server-side apply (`application/apply-patch+yaml`): merging an applied
//! configuration into the live object and tracking who owns which field.
//!
//! Follows structured-merge-diff's `Updater.Apply` as driven by
//! `apimachinery/pkg/util/managedfields`:
//! 1. the configuration is merged into the live object using the type graph
//!    (structs and granular maps key by key, list-maps item by item, sets by
//!    union, everything else replaced);
//! 2. the applier's owned set becomes exactly the fields of its
//!    configuration;
//! 3. fields the applier owned before and no longer sets are removed from
//!    the object, unless some manager (the applier included) still owns them
//!    — list-map items are kept with only the still-owned fields;
//! 4. every field the result adds or changes relative to the live object
//!    that another manager owns is a conflict; without `force` the apply
//!    fails, with `force` those fields leave their old owners;
//! 5. fields the result removes leave every owner, and owners left with
//!    nothing are dropped.
//!
//! An existing object without managed fields is first attributed to
//! `before-first-apply` (upstream's `skipNonAppliedManager`), so applying
//! over it reports conflicts instead of silently taking over.
//!
//! `status` is dropped from the configuration and never owned: this is the
//! main resource, and status belongs to its subresource.  Kinds outside the
//! type graph are merged schemalessly (lists atomic).

use std::collections::{HashMap, HashSet};

use serde_json::{json, Map, Value};

use super::compare::{child_type, compare, field_set, item_element, shape, Shape};
use super::fieldpath::{canonical, path_string, FieldSet, PathElement};
use super::managed_fields::{decode, store, strip, type_of, without_managed_fields, Entry};
use super::MAX_OBJECT_DEPTH;
use super::{split_api_version, too_deep, ApplyError, Conflict, MAX_DEPTH};

const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// Applies `applied` (the request body, already decoded from YAML or JSON)
/// as `manager` to `live` (`None` when the object does not exist yet) and
/// returns the new object with `metadata.managedFields` updated.
///
/// `group`/`kind` are those of the request URL; `now` is the RFC 3339 time
/// recorded in the applier's entry.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    group: &str,
    kind: &str,
    now: &str,
) -> Result<Value, ApplyError> {
    if too_deep(applied, MAX_DEPTH) || live.is_some_and(|l| too_deep(l, MAX_OBJECT_DEPTH)) {
        return Err(ApplyError::TooDeep(MAX_DEPTH));
    }
    let config = validate_config(applied, group, kind)?;
    let api_version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let ty = type_of(&config);

    let live_obj = live
        .map(without_managed_fields)
        .unwrap_or_else(|| json!({}));
    // Undecodable managed fields are rebuilt rather than failing every
    // apply to the object forever.
    let mut entries = live
        .map(|l| decode(l).unwrap_or_default())
        .unwrap_or_default();
    if let (Some(l), true) = (live, entries.is_empty()) {
        let set = strip(field_set(&live_obj, ty));
        if !set.is_empty() {
            entries.push(Entry {
                manager: BEFORE_FIRST_APPLY.into(),
                operation: "Update".into(),
                api_version: l
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or(&api_version)
                    .to_string(),
                time: None,
                subresource: String::new(),
                set,
            });
        }
    }

    let applier = entries
        .iter()
        .position(|e| e.same_owner(manager, "Apply", "", ""));
    let last_set = applier.map(|i| entries[i].set.clone()).unwrap_or_default();
    let applied_set = strip(field_set(&config, ty));

    let mut merged = merge(&live_obj, &config, ty);
    let mut owned = applied_set.clone();
    for (i, e) in entries.iter().enumerate() {
        if Some(i) != applier {
            owned.union(&e.set);
        }
    }
    prune(&mut merged, &last_set, &owned, ty);

    let cmp = compare(&live_obj, &merged, ty);
    let changed = cmp.changed();
    let mut conflicts = Vec::new();
    for (i, e) in entries.iter_mut().enumerate() {
        if Some(i) == applier {
            continue;
        }
        let clash = e.set.intersection(&changed);
        if clash.is_empty() {
            continue;
        }
        conflicts.extend(clash.paths().iter().map(|p| Conflict {
            manager: e.manager.clone(),
            operation: e.operation.clone(),
            api_version: e.api_version.clone(),
            subresource: e.subresource.clone(),
            field_path: path_string(p),
        }));
        e.set = e.set.difference(&clash);
    }
    if !conflicts.is_empty() && !force {
        return Err(ApplyError::Conflicts(conflicts));
    }

    let applier_entry = Entry {
        manager: manager.to_string(),
        operation: "Apply".into(),
        api_version,
        time: Some(now.to_string()),
        subresource: String::new(),
        set: applied_set,
    };
    match applier {
        Some(i) => entries[i] = applier_entry,
        None => entries.push(applier_entry),
    }
    for e in &mut entries {
        e.set = e.set.difference(&cmp.removed);
    }
    store(&mut merged, entries);
    Ok(merged)
}

fn invalid(msg: impl Into<String>) -> ApplyError {
    ApplyError::InvalidConfig(msg.into())
}

/// Checks what upstream's apply patcher checks and drops `status`.
fn validate_config(applied: &Value, group: &str, kind: &str) -> Result<Value, ApplyError> {
    let Value::Object(obj) = applied else {
        return Err(invalid("the configuration must be an object"));
    };
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("apiVersion must be set"))?;
    let applied_kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("kind must be set"))?;
    if applied_kind != kind || split_api_version(api_version).0 != group {
        return Err(invalid(format!(
            "the configuration is a {applied_kind} of {api_version}, but the request is for {kind} in group {group:?}"
        )));
    }
    if let Some(mf) = obj.get("metadata").and_then(|m| m.get("managedFields")) {
        if !mf.is_null() {
            return Err(invalid(
                "metadata.managedFields must not be set in an apply configuration",
            ));
        }
    }
    let mut config = obj.clone();
    config.remove("status");
    if let Some(Value::Object(meta)) = config.get_mut("metadata") {
        meta.remove("managedFields");
    }
    Ok(Value::Object(config))
}

/// `live.Merge(config)`: the configuration's values win; lists follow their
/// type (see the module docs).  `null` in the configuration removes the
/// field.
fn merge(live: &Value, config: &Value, ty: Option<super::schema::TypeRef>) -> Value {
    let sh = shape(ty, config);
    if shape(ty, live) != sh {
        return config.clone();
    }
    match (sh, live, config) {
        (Shape::Object, Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (k, cv) in c {
                if cv.is_null() {
                    out.remove(k);
                    continue;
                }
                let v = match l.get(k) {
                    Some(lv) => merge(lv, cv, child_type(ty, k)),
                    None => cv.clone(),
                };
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        (Shape::ListSet, Value::Array(l), Value::Array(c)) => {
            let mut out = l.clone();
            let mut seen: HashSet<String> = l.iter().map(canonical).collect();
            for item in c {
                if seen.insert(canonical(item)) {
                    out.push(item.clone());
                }
            }
            Value::Array(out)
        }
        (Shape::ListMap, Value::Array(l), Value::Array(c)) => {
            // Items are matched through a hash index of their keys: linear, not quadratic.
            let elem = ty.and_then(|t| t.element());
            let ids: Vec<PathElement> = c.iter().map(|i| item_element(ty, sh, i)).collect();
            let mut first: HashMap<&PathElement, usize> = HashMap::with_capacity(ids.len());
            for (p, id) in ids.iter().enumerate() {
                first.entry(id).or_insert(p);
            }
            let mut out = Vec::with_capacity(l.len() + c.len());
            let mut seen = HashSet::with_capacity(l.len() + c.len());
            for li in l {
                let id = item_element(ty, sh, li);
                match first.get(&id) {
                    Some(&p) => out.push(merge(li, &c[p], elem)),
                    None => out.push(li.clone()),
                }
                seen.insert(id);
            }
            for (ci, id) in c.iter().zip(&ids) {
                if !seen.contains(id) {
                    out.push(ci.clone());
                    seen.insert(id.clone());
                }
            }
            Value::Array(out)
        }
        _ => config.clone(),
    }
}

/// Removes from `value` what the applier owned before (`last`) and nobody
/// owns now (`owned`).
fn prune(value: &mut Value, last: &FieldSet, owned: &FieldSet, ty: Option<super::schema::TypeRef>) {
    let empty = FieldSet::new();
    let sh = shape(ty, value);
    match value {
        Value::Object(map) if sh == Shape::Object => {
            for (e, l) in last.children() {
                let PathElement::Field(name) = e else {
                    continue;
                };
                let o = owned.child(e).unwrap_or(&empty);
                if l.is_member() && o.is_empty() {
                    map.remove(name);
                } else if let Some(child) = map.get_mut(name) {
                    let was_empty = is_empty_object(child);
                    prune(child, l, o, child_type(ty, name));
                    if !was_empty && is_empty_object(child) {
                        map.remove(name);
                    }
                }
            }
        }
        Value::Array(items) if sh == Shape::ListMap || sh == Shape::ListSet => {
            let elem = ty.and_then(|t| t.element());
            let mut keep = Vec::with_capacity(items.len());
            for mut item in std::mem::take(items) {
                let id = item_element(ty, sh, &item);
                if let Some(l) = last.child(&id) {
                    let o = owned.child(&id).unwrap_or(&empty);
                    if l.is_member() && o.is_empty() {
                        continue;
                    }
                    if let Value::Object(fields) = &mut item {
                        prune_item(fields, l, o, elem);
                    }
                }
                keep.push(item);
            }
            *items = keep;
        }
        _ => {}
    }
}

fn prune_item(
    fields: &mut Map<String, Value>,
    last: &FieldSet,
    owned: &FieldSet,
    elem: Option<super::schema::TypeRef>,
) {
    let mut wrapper = Value::Object(std::mem::take(fields));
    // An item's fields are walked like an object of the element type; the
    // element type is a struct, or untyped.
    prune(&mut wrapper, last, owned, elem);
    if let Value::Object(m) = wrapper {
        *fields = m;
    }
}

fn is_empty_object(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "2024-01-01T00:00:00Z";
    const T2: &str = "2024-01-02T00:00:00Z";

    fn cfg(replicas: Option<i64>, labels: Value, containers: Value) -> Value {
        let mut spec = json!({
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}}
        });
        if let Some(r) = replicas {
            spec["replicas"] = json!(r);
        }
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "labels": labels}, "spec": spec})
    }

    fn apply_ok(live: Option<&Value>, config: &Value, manager: &str, force: bool) -> Value {
        apply(live, config, manager, force, "apps", "Deployment", T1)
            .unwrap_or_else(|e| panic!("apply failed: {e}"))
    }

    fn entry<'a>(obj: &'a Value, manager: &str) -> Option<&'a Value> {
        obj["metadata"]["managedFields"]
            .as_array()?
            .iter()
            .find(|e| e["manager"] == manager)
    }

    #[test]
    fn create_records_the_applier() {
        let config = cfg(
            Some(2),
            json!({"app": "web"}),
            json!([{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]),
        );
        let out = apply_ok(None, &config, "kubectl", false);
        assert_eq!(out["spec"]["replicas"], 2);
        let mf = out["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf.len(), 1);
        assert_eq!(mf[0]["manager"], "kubectl");
        assert_eq!(mf[0]["operation"], "Apply");
        assert_eq!(mf[0]["apiVersion"], "apps/v1");
        assert_eq!(mf[0]["time"], T1);
        assert_eq!(mf[0]["fieldsType"], "FieldsV1");
        assert_eq!(
            mf[0]["fieldsV1"],
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                            ".": {}, "f:image": {}, "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                        }}}
                    }
                }
            })
        );
    }

    #[test]
    fn reapply_removes_fields_dropped_from_the_config() {
        let v1 = cfg(
            Some(2),
            json!({"app": "web", "tier": "fe"}),
            json!([{"name": "web", "image": "nginx", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                   {"name": "sidecar", "image": "envoy"}]),
        );
        let live = apply_ok(None, &v1, "kubectl", false);
        let v2 = cfg(
            None,
            json!({"app": "web"}),
            json!([{"name": "web", "image": "nginx:2", "env": [{"name": "A", "value": "1"}]}]),
        );
        let out = apply(Some(&live), &v2, "kubectl", false, "apps", "Deployment", T2).unwrap();
        assert!(out["spec"].get("replicas").is_none(), "{out}");
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx:2", "env": [{"name": "A", "value": "1"}]}])
        );
        assert_eq!(entry(&out, "kubectl").unwrap()["time"], T2);
    }

    #[test]
    fn fields_shared_with_another_manager_survive_removal() {
        let a = cfg(
            None,
            json!({"app": "web", "shared": "x"}),
            json!([{"name": "web", "image": "nginx"}]),
        );
        let live = apply_ok(None, &a, "alice", false);
        // bob applies the same label value: shared ownership, no conflict
        let b = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": "web", "labels": {"shared": "x"}}});
        let live = apply_ok(Some(&live), &b, "bob", false);
        // alice drops the label: bob still owns it, so it stays
        let a2 = cfg(
            None,
            json!({"app": "web"}),
            json!([{"name": "web", "image": "nginx"}]),
        );
        let out = apply_ok(Some(&live), &a2, "alice", false);
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "shared": "x"})
        );
        // bob's config does not set containers: alice still owns them all
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx"
        );
    }

    #[test]
    fn dropped_item_keeps_fields_other_managers_own() {
        let a = cfg(
            None,
            json!({}),
            json!([{"name": "web", "image": "nginx"}, {"name": "side", "image": "envoy"}]),
        );
        let live = apply_ok(None, &a, "alice", false);
        // bob sets resources on the sidecar (a field alice never set)
        let b = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "side", "resources": {"limits": {"cpu": "1"}}}]}}}});
        let live = apply_ok(Some(&live), &b, "bob", false);
        // a controller-defaulted field nobody applied
        let mut live = live;
        live["spec"]["template"]["spec"]["containers"][1]["terminationMessagePath"] =
            json!("/dev/termination-log");
        // alice drops the sidecar: its image goes, bob's resources and the
        // item (with its key) stay
        let a2 = cfg(None, json!({}), json!([{"name": "web", "image": "nginx"}]));
        let out = apply_ok(Some(&live), &a2, "alice", false);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx"},
                   {"name": "side", "resources": {"limits": {"cpu": "1"}},
                    "terminationMessagePath": "/dev/termination-log"}])
        );
    }

    /// Server-side apply over 20,000 list-map items (and a 20,000-item set) is linear.
    #[test]
    fn huge_lists_apply_in_linear_time() {
        let list = |image: &str| -> Value {
            (0..20_000)
                .map(|i| json!({"name": format!("c{i}"), "image": image}))
                .collect()
        };
        let mut live = apply_ok(None, &cfg(Some(1), json!({}), list("a")), "alice", false);
        live["metadata"]["finalizers"] = (0..20_000).map(|i| format!("f{i}")).collect();
        let mut config = cfg(Some(1), json!({}), list("b"));
        config["metadata"]["finalizers"] = (0..20_000).rev().map(|i| format!("f{i}")).collect();
        let started = std::time::Instant::now();
        let out = apply(Some(&live), &config, "bob", true, "apps", "Deployment", T2).unwrap();
        let took = started.elapsed();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][19_999]["image"],
            "b"
        );
        assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn applying_the_same_config_twice_is_stable() {
        let a = cfg(
            Some(2),
            json!({"app": "web"}),
            json!([{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]),
        );
        let once = apply_ok(None, &a, "kubectl", false);
        let twice = apply_ok(Some(&once), &a, "kubectl", false);
        assert_eq!(once, twice);
    }

    #[test]
    fn conflicts_and_force() {
        let a = cfg(
            Some(1),
            json!({"app": "web"}),
            json!([{"name": "web", "image": "nginx"}]),
        );
        let live = apply_ok(None, &a, "alice", false);
        let b = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"replicas": 5, "template": {"spec": {"containers": [{"name": "web", "image": "httpd"}]}}}});
        let err = apply(Some(&live), &b, "bob", false, "apps", "Deployment", T2).unwrap_err();
        let ApplyError::Conflicts(conflicts) = &err else {
            panic!("{err:?}")
        };
        let paths: Vec<&str> = conflicts.iter().map(|c| c.field_path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                ".spec.replicas",
                ".spec.template.spec.containers[name=\"web\"].image"
            ]
        );
        assert!(conflicts
            .iter()
            .all(|c| c.manager == "alice" && c.operation == "Apply"));
        assert_eq!(
            err.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"alice\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"web\"].image"
        );

        let out = apply(Some(&live), &b, "bob", true, "apps", "Deployment", T2).unwrap();
        assert_eq!(out["spec"]["replicas"], 5);
        let alice = FieldSet::from_fields_v1(&entry(&out, "alice").unwrap()["fieldsV1"]).unwrap();
        let bob = FieldSet::from_fields_v1(&entry(&out, "bob").unwrap()["fieldsV1"]).unwrap();
        let replicas = [
            PathElement::Field("spec".into()),
            PathElement::Field("replicas".into()),
        ];
        assert!(!alice.contains(&replicas) && bob.contains(&replicas));

        // now alice drops replicas from her config: bob owns it, it stays
        let a2 = cfg(
            None,
            json!({"app": "web"}),
            json!([{"name": "web", "image": "httpd"}]),
        );
        let out2 = apply(Some(&out), &a2, "alice", false, "apps", "Deployment", T2).unwrap();
        assert_eq!(out2["spec"]["replicas"], 5);
    }

    #[test]
    fn conflict_with_an_update_manager_names_its_version() {
        // created by client-side kubectl apply, then applied server-side
        let mut live = cfg(
            Some(1),
            json!({"app": "web"}),
            json!([{"name": "web", "image": "nginx"}]),
        );
        super::super::record_update(
            None,
            &mut live,
            "kubectl-client-side-apply",
            "Update",
            "apps/v1",
            T1,
        );
        let b = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}});
        let err = apply(Some(&live), &b, "kubectl", false, "apps", "Deployment", T2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
        // the same value is not a conflict
        let same = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 1}});
        let out = apply(
            Some(&live),
            &same,
            "kubectl",
            false,
            "apps",
            "Deployment",
            T2,
        )
        .unwrap();
        assert_eq!(
            out["metadata"]["managedFields"].as_array().unwrap().len(),
            2
        );
    }

    #[test]
    fn objects_without_managed_fields_belong_to_before_first_apply() {
        let live = cfg(Some(1), json!({"app": "web"}), json!([]));
        let b = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}});
        let err = apply(Some(&live), &b, "kubectl", false, "apps", "Deployment", T2).unwrap_err();
        let ApplyError::Conflicts(c) = err else {
            panic!()
        };
        assert_eq!(c[0].manager, "before-first-apply");
    }

    #[test]
    fn status_and_identity_fields_are_not_owned() {
        let mut config = cfg(Some(1), json!({}), json!([]));
        config["status"] = json!({"replicas": 9});
        config["metadata"]["namespace"] = json!("default");
        let out = apply_ok(None, &config, "kubectl", false);
        assert!(out.get("status").is_none());
        let fields = &entry(&out, "kubectl").unwrap()["fieldsV1"];
        assert!(fields.get("f:status").is_none());
        assert!(fields.get("f:apiVersion").is_none() && fields.get("f:kind").is_none());
        assert!(fields["f:metadata"].get("f:name").is_none());
        assert!(fields["f:metadata"].get("f:namespace").is_none());
    }

    #[test]
    fn sets_union_and_atomic_lists_replace() {
        let pod = |finalizers: Value, args: Value| {
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "finalizers": finalizers},
            "spec": {"containers": [{"name": "c", "image": "i", "args": args}]}})
        };
        let live = apply(
            None,
            &pod(json!(["a"]), json!(["x", "y"])),
            "one",
            false,
            "",
            "Pod",
            T1,
        )
        .unwrap();
        let out = apply(
            Some(&live),
            &json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "finalizers": ["b"]}}),
            "two",
            false,
            "",
            "Pod",
            T1,
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        // "one" drops finalizer a and changes the atomic args list
        let out = apply(
            Some(&out),
            &pod(json!([]), json!(["z"])),
            "one",
            false,
            "",
            "Pod",
            T1,
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["z"]));
    }

    #[test]
    fn custom_resources_merge_schemalessly() {
        let cr = |spec: Value| json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec});
        let live = apply(
            None,
            &cr(json!({"a": 1, "list": [1, 2]})),
            "m",
            false,
            "example.com",
            "Widget",
            T1,
        )
        .unwrap();
        let fields = &live["metadata"]["managedFields"][0]["fieldsV1"];
        assert_eq!(fields["f:spec"], json!({"f:a": {}, "f:list": {}}));
        let out = apply(
            Some(&live),
            &cr(json!({"list": [3]})),
            "m",
            false,
            "example.com",
            "Widget",
            T1,
        )
        .unwrap();
        assert_eq!(out["spec"], json!({"list": [3]}));
    }

    #[test]
    fn invalid_configurations() {
        let cases = [
            json!([]),
            json!({"kind": "Deployment"}),
            json!({"apiVersion": "apps/v1"}),
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet"}),
            json!({"apiVersion": "v1", "kind": "Deployment"}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"managedFields": [{}]}}),
        ];
        for c in cases {
            let err = apply(None, &c, "m", false, "apps", "Deployment", T1).unwrap_err();
            assert!(matches!(err, ApplyError::InvalidConfig(_)), "{c}: {err:?}");
        }
        let mut deep = json!(1);
        for _ in 0..=MAX_DEPTH {
            deep = json!({"x": deep});
        }
        let c = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": deep});
        assert_eq!(
            apply(None, &c, "m", false, "apps", "Deployment", T1),
            Err(ApplyError::TooDeep(MAX_DEPTH))
        );
    }
}
