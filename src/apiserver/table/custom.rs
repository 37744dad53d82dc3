//! Custom resources: tables from a CRD version's `additionalPrinterColumns`.
//!
//! Copies apiextensions-apiserver's `tableconvertor` and its
//! `serveDefaultColumnsIfEmpty`: NAME first, then one column per printer
//! column, or a single `Age` (`date`, `.metadata.creationTimestamp`) when
//! the CRD declares none. Only the *first* value a path selects is shown.
//!
//! Cell values follow upstream exactly:
//! - `string` columns print the value as client-go JSONPath does: strings
//!   raw, numbers and booleans with Go's `%v`, objects and lists as compact
//!   Go-style JSON (sorted keys, HTML-escaped), JSON `null` as `<no value>`;
//! - `integer` truncates floats, `number` widens integers, `boolean` needs a
//!   bool, `date` turns an RFC 3339 string into an age (`<invalid>` if it
//!   does not parse, `<unknown>` for the zero time);
//! - anything missing, mistyped or failing to evaluate is JSON `null`,
//!   which `kubectl get` shows as `<none>`.
//!
//! Invariants: a column whose `jsonPath` fails to parse ends the column
//! list there (upstream's `New` returns the convertor built so far), and
//! cells always line up with the columns.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::column::{self, ColumnDefinition};
use super::jsonpath::JsonPath;
use super::{age, object};

/// One `additionalPrinterColumns` entry of a CRD version; deserialises
/// straight from the CRD JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrinterColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub format: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub priority: i32,
    pub json_path: String,
}

/// The column a CRD without printer columns is served with.
fn default_columns() -> Vec<PrinterColumn> {
    vec![PrinterColumn {
        name: "Age".to_string(),
        type_: "date".to_string(),
        format: String::new(),
        description: column::CREATION_DESCRIPTION.to_string(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".to_string(),
    }]
}

/// Compiled printer columns: definitions paired with parsed paths.
fn compile(defs: &[PrinterColumn]) -> Vec<(ColumnDefinition, JsonPath)> {
    let defaults;
    let defs = if defs.is_empty() {
        defaults = default_columns();
        &defaults[..]
    } else {
        defs
    };
    defs.iter()
        .map_while(|def| {
            let path = JsonPath::parse(&def.json_path).ok()?;
            let description = if def.description.is_empty() {
                format!(
                    "Custom resource definition column (in JSONPath format): {}",
                    def.json_path
                )
            } else {
                def.description.clone()
            };
            let mut col = ColumnDefinition::new(&def.name, &def.type_, &description);
            col.format = def.format.clone();
            col.priority = def.priority;
            Some((col, path))
        })
        .collect()
}

/// Column definitions for a custom resource (NAME first).
pub fn custom_columns(defs: &[PrinterColumn]) -> Vec<ColumnDefinition> {
    std::iter::once(column::name())
        .chain(compile(defs).into_iter().map(|(col, _)| col))
        .collect()
}

/// One row of a custom resource table, aligned with [`custom_columns`].
pub fn custom_row(defs: &[PrinterColumn], obj: &Value, now: Timestamp) -> Vec<Value> {
    std::iter::once(Value::from(object::name(obj)))
        .chain(
            compile(defs)
                .iter()
                .map(|(col, path)| match path.first(obj) {
                    Some(value) => cell(&col.type_, value, now),
                    None => Value::Null,
                }),
        )
        .collect()
}

/// `cellForJSONValue`, plus the `string` branch that prints via JSONPath.
fn cell(type_: &str, value: &Value, now: Timestamp) -> Value {
    if type_ == "string" {
        return Value::from(print_value(value));
    }
    if value.is_null() {
        return Value::Null;
    }
    match type_ {
        "integer" => match value {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .map_or(Value::Null, Value::from),
            _ => Value::Null,
        },
        "number" => match value {
            Value::Number(n) => number_cell(n),
            _ => Value::Null,
        },
        "boolean" => match value {
            Value::Bool(b) => Value::Bool(*b),
            _ => Value::Null,
        },
        "date" => match value {
            Value::String(s) => match age::parse_query_parameter(s) {
                Ok(ts) => Value::from(age::since(ts, now)),
                Err(_) => Value::from(age::INVALID),
            },
            _ => Value::Null,
        },
        _ => Value::Null,
    }
}

/// A `float64` cell; integral values serialise without a fraction, as Go's
/// encoding/json writes them.
fn number_cell(n: &serde_json::Number) -> Value {
    if let Some(i) = n.as_i64() {
        return Value::from(i);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => Value::from(f as i64),
        Some(f) => Value::from(f),
        None => Value::Null,
    }
}

/// client-go `JSONPath.PrintResults` for one value.
fn print_value(value: &Value) -> String {
    match value {
        // An explicit null is an invalid reflect.Value to the template code.
        Value::Null => "<no value>".to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => go_float(n.as_f64().unwrap_or(0.0), FloatStyle::Print),
        },
        Value::Array(_) | Value::Object(_) => {
            let mut out = String::new();
            write_go_json(value, &mut out);
            out
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum FloatStyle {
    /// `fmt.Sprint`: `%g` with exponent outside [1e-4, 1e6).
    Print,
    /// `encoding/json`: exponent outside [1e-6, 1e21), `e-7` not `e-07`.
    Json,
}

/// Formats a float the way Go does, from Rust's shortest round-trip digits.
fn go_float(f: f64, style: FloatStyle) -> String {
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    // `{:e}` gives the shortest round-trip digits, e.g. "-1.2345e-7".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if f < 0.0 { "-" } else { "" };
    let exponential = match style {
        FloatStyle::Print => !(-4..6).contains(&exp),
        FloatStyle::Json => f.abs() < 1e-6 || f.abs() >= 1e21,
    };
    if exponential {
        let mut out = format!("{sign}{}", &digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let exp_sign = if exp < 0 { '-' } else { '+' };
        match style {
            FloatStyle::Print => out.push_str(&format!("e{exp_sign}{:02}", exp.abs())),
            FloatStyle::Json => out.push_str(&format!("e{exp_sign}{}", exp.abs())),
        }
        return out;
    }
    let point = exp + 1; // digits before the decimal point
    if point <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-point) as usize))
    } else if (point as usize) >= digits.len() {
        format!(
            "{sign}{digits}{}",
            "0".repeat(point as usize - digits.len())
        )
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{sign}{int}.{frac}")
    }
}

