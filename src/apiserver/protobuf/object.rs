//! Generic conversion of a decoded Kubernetes message into the JSON upstream's
//! encoding/json would write for the same Go struct.
//!
//! The walk reproduces Go's two steps: gogo-protobuf unmarshalling into the Go
//! struct (absent non-pointer fields become zero values, absent pointers stay
//! nil, empty repeated/map fields stay nil), then `json.Marshal` with the
//! struct tags recorded in `gosemantics.txt`:
//! - nil pointer/slice/map/[]byte: omitted with `omitempty`, else `null`;
//! - non-pointer scalar: omitted when zero and `omitempty`, else written;
//! - non-pointer struct: always written (omitempty never omits structs) unless
//!   `omitzero` and zero; `json:",inline"` structs are flattened into the parent;
//! - a pointer to a scalar is written whenever set, zero included
//!   (`replicas: 0`, `gracePeriodSeconds: 0` keep their meaning);
//! - int64 is a JSON number, []byte is padded standard base64, map keys are strings.
//!
//! Object keys are inserted in `.proto` declaration order, which is Go struct
//! order, so an order-preserving `serde_json::Map` matches upstream byte order.
//!
//! Invariant: nesting is bounded by [`super::MAX_DEPTH`]; every message level
//! (including inline ones and map/list elements) counts.

use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage,
    Value as PValue,
};
use serde_json::{Map, Number, Value};

use super::schema::{GoField, PlannedField, Schema, Shape};
use super::wellknown;
use super::{ProtobufError, MAX_DEPTH};

/// Converts messages of one schema; cheap to build, holds no state.
pub(super) struct Converter<'a> {
    pub schema: &'a Schema,
}

impl Converter<'_> {
    /// JSON for one message value at nesting `depth` (the top-level object is 1).
    pub(super) fn message(
        &self,
        msg: &DynamicMessage,
        depth: usize,
    ) -> Result<Value, ProtobufError> {
        if depth > MAX_DEPTH {
            return Err(ProtobufError::TooDeep(MAX_DEPTH));
        }
        let desc = msg.descriptor();
        match self.schema.shape(&desc)? {
            Shape::Special(special) => wellknown::to_json(self, *special, msg, depth),
            // Go `type Verbs []string`: the wrapper message is invisible in JSON.
            Shape::GoList => match msg.get_field_by_number(1).as_deref() {
                Some(PValue::List(items)) => self.list(&desc, items, depth),
                _ => Ok(Value::Array(Vec::new())),
            },
            Shape::Struct(fields) => {
                let mut object = Map::new();
                self.fill_object(msg, fields, depth, &mut object)?;
                Ok(Value::Object(object))
            }
        }
    }

    fn fill_object(
        &self,
        msg: &DynamicMessage,
        fields: &[PlannedField],
        depth: usize,
        object: &mut Map<String, Value>,
    ) -> Result<(), ProtobufError> {
        if depth > MAX_DEPTH {
            return Err(ProtobufError::TooDeep(MAX_DEPTH));
        }
        for PlannedField {
            field,
            go,
            json_name,
        } in fields
        {
            if go.inline {
                if let Kind::Message(inner) = field.kind() {
                    if msg.has_field(field) {
                        if let PValue::Message(m) = msg.get_field(field).as_ref() {
                            self.inline(m, depth + 1, object)?;
                        }
                    } else if !go.pointer {
                        self.inline(&DynamicMessage::new(inner), depth + 1, object)?;
                    }
                    continue;
                }
            }
            if let Some(value) = self.field(msg, field, go, depth)? {
                object.insert(json_name.clone(), value);
            }
        }
        Ok(())
    }

    /// Go's embedded-struct flattening: the inner struct's keys join the parent.
    fn inline(
        &self,
        msg: &DynamicMessage,
        depth: usize,
        object: &mut Map<String, Value>,
    ) -> Result<(), ProtobufError> {
        match self.schema.shape(&msg.descriptor())? {
            Shape::Struct(fields) => self.fill_object(msg, fields, depth, object),
            _ => Err(ProtobufError::Schema(format!(
                "inline field of non-struct type {}",
                msg.descriptor().full_name()
            ))),
        }
    }

    /// The JSON of one field, or `None` when Go would leave the key out.
    fn field(
        &self,
        msg: &DynamicMessage,
        field: &FieldDescriptor,
        go: &GoField,
        depth: usize,
    ) -> Result<Option<Value>, ProtobufError> {
        let nil = || Ok((!go.omitempty).then_some(Value::Null));
        if !msg.has_field(field) {
            // What Go holds for a field gogo never saw: nil for pointers,
            // slices, maps and []byte; the zero value otherwise.
            if go.pointer || field.is_list() || field.is_map() {
                return nil();
            }
            return match field.kind() {
                Kind::Message(inner) => {
                    let json = self.message(&DynamicMessage::new(inner), depth + 1)?;
                    Ok((!(go.omitzero && json.is_null())).then_some(json))
                }
                Kind::Bytes => nil(),
                _ if go.omitempty => Ok(None),
                _ => scalar(msg.get_field(field).as_ref(), field).map(Some),
            };
        }
        match msg.get_field(field).as_ref() {
            PValue::Map(entries) if entries.is_empty() => nil(),
            PValue::Map(entries) => {
                let mut keys: Vec<&MapKey> = entries.keys().collect();
                keys.sort();
                let mut object = Map::new();
                for key in keys {
                    if let Some(v) = entries.get(key) {
                        object.insert(map_key(key), self.value(field, v, depth)?);
                    }
                }
                Ok(Some(Value::Object(object)))
            }
            PValue::List(items) if items.is_empty() => nil(),
            PValue::List(items) => self.list(field.parent_message(), items, depth).map(Some),
            PValue::Message(m) => {
                let json = self.message(m, depth + 1)?;
                Ok((!(go.omitzero && !go.pointer && json.is_null())).then_some(json))
            }
            PValue::Bytes(b) => Ok((!(go.omitempty && b.is_empty())).then(|| wellknown::base64(b))),
            value if !go.pointer && go.omitempty && is_zero(value) => Ok(None),
            value => scalar(value, field).map(Some),
        }
    }

    /// Repeated elements keep their proto kind; lists are converted per element.
    fn list(
        &self,
        owner: &MessageDescriptor,
        items: &[PValue],
        depth: usize,
    ) -> Result<Value, ProtobufError> {
        items
            .iter()
            .map(|item| match item {
                PValue::Message(m) => self.message(m, depth + 1),
                PValue::Bytes(b) => Ok(wellknown::base64(b)),
                other => scalar_plain(other)
                    .ok_or_else(|| ProtobufError::invalid(owner.full_name(), "non-finite number")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array)
    }

    fn value(
        &self,
        field: &FieldDescriptor,
        value: &PValue,
        depth: usize,
    ) -> Result<Value, ProtobufError> {
        match value {
            PValue::Message(m) => self.message(m, depth + 1),
            PValue::Bytes(b) => Ok(wellknown::base64(b)),
            other => scalar(other, field),
        }
    }
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::String(s) => s.clone(),
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(v) => v.to_string(),
        MapKey::I64(v) => v.to_string(),
        MapKey::U32(v) => v.to_string(),
        MapKey::U64(v) => v.to_string(),
    }
}

