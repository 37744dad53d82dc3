//! Response shapes for reads: plain objects and lists, or `meta.k8s.io/v1` Tables when the
//! client's Accept header asks for `as=Table` (what `kubectl get` does).

use http::Response;
use serde_json::{json, Value};

use super::Ctx;
use crate::apiserver::edge::body::{json_response, Body};
use crate::apiserver::table;

/// Does the Accept header prefer a Table? kubectl lists Table first, then plain JSON.
pub fn wants_table(ctx: &Ctx) -> bool {
    ctx.header("accept").is_some_and(|a| {
        a.split(',')
            .next()
            .is_some_and(|first| first.replace(' ', "").contains("as=Table"))
    })
}

pub fn include(ctx: &Ctx) -> table::IncludeObject {
    ctx.query
        .get("includeObject")
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}

/// Renders one object as the cells of a table row.
pub type RowFn = Box<dyn Fn(&Value) -> Vec<Value> + Send + Sync>;

/// Table column definitions and a row builder for this resource (custom printer columns for
/// custom resources that declare them).
pub fn table_parts(ctx: &Ctx) -> (Vec<table::ColumnDefinition>, RowFn) {
    let now = jiff::Timestamp::now();
    if let Some(cv) =
        ctx.state
            .registry
            .custom_version(&ctx.ri.group, &ctx.ri.version, &ctx.ri.plural)
    {
        let defs: Vec<table::PrinterColumn> = cv
            .printer_columns
            .iter()
            .filter_map(|c| serde_json::from_value(c.clone()).ok())
            .collect();
        if !defs.is_empty() {
            let cols = table::custom_columns(&defs);
            return (cols, Box::new(move |o| table::custom_row(&defs, o, now)));
        }
    }
    let (group, kind) = (ctx.ri.group.clone(), ctx.ri.kind.clone());
    (
        table::columns(&group, &kind),
        Box::new(move |o| table::row(&group, &kind, o, now)),
    )
}

pub fn table_row(ctx: &Ctx, row: &dyn Fn(&Value) -> Vec<Value>, obj: &Value) -> table::TableRow {
    table::TableRow::new(row(obj), obj, include(ctx)).with_conditions(table::row_conditions(
        &ctx.ri.group,
        &ctx.ri.kind,
        obj,
    ))
}

pub fn object(ctx: &Ctx, obj: Value) -> Response<Body> {
    if wants_table(ctx) {
        let (cols, row) = table_parts(ctx);
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let rows = vec![table_row(ctx, row.as_ref(), &obj)];
        return json_response(200, &table::table(cols, rows, &rv, None, None));
    }
    json_response(200, &obj)
}

pub fn list(
    ctx: &Ctx,
    items: Vec<Value>,
    revision: u64,
    continue_token: Option<String>,
) -> Response<Body> {
    let rv = revision.to_string();
    if wants_table(ctx) {
        let (cols, row) = table_parts(ctx);
        let rows = items
            .iter()
            .map(|o| table_row(ctx, row.as_ref(), o))
            .collect();
        return json_response(
            200,
            &table::table(cols, rows, &rv, continue_token.as_deref(), None),
        );
    }
    let mut metadata = json!({"resourceVersion": rv});
    if let Some(c) = continue_token {
        metadata["continue"] = json!(c);
    }
    // Move the items in (the `json!` macro would deep-copy them), and serialise large lists
    // off the async workers so one big LIST does not stall every other request.
    let mut list = serde_json::Map::new();
    list.insert("kind".into(), json!(ctx.ri.list_kind));
    list.insert("apiVersion".into(), json!(ctx.ri.api_version()));
    list.insert("metadata".into(), metadata);
    list.insert("items".into(), Value::Array(items));
    let list = Value::Object(list);
    tokio::task::block_in_place(|| json_response(200, &list))
}
