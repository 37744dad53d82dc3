//! Encoder from our Swagger 2.0 JSON to gnostic's `openapi.v2.Document`
//! protobuf (github.com/google/gnostic-models, `openapiv2/OpenAPIv2.proto`),
//! the body kubectl requires from `/openapi/v2`.
//!
//! Only the subset of the message tree our documents use is encoded: info,
//! paths (operations, inline parameters, responses), definitions (schemas),
//! security definitions and requirements, and vendor extensions. Field
//! numbers below are those of the upstream `.proto`; they are wire format and
//! must never change. Vendor extensions, defaults, enums and examples are
//! gnostic `Any` messages whose `yaml` field holds the value; JSON text is
//! valid YAML, which is what upstream's own converter relies on too.
//!
//! proto3 semantics: zero values (empty string, false, 0) are not written.
//! Map-like JSON objects become gnostic's ordered `Named*` lists in key order.

use serde_json::{Map, Value};

use super::OpenApiError;

/// Append-only protobuf writer.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire_type));
    }

    fn bytes(&mut self, field: u32, data: &[u8]) {
        self.key(field, 2);
        self.varint(data.len() as u64);
        self.buf.extend_from_slice(data);
    }

    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    fn strings(&mut self, field: u32, list: &[&str]) {
        for s in list {
            // Repeated fields keep empty elements; only singular ones elide.
            self.bytes(field, s.as_bytes());
        }
    }

    fn boolean(&mut self, field: u32, b: bool) {
        if b {
            self.key(field, 0);
            self.varint(1);
        }
    }

    fn int64(&mut self, field: u32, v: i64) {
        if v != 0 {
            self.key(field, 0);
            // Two's complement for negatives, as protobuf's int64 does.
            self.varint(v as u64);
        }
    }

    fn double(&mut self, field: u32, v: f64) {
        if v != 0.0 {
            self.key(field, 1);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn message(&mut self, field: u32, build: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::default();
        build(&mut inner);
        self.bytes(field, &inner.buf);
    }
}

fn str_of<'a>(obj: &'a Map<String, Value>, key: &str) -> &'a str {
    obj.get(key).and_then(Value::as_str).unwrap_or("")
}

fn bool_of(obj: &Map<String, Value>, key: &str) -> bool {
    obj.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn strs_of<'a>(obj: &'a Map<String, Value>, key: &str) -> Vec<&'a str> {
    obj.get(key)
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// gnostic `Any` carrying `value` as YAML (field 2).
fn any(w: &mut Writer, field: u32, value: &Value) {
    let text = value.to_string();
    w.message(field, |a| a.string(2, &text));
}

/// `NamedAny` entries for every `x-` key of `obj`.
fn vendor_extensions(w: &mut Writer, field: u32, obj: &Map<String, Value>) {
    for (name, value) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
        w.message(field, |n| {
            n.string(1, name);
            any(n, 2, value);
        });
    }
}

/// Encode a Swagger 2.0 JSON document.
pub(super) fn encode_document(doc: &Value) -> Result<Vec<u8>, OpenApiError> {
    let obj = doc
        .as_object()
        .ok_or_else(|| OpenApiError::Protobuf("document is not an object".into()))?;
    let mut w = Writer::default();
    w.string(1, str_of(obj, "swagger"));
    if let Some(Value::Object(info)) = obj.get("info") {
        w.message(2, |i| {
            i.string(1, str_of(info, "title"));
            i.string(2, str_of(info, "version"));
            i.string(3, str_of(info, "description"));
            vendor_extensions(i, 7, info);
        });
    }
    w.string(3, str_of(obj, "host"));
    w.string(4, str_of(obj, "basePath"));
    w.strings(5, &strs_of(obj, "schemes"));
    w.strings(6, &strs_of(obj, "consumes"));
    w.strings(7, &strs_of(obj, "produces"));
    if let Some(Value::Object(paths)) = obj.get("paths") {
        w.message(8, |p| {
            vendor_extensions(p, 1, paths);
            for (name, item) in paths.iter().filter(|(k, _)| !k.starts_with("x-")) {
                let Value::Object(item) = item else { continue };
                p.message(2, |n| {
                    n.string(1, name);
                    n.message(2, |pi| path_item(pi, item));
                });
            }
        });
    }
    if let Some(Value::Object(defs)) = obj.get("definitions") {
        w.message(9, |d| {
            for (name, schema) in defs {
                d.message(1, |n| {
                    n.string(1, name);
                    n.message(2, |s| encode_schema(s, schema));
                });
            }
        });
    }
    if let Some(Value::Array(security)) = obj.get("security") {
        for requirement in security {
            let Value::Object(requirement) = requirement else {
                continue;
            };
            w.message(12, |r| security_requirement(r, requirement));
        }
    }
    if let Some(Value::Object(defs)) = obj.get("securityDefinitions") {
        w.message(13, |d| {
            for (name, def) in defs {
                let Value::Object(def) = def else { continue };
                d.message(1, |n| {
                    n.string(1, name);
                    // SecurityDefinitionsItem.api_key_security = 2; the only
                    // scheme this server publishes.
                    n.message(2, |item| {
                        item.message(2, |k| {
                            k.string(1, str_of(def, "type"));
                            k.string(2, str_of(def, "name"));
                            k.string(3, str_of(def, "in"));
                            k.string(4, str_of(def, "description"));
                            vendor_extensions(k, 5, def);
                        });
                    });
                });
            }
        });
    }
    vendor_extensions(&mut w, 16, obj);
    Ok(w.buf)
}