/// `json.Marshal` of an unstructured value: sorted keys, HTML-safe escapes.
fn write_go_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_i64() {
            Some(i) => out.push_str(&i.to_string()),
            None => out.push_str(&go_float(n.as_f64().unwrap_or(0.0), FloatStyle::Json)),
        },
        Value::String(s) => write_go_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_string(k, out);
                out.push(':');
                write_go_json(v, out);
            }
            out.push('}');
        }
    }
}

fn write_go_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    fn columns_from_crd() -> Vec<PrinterColumn> {
        serde_json::from_value(json!([
            {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Version", "type": "string", "jsonPath": ".spec.version", "priority": 1,
             "description": "Engine version"},
            {"name": "Load", "type": "number", "jsonPath": ".status.load"},
            {"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused"},
            {"name": "Last Backup", "type": "date", "jsonPath": ".status.lastBackup"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
        ]))
        .unwrap()
    }

    fn database() -> Value {
        json!({
            "apiVersion": "db.example.com/v1", "kind": "Database",
            "metadata": {"name": "orders", "creationTimestamp": "2024-04-29T12:00:00Z"},
            "spec": {"replicas": 3.0, "version": "16.2", "paused": false},
            "status": {"load": 2, "lastBackup": "2024-05-01T11:30:00Z",
                       "conditions": [{"type": "Ready", "status": "True"}]}
        })
    }

    #[test]
    fn cr_with_printer_columns() {
        let defs = columns_from_crd();
        let cols = custom_columns(&defs);
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Replicas",
                "Version",
                "Load",
                "Paused",
                "Last Backup",
                "Age"
            ]
        );
        assert_eq!(cols[0].format, "name");
        assert_eq!(cols[3].priority, 1);
        assert_eq!(cols[3].description, "Engine version");
        assert_eq!(
            cols[1].description,
            "Custom resource definition column (in JSONPath format): .status.conditions[?(@.type==\"Ready\")].status"
        );
        assert_eq!(
            custom_row(&defs, &database(), now()),
            vec![
                json!("orders"),
                json!("True"),
                json!(3),
                json!("16.2"),
                json!(2),
                json!(false),
                json!("30m"),
                json!("2d"),
            ]
        );
    }

    #[test]
    fn missing_and_mistyped_values_are_null() {
        let defs = columns_from_crd();
        let row = custom_row(
            &defs,
            &json!({"metadata": {"name": "x"},
            "spec": {"replicas": "three", "paused": "no"},
            "status": {"lastBackup": "last tuesday", "load": "high"}}),
            now(),
        );
        assert_eq!(
            row,
            vec![
                json!("x"),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                json!("<invalid>"),
                Value::Null,
            ]
        );
    }

    #[test]
    fn string_columns_print_like_client_go() {
        let col = |path: &str| PrinterColumn {
            name: "C".into(),
            type_: "string".into(),
            json_path: path.into(),
            ..Default::default()
        };
        let obj = json!({"metadata": {"name": "o"}, "spec": {
            "n": 42, "f": 0.5, "big": 1234567.0, "tiny": 0.00001, "b": true, "nil": null,
            "list": ["a", "b"], "map": {"z": 1, "a": "<x>", "f": 1.5e-7},
            "items": [{"name": "first"}, {"name": "second"}]}});
        let cases = [
            (".spec.n", json!("42")),
            (".spec.f", json!("0.5")),
            (".spec.big", json!("1.234567e+06")),
            (".spec.tiny", json!("1e-05")),
            (".spec.b", json!("true")),
            (".spec.nil", json!("<no value>")),
            (".spec.list", json!("[\"a\",\"b\"]")),
            (
                ".spec.map",
                json!("{\"a\":\"\\u003cx\\u003e\",\"f\":1.5e-7,\"z\":1}"),
            ),
            (".spec.items[*].name", json!("first")),
            (".spec.absent", Value::Null),
        ];
        for (path, want) in cases {
            assert_eq!(custom_row(&[col(path)], &obj, now())[1], want, "{path}");
        }
    }

    #[test]
    fn no_printer_columns_means_name_and_age() {
        let cols = custom_columns(&[]);
        assert_eq!(cols.len(), 2);
        assert_eq!(
            (cols[1].name.as_str(), cols[1].type_.as_str()),
            ("Age", "date")
        );
        assert_eq!(cols[1].description, column::CREATION_DESCRIPTION);
        assert_eq!(
            custom_row(&[], &database(), now()),
            vec![json!("orders"), json!("2d")]
        );
        // No creationTimestamp at all: the path finds nothing, so the cell is null.
        assert_eq!(
            custom_row(&[], &json!({}), now()),
            vec![json!(""), Value::Null]
        );
        let zero = json!({"metadata": {"creationTimestamp": "0001-01-01T00:00:00Z"}});
        assert_eq!(custom_row(&[], &zero, now())[1], json!("<unknown>"));
    }

    #[test]
    fn invalid_path_truncates_the_column_list() {
        let mut defs = columns_from_crd();
        defs[2].json_path = ".spec[".to_string();
        let cols = custom_columns(&defs);
        assert_eq!(cols.len(), 3);
        assert_eq!(custom_row(&defs, &database(), now()).len(), 3);
    }

    #[test]
    fn go_float_formats() {
        let p = |f| go_float(f, FloatStyle::Print);
        assert_eq!(p(1.5), "1.5");
        assert_eq!(p(100000.0), "100000");
        assert_eq!(p(1000000.0), "1e+06");
        assert_eq!(p(0.0001), "0.0001");
        assert_eq!(p(-2.5e-7), "-2.5e-07");
        let j = |f| go_float(f, FloatStyle::Json);
        assert_eq!(j(1000000.0), "1000000");
        assert_eq!(j(1e21), "1e+21");
        assert_eq!(j(0.000001), "0.000001");
        assert_eq!(j(1.5e-7), "1.5e-7");
    }
}
