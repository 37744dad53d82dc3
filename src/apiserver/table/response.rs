//! The `meta.k8s.io/v1` `Table` envelope and its rows.
//!
//! Copies the JSON that upstream's `metav1.Table` serialises to, and the
//! `includeObject` handling of the apiserver's `transformObject`:
//! `Metadata` (the default) turns each row's object into a
//! `PartialObjectMetadata`, `Object` keeps the whole object, `None` drops it.
//!
//! Invariants: `columnDefinitions` and `rows` are always arrays (never
//! `null`); a row's `conditions` is omitted when empty (`omitempty`), while
//! its `object` is always present and is `null` for `includeObject=None`,
//! because upstream's `runtime.RawExtension` marshals an empty extension as
//! `null` and `omitempty` does not apply to structs.

use std::str::FromStr;

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::column::ColumnDefinition;
use super::TableError;

/// The `includeObject` query parameter of a Table request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// `includeObject=None`: rows carry no object.
    None,
    /// `includeObject=Metadata` (also the default when the parameter is
    /// absent or empty): rows carry a `PartialObjectMetadata`.
    #[default]
    Metadata,
    /// `includeObject=Object`: rows carry the full object.
    Object,
}

impl FromStr for IncludeObject {
    type Err = TableError;

    /// Accepts upstream's spellings; anything else is the 400 upstream
    /// answers with (`unrecognized includeObject value: "..."`).
    fn from_str(value: &str) -> Result<Self, TableError> {
        match value {
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "None" => Ok(IncludeObject::None),
            "Object" => Ok(IncludeObject::Object),
            other => Err(TableError::UnknownIncludeObject(other.to_string())),
        }
    }
}

/// `metav1.TableRowCondition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl RowCondition {
    /// The `Completed=True` condition upstream puts on finished pods.
    pub(super) fn completed(reason: &str, message: &str) -> Self {
        RowCondition {
            type_: "Completed".to_string(),
            status: "True".to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
        }
    }
}

/// One row of a Table: its cells and the object (or metadata) it shows.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    pub cells: Vec<Value>,
    pub conditions: Vec<RowCondition>,
    /// Already shaped for `includeObject`; `Value::Null` for `None`.
    pub object: Value,
}

impl TableRow {
    /// A row for `obj`, with its object shaped as `include` asks.
    pub fn new(cells: Vec<Value>, obj: &Value, include: IncludeObject) -> Self {
        let object = match include {
            IncludeObject::None => Value::Null,
            IncludeObject::Metadata => partial_object_metadata(obj),
            IncludeObject::Object => obj.clone(),
        };
        TableRow {
            cells,
            conditions: Vec::new(),
            object,
        }
    }

    pub fn with_conditions(mut self, conditions: Vec<RowCondition>) -> Self {
        self.conditions = conditions;
        self
    }

    pub fn into_json(self) -> Value {
        let mut row = Map::new();
        row.insert("cells".to_string(), Value::Array(self.cells));
        if !self.conditions.is_empty() {
            row.insert("conditions".to_string(), json!(self.conditions));
        }
        row.insert("object".to_string(), self.object);
        Value::Object(row)
    }
}

/// `meta.AsPartialObjectMetadata`: the object's whole `metadata`, re-kinded.
pub fn partial_object_metadata(obj: &Value) -> Value {
    let metadata = obj
        .get("metadata")
        .filter(|m| m.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
    })
}

/// Assembles the `meta.k8s.io/v1` `Table` response.
///
/// `resource_version`, `continue_token` and `remaining` fill the list
/// metadata exactly as upstream copies it from the underlying list; empty
/// values are omitted like Go's `omitempty`.
pub fn table(
    columns: Vec<ColumnDefinition>,
    rows: Vec<TableRow>,
    resource_version: &str,
    continue_token: Option<&str>,
    remaining: Option<i64>,
) -> Value {
    let mut metadata = Map::new();
    if !resource_version.is_empty() {
        metadata.insert("resourceVersion".to_string(), resource_version.into());
    }
    if let Some(token) = continue_token.filter(|t| !t.is_empty()) {
        metadata.insert("continue".to_string(), token.into());
    }
    if let Some(remaining) = remaining {
        metadata.insert("remainingItemCount".to_string(), remaining.into());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows.into_iter().map(TableRow::into_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::table::column;

    fn pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                         "labels": {"app": "x"}},
            "spec": {"containers": []}})
    }

    #[test]
    fn include_object_parsing() {
        assert_eq!(
            "".parse::<IncludeObject>().unwrap(),
            IncludeObject::Metadata
        );
        assert_eq!(
            "Metadata".parse::<IncludeObject>().unwrap(),
            IncludeObject::Metadata
        );
        assert_eq!(
            "None".parse::<IncludeObject>().unwrap(),
            IncludeObject::None
        );
        assert_eq!(
            "Object".parse::<IncludeObject>().unwrap(),
            IncludeObject::Object
        );
        let err = "object".parse::<IncludeObject>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unrecognized includeObject value: \"object\""
        );
    }

    #[test]
    fn table_envelope_matches_upstream_json() {
        let rows = vec![TableRow::new(
            vec![json!("p")],
            &pod(),
            IncludeObject::Metadata,
        )];
        let t = table(vec![column::name()], rows, "42", Some("tok"), Some(3));
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            t["metadata"],
            json!({"resourceVersion": "42", "continue": "tok", "remainingItemCount": 3})
        );
        assert_eq!(
            t["columnDefinitions"][0],
            json!({"name": "Name", "type": "string", "format": "name",
                   "description": column::NAME_DESCRIPTION, "priority": 0})
        );
        assert_eq!(
            t["rows"][0],
            json!({"cells": ["p"], "object": {
                "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": pod()["metadata"].clone()}})
        );
    }

    #[test]
    fn empty_table_has_arrays_and_bare_metadata() {
        let t = table(vec![], vec![], "", None, None);
        assert_eq!(t["metadata"], json!({}));
        assert_eq!(t["rows"], json!([]));
        assert_eq!(t["columnDefinitions"], json!([]));
    }

    #[test]
    fn include_object_shapes_the_row_object() {
        let full = TableRow::new(vec![], &pod(), IncludeObject::Object);
        assert_eq!(full.object, pod());
        let none = TableRow::new(vec![], &pod(), IncludeObject::None).into_json();
        assert_eq!(none, json!({"cells": [], "object": null}));
    }

    #[test]
    fn conditions_serialise_only_when_present() {
        let row = TableRow::new(vec![], &pod(), IncludeObject::None)
            .with_conditions(vec![RowCondition::completed("Succeeded", "done")])
            .into_json();
        assert_eq!(
            row["conditions"],
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "done"}])
        );
    }
}