fn security_requirement(w: &mut Writer, requirement: &Map<String, Value>) {
    for (name, scopes) in requirement {
        let scopes: Vec<&str> = scopes
            .as_array()
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        w.message(1, |n| {
            n.string(1, name);
            n.message(2, |a| a.strings(1, &scopes));
        });
    }
}

fn path_item(w: &mut Writer, item: &Map<String, Value>) {
    for (method, field) in [
        ("get", 2),
        ("put", 3),
        ("post", 4),
        ("delete", 5),
        ("options", 6),
        ("head", 7),
        ("patch", 8),
    ] {
        if let Some(Value::Object(op)) = item.get(method) {
            w.message(field, |o| operation(o, op));
        }
    }
    if let Some(Value::Array(params)) = item.get("parameters") {
        for p in params {
            let Value::Object(p) = p else { continue };
            w.message(9, |pi| parameters_item(pi, p));
        }
    }
    vendor_extensions(w, 10, item);
}

fn operation(w: &mut Writer, op: &Map<String, Value>) {
    w.strings(1, &strs_of(op, "tags"));
    w.string(2, str_of(op, "summary"));
    w.string(3, str_of(op, "description"));
    w.string(5, str_of(op, "operationId"));
    w.strings(6, &strs_of(op, "produces"));
    w.strings(7, &strs_of(op, "consumes"));
    if let Some(Value::Array(params)) = op.get("parameters") {
        for p in params {
            let Value::Object(p) = p else { continue };
            w.message(8, |pi| parameters_item(pi, p));
        }
    }
    if let Some(Value::Object(responses)) = op.get("responses") {
        w.message(9, |r| {
            for (code, response) in responses.iter().filter(|(k, _)| !k.starts_with("x-")) {
                let Value::Object(response) = response else {
                    continue;
                };
                r.message(1, |n| {
                    n.string(1, code);
                    // ResponseValue.response = 1
                    n.message(2, |rv| {
                        rv.message(1, |resp| {
                            resp.string(1, str_of(response, "description"));
                            if let Some(schema) = response.get("schema") {
                                // SchemaItem.schema = 1
                                resp.message(2, |si| si.message(1, |s| encode_schema(s, schema)));
                            }
                            vendor_extensions(resp, 5, response);
                        });
                    });
                });
            }
            vendor_extensions(r, 2, responses);
        });
    }
    w.strings(10, &strs_of(op, "schemes"));
    w.boolean(11, bool_of(op, "deprecated"));
    vendor_extensions(w, 13, op);
}

/// `ParametersItem`: a `$ref` (JsonReference = 2) or an inline `Parameter`
/// (= 1), itself a body parameter (1) or a non-body one (2) split by `in`.
fn parameters_item(w: &mut Writer, p: &Map<String, Value>) {
    if let Some(reference) = p.get("$ref").and_then(Value::as_str) {
        w.message(2, |j| j.string(1, reference));
        return;
    }
    w.message(1, |param| {
        if str_of(p, "in") == "body" {
            param.message(1, |b| {
                b.string(1, str_of(p, "description"));
                b.string(2, str_of(p, "name"));
                b.string(3, "body");
                b.boolean(4, bool_of(p, "required"));
                if let Some(schema) = p.get("schema") {
                    b.message(5, |s| encode_schema(s, schema));
                }
                vendor_extensions(b, 6, p);
            });
            return;
        }
        param.message(2, |nb| match str_of(p, "in") {
            "path" => nb.message(4, |s| {
                s.boolean(1, bool_of(p, "required"));
                s.string(2, "path");
                s.string(3, str_of(p, "description"));
                s.string(4, str_of(p, "name"));
                s.string(5, str_of(p, "type"));
                s.string(6, str_of(p, "format"));
                s.boolean(19, bool_of(p, "uniqueItems"));
                vendor_extensions(s, 22, p);
            }),
            "header" => nb.message(1, |s| {
                s.boolean(1, bool_of(p, "required"));
                s.string(2, "header");
                s.string(3, str_of(p, "description"));
                s.string(4, str_of(p, "name"));
                s.string(5, str_of(p, "type"));
                s.string(6, str_of(p, "format"));
                s.boolean(19, bool_of(p, "uniqueItems"));
                vendor_extensions(s, 22, p);
            }),
            location => nb.message(if location == "formData" { 2 } else { 3 }, |s| {
                // Query and form-data sub-schemas share field numbers.
                s.boolean(1, bool_of(p, "required"));
                s.string(2, location);
                s.string(3, str_of(p, "description"));
                s.string(4, str_of(p, "name"));
                s.string(6, str_of(p, "type"));
                s.string(7, str_of(p, "format"));
                s.boolean(20, bool_of(p, "uniqueItems"));
                vendor_extensions(s, 23, p);
            }),
        });
    });
}

