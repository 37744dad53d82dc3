//! End-to-end tests of [`super::decode`] on real protobuf bytes.
//!
//! Two sources of bytes:
//! - [`upstream`]: upstream's round-trip fixtures (`k8s.io/api/testdata/HEAD/*.pb`
//!   with the `*.json` Go wrote for the same fuzzed object; every field set).
//! - [`kinds`], [`errors`]: messages built here with prost-reflect from the same
//!   descriptors, the way gogo writes them (every non-pointer field present, zero
//!   or not), to pin down the zero-value rules the fuzzed fixtures never exercise,
//!   and broken input.

mod errors;
mod kinds;
mod upstream;

use prost::Message;
use prost_reflect::{DynamicMessage, Value as V};

use super::schema::Schema;
use super::MAGIC;

pub(super) const CORE: &str = "k8s.io.api.core.v1";
pub(super) const APPS: &str = "k8s.io.api.apps.v1";
pub(super) const META: &str = super::schema::META_V1;

pub(super) fn s(v: &str) -> V {
    V::String(v.into())
}

pub(super) fn map(entries: &[(&str, V)]) -> V {
    V::Map(
        entries
            .iter()
            .map(|(k, v)| (prost_reflect::MapKey::String((*k).into()), v.clone()))
            .collect(),
    )
}

/// A message `package.Name` with the given fields set (set = present on the wire).
pub(super) fn msg(package: &str, name: &str, fields: Vec<(&str, V)>) -> V {
    let desc = Schema::get()
        .expect("schema")
        .message(&format!("{package}.{name}"))
        .expect("message");
    let mut m = DynamicMessage::new(desc);
    for (field, value) in fields {
        m.try_set_field_by_name(field, value)
            .unwrap_or_else(|e| panic!("{name}.{field}: {e}"));
    }
    V::Message(m)
}

/// ObjectMeta the way gogo writes it: every non-pointer field present.
pub(super) fn gogo_meta(name: &str, namespace: &str, extra: Vec<(&str, V)>) -> V {
    let mut fields = vec![
        ("name", s(name)),
        ("generateName", s("")),
        ("namespace", s(namespace)),
        ("selfLink", s("")),
        ("uid", s("")),
        ("resourceVersion", s("")),
        ("generation", V::I64(0)),
        ("creationTimestamp", msg(META, "Time", vec![])),
    ];
    fields.extend(extra);
    msg(META, "ObjectMeta", fields)
}

/// `k8s\0` + runtime.Unknown around `object`, as upstream's serializer frames it.
pub(super) fn body(api_version: &str, kind: &str, object: &V) -> Vec<u8> {
    let V::Message(object) = object else {
        panic!("not a message")
    };
    let runtime = "k8s.io.apimachinery.pkg.runtime";
    let V::Message(unknown) = msg(
        runtime,
        "Unknown",
        vec![
            (
                "typeMeta",
                msg(
                    runtime,
                    "TypeMeta",
                    vec![("apiVersion", s(api_version)), ("kind", s(kind))],
                ),
            ),
            ("raw", V::Bytes(object.encode_to_vec().into())),
            ("contentEncoding", s("")),
            ("contentType", s("")),
        ],
    ) else {
        unreachable!()
    };
    [MAGIC, &unknown.encode_to_vec()].concat()
}

pub(super) fn quantity(q: &str) -> V {
    msg(
        "k8s.io.apimachinery.pkg.api.resource",
        "Quantity",
        vec![("string", s(q))],
    )
}