fn is_zero(value: &PValue) -> bool {
    match value {
        PValue::Bool(b) => !b,
        PValue::I32(v) | PValue::EnumNumber(v) => *v == 0,
        PValue::I64(v) => *v == 0,
        PValue::U32(v) => *v == 0,
        PValue::U64(v) => *v == 0,
        PValue::F32(v) => *v == 0.0,
        PValue::F64(v) => *v == 0.0,
        PValue::String(s) => s.is_empty(),
        PValue::Bytes(b) => b.is_empty(),
        PValue::List(l) => l.is_empty(),
        PValue::Map(m) => m.is_empty(),
        PValue::Message(_) => false,
    }
}

fn scalar(value: &PValue, field: &FieldDescriptor) -> Result<Value, ProtobufError> {
    scalar_plain(value).ok_or_else(|| {
        ProtobufError::invalid(
            format!("{}.{}", field.parent_message().full_name(), field.name()),
            "unsupported value (NaN or infinity)",
        )
    })
}

/// Go's encoding of a scalar; `None` where Go's encoder errors (NaN, ±Inf).
fn scalar_plain(value: &PValue) -> Option<Value> {
    Some(match value {
        PValue::Bool(b) => Value::Bool(*b),
        PValue::I32(v) | PValue::EnumNumber(v) => Value::from(*v),
        PValue::I64(v) => Value::from(*v),
        PValue::U32(v) => Value::from(*v),
        PValue::U64(v) => Value::from(*v),
        PValue::F32(v) => float(f64::from(*v))?,
        PValue::F64(v) => float(*v)?,
        PValue::String(s) => Value::String(s.clone()),
        PValue::Bytes(b) => wellknown::base64(b),
        PValue::List(_) | PValue::Map(_) | PValue::Message(_) => Value::Null,
    })
}

/// Go prints integral floats without a fraction (`1`, not `1.0`).
fn float(v: f64) -> Option<Value> {
    if !v.is_finite() {
        return None;
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return Some(Value::from(v as i64));
    }
    Number::from_f64(v).map(Value::Number)
}