/// gnostic `Schema`.
fn encode_schema(w: &mut Writer, schema: &Value) {
    let Value::Object(s) = schema else { return };
    w.string(1, str_of(s, "$ref"));
    w.string(2, str_of(s, "format"));
    w.string(3, str_of(s, "title"));
    w.string(4, str_of(s, "description"));
    if let Some(default) = s.get("default") {
        any(w, 5, default);
    }
    let num = |k: &str| s.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let int = |k: &str| s.get(k).and_then(Value::as_i64).unwrap_or(0);
    w.double(6, num("multipleOf"));
    w.double(7, num("maximum"));
    w.boolean(8, bool_of(s, "exclusiveMaximum"));
    w.double(9, num("minimum"));
    w.boolean(10, bool_of(s, "exclusiveMinimum"));
    w.int64(11, int("maxLength"));
    w.int64(12, int("minLength"));
    w.string(13, str_of(s, "pattern"));
    w.int64(14, int("maxItems"));
    w.int64(15, int("minItems"));
    w.boolean(16, bool_of(s, "uniqueItems"));
    w.int64(17, int("maxProperties"));
    w.int64(18, int("minProperties"));
    w.strings(19, &strs_of(s, "required"));
    if let Some(Value::Array(values)) = s.get("enum") {
        for v in values {
            any(w, 20, v);
        }
    }
    match s.get("additionalProperties") {
        // AdditionalPropertiesItem: schema = 1, boolean = 2. A oneof member
        // is written even when false, since presence is the information.
        Some(Value::Bool(b)) => w.message(21, |a| {
            a.key(2, 0);
            a.varint(u64::from(*b));
        }),
        Some(ap @ Value::Object(_)) => w.message(21, |a| a.message(1, |sc| encode_schema(sc, ap))),
        _ => {}
    }
    match s.get("type") {
        Some(Value::String(t)) => w.message(22, |ti| ti.strings(1, &[t.as_str()])),
        Some(Value::Array(ts)) => {
            let ts: Vec<&str> = ts.iter().filter_map(Value::as_str).collect();
            w.message(22, |ti| ti.strings(1, &ts));
        }
        _ => {}
    }
    match s.get("items") {
        Some(items @ Value::Object(_)) => {
            w.message(23, |ii| ii.message(1, |sc| encode_schema(sc, items)))
        }
        Some(Value::Array(list)) => w.message(23, |ii| {
            for item in list {
                ii.message(1, |sc| encode_schema(sc, item));
            }
        }),
        _ => {}
    }
    if let Some(Value::Array(all_of)) = s.get("allOf") {
        for sub in all_of {
            w.message(24, |sc| encode_schema(sc, sub));
        }
    }
    if let Some(Value::Object(props)) = s.get("properties") {
        w.message(25, |p| {
            for (name, sub) in props {
                p.message(1, |n| {
                    n.string(1, name);
                    n.message(2, |sc| encode_schema(sc, sub));
                });
            }
        });
    }
    w.string(26, str_of(s, "discriminator"));
    w.boolean(27, bool_of(s, "readOnly"));
    if let Some(Value::Object(docs)) = s.get("externalDocs") {
        w.message(29, |e| {
            e.string(1, str_of(docs, "description"));
            e.string(2, str_of(docs, "url"));
        });
    }
    if let Some(example) = s.get("example") {
        any(w, 30, example);
    }
    vendor_extensions(w, 31, s);
}

#[cfg(test)]
pub(super) mod decode {
    //! A minimal protobuf reader for tests: enough to walk the encoded
    //! document by field number and check it round-trips.

    /// One decoded field; only length-delimited payloads are kept, the
    /// tests navigate by them.
    pub enum Field<'a> {
        Scalar,
        Bytes(u32, &'a [u8]),
    }

    fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *buf.get(*pos)?;
            *pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(value);
            }
        }
        None
    }

    /// All fields of one message, or `None` if it is malformed.
    pub fn fields(buf: &[u8]) -> Option<Vec<Field<'_>>> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < buf.len() {
            let key = varint(buf, &mut pos)?;
            let field = u32::try_from(key >> 3).ok()?;
            match key & 7 {
                0 => {
                    varint(buf, &mut pos)?;
                    out.push(Field::Scalar);
                }
                1 => {
                    buf.get(pos..pos + 8)?;
                    pos += 8;
                    out.push(Field::Scalar);
                }
                2 => {
                    let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                    out.push(Field::Bytes(field, buf.get(pos..pos + len)?));
                    pos += len;
                }
                _ => return None,
            }
        }
        Some(out)
    }

    /// Payloads of every length-delimited occurrence of `field`.
    pub fn messages(buf: &[u8], field: u32) -> Vec<&[u8]> {
        fields(buf)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|f| match f {
                Field::Bytes(n, b) if n == field => Some(b),
                _ => None,
            })
            .collect()
    }

    /// The first occurrence of string `field`.
    pub fn string(buf: &[u8], field: u32) -> Option<String> {
        messages(buf, field)
            .first()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}
